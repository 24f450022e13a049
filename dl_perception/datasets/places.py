"""Images with positions for place recognition (docs/place_recognition.md, "Data layouts").

Two folder layouts and the named real sets of `place_sets.py` give a `PlaceSet`:

    SEQ/...                a sequence folder (docs/datasets.md): poses from frames.csv
    DATASET/places.csv     image[,x,y[,z]][,qx,qy,qz,qw][,stamp][,place_id]  (paths relative to
                           DATASET; without x,y the places have no position: give the ground
                           truth by index, `eval place --ground-truth`)
    DATASET/meta.json      optional: {"world_seed": N} or {"place_group": "name"}
    nordland:winter:0-99   a named real set (datasets/place_sets.py)

Positions of different folders are compared only within one place group: a sequence's group is
its simulator world (`world_seed`), an image folder's its meta.json `place_group` (default
"default": all such folders share one frame).
"""
from __future__ import annotations

import csv
import json
import math
import os

import numpy as np

from .place_sets import PlaceSet, is_named_set, read_named_set
from .sequence import read_sequence

PLACES_CSV = "places.csv"


def _read_meta(root: str) -> dict:
    path = os.path.join(root, "meta.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as handle:
        return json.load(handle)


def place_group(meta: dict) -> str:
    if "world_seed" in meta:
        return f"world:{int(meta['world_seed'])}"
    return str(meta.get("place_group", "default"))


def _cell(row: dict, key: str) -> float:
    text = (row.get(key) or "").strip()
    return float(text) if text else math.nan


def read_place_folder(root: str) -> PlaceSet:
    """A sequence folder, an image folder with places.csv or a named real set; ValueError says
    what is wrong."""
    if is_named_set(root):
        return read_named_set(root)
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise ValueError(f"{root} is not a folder")
    if os.path.isfile(os.path.join(root, "frames.csv")):
        sequence = read_sequence(root)
        return PlaceSet(root, place_group(sequence.meta), [f.image for f in sequence.frames],
                        sequence.positions, sequence.quaternions,
                        np.array([f.stamp for f in sequence.frames]), sequence.meta)
    csv_path = os.path.join(root, PLACES_CSV)
    if not os.path.isfile(csv_path):
        raise ValueError(f"{root} holds neither a sequence (frames.csv) nor {PLACES_CSV} "
                         "(image[,x,y[,z]][,qx,qy,qz,qw][,stamp][,place_id])")
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{csv_path} lists no images")
    columns = set(rows[0])
    if "image" not in columns:
        raise ValueError(f"{csv_path} lacks the column 'image'")
    if ("x" in columns) != ("y" in columns):
        raise ValueError(f"{csv_path}: give both x and y, or neither (no positions)")
    meta = _read_meta(root)
    try:
        if "x" in columns:
            positions = np.array([[_cell(r, "x"), _cell(r, "y"),
                                   _cell(r, "z") if r.get("z") else 0.0] for r in rows])
        else:
            positions = np.full((len(rows), 3), np.nan)
        quaternions = np.array([[_cell(r, k) for k in ("qx", "qy", "qz", "qw")] for r in rows])
        stamps = np.array([_cell(r, "stamp") for r in rows])
        place_ids = np.array([int(r["place_id"]) for r in rows]) if "place_id" in columns \
            else None
    except ValueError as error:
        raise ValueError(f"{csv_path}: {error}") from None
    return PlaceSet(root, place_group(meta), [os.path.join(root, r["image"]) for r in rows],
                    positions, quaternions, stamps, meta, place_ids)
