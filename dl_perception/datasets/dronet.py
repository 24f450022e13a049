"""DroNet datasets.

Sequence folders (what `dl-perception sim record` writes, frames.csv) carry the labels in
their steering and collision columns. Project layout (docs/datasets.md):

    DATASET/labels.csv      header `image,steering,collision`; image relative to DATASET;
                            an empty or NaN field means "no label of this kind"; a missing
                            column means no label of that kind for any frame; `steering_angle`
                            is read as `steering` (the Udacity export, ../shared/data/udacity_hmb3)
    DATASET/<images>

Any dataset may be given as `DATASET@START:END`, the frames from fraction START to END of it in
its order (time order for every layout here): `udacity_hmb3@0:0.75` for training and
`udacity_hmb3@0.75:1` for validation split a sequence by contiguous time blocks.

Original DroNet layout (Loquercio et al.; Udacity steering + collision sequences):

    DATASET/<experiment>/images/*.png|jpg   frames, ordered by the number in the name (frames
                                            directly in <experiment>/ are accepted too)
    DATASET/<experiment>/sync_steering.txt  CSV, one header line, steering in the 1st column
    DATASET/<experiment>/labels.txt         or: one 0/1 collision label per frame
"""
from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".pgm")


@dataclass
class DroNetSample:
    image: str  # absolute path
    steering: float  # NaN when unlabelled
    collision: float  # 0/1, NaN when unlabelled


def _number(name: str) -> int:
    match = re.search(r"\d+", os.path.basename(name))
    return int(match.group()) if match else -1


STEERING_COLUMNS = ("steering", "steering_angle")


def _read_project_layout(root: str) -> list[DroNetSample]:
    samples = []
    path = os.path.join(root, "labels.csv")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "image" not in columns:
            raise ValueError(f"{path}: no 'image' column (have {columns})")
        steering_column = next((c for c in STEERING_COLUMNS if c in columns), None)
        for line, row in enumerate(reader, start=2):
            def value(key: str | None) -> float:
                text = (row.get(key) or "").strip() if key else ""
                try:
                    return float(text) if text else math.nan
                except ValueError:
                    raise ValueError(f"{path}:{line}: {key} is not a number: {text!r}") from None
            samples.append(DroNetSample(os.path.join(root, row["image"]), value(steering_column),
                                        value("collision")))
    return samples


def _read_experiment(folder: str) -> list[DroNetSample]:
    images_dir = os.path.join(folder, "images")
    images_dir = images_dir if os.path.isdir(images_dir) else folder
    files = sorted((f for f in os.listdir(images_dir) if f.lower().endswith(IMAGE_EXTENSIONS)),
                   key=_number)
    steering_file = os.path.join(folder, "sync_steering.txt")
    labels_file = os.path.join(folder, "labels.txt")
    if os.path.isfile(steering_file):
        values = np.loadtxt(steering_file, usecols=0, delimiter=",", skiprows=1, ndmin=1)
        kind = "steering"
    elif os.path.isfile(labels_file):
        values = np.loadtxt(labels_file, usecols=0, ndmin=1)
        kind = "collision"
    else:
        raise ValueError(f"{folder}: neither sync_steering.txt nor labels.txt")
    if len(values) < len(files):
        raise ValueError(f"{folder}: {len(files)} images but {len(values)} labels")
    return [DroNetSample(os.path.join(images_dir, name),
                         float(v) if kind == "steering" else math.nan,
                         float(v) if kind == "collision" else math.nan)
            for name, v in zip(files, values)]


def parse_dataset_spec(spec: str) -> tuple[str, float, float]:
    """`DATASET` or `DATASET@START:END` (fractions, either side may be empty) ->
    (folder, start, end)."""
    root, at, span = spec.rpartition("@")
    if not at or os.path.isdir(spec):
        return spec, 0.0, 1.0
    try:
        start_text, end_text = span.split(":")
        start = float(start_text) if start_text else 0.0
        end = float(end_text) if end_text else 1.0
    except ValueError:
        raise ValueError(f"{spec}: expected DATASET@START:END with fractions, e.g. "
                         "udacity_hmb3@0.75:1") from None
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"{spec}: need 0 <= START < END <= 1")
    return root, start, end


def fraction_slice(count: int, start: float, end: float) -> slice:
    return slice(int(round(count * start)), int(round(count * end)))


def read_dronet_dataset(spec: str) -> list[DroNetSample]:
    """Samples of any layout, `spec` being a folder or `folder@START:END`; raises ValueError when
    the folder is no dataset."""
    root, start, end = parse_dataset_spec(spec)
    samples = _read_folder(root)
    samples = samples[fraction_slice(len(samples), start, end)]
    if not samples:
        raise ValueError(f"{spec}: no frames in that part of the dataset")
    return samples


def _read_folder(root: str) -> list[DroNetSample]:
    if not os.path.isdir(root):
        raise ValueError(f"dataset folder not found: {root}")
    if os.path.isfile(os.path.join(root, "frames.csv")):  # a recorded sequence
        from .sequence import read_sequence
        samples = [DroNetSample(f.image, f.steering, f.collision) for f in read_sequence(root).frames]
    elif os.path.isfile(os.path.join(root, "labels.csv")):
        samples = _read_project_layout(root)
    else:
        candidates = [root] + sorted(os.path.join(root, d) for d in os.listdir(root))
        experiments = [d for d in candidates if os.path.isdir(d) and any(
            os.path.isfile(os.path.join(d, f)) for f in ("sync_steering.txt", "labels.txt"))]
        if not experiments:
            raise ValueError(f"{root}: no labels.csv and no experiment folders with "
                             "sync_steering.txt or labels.txt")
        samples = [s for folder in experiments for s in _read_experiment(folder)]
    if not samples:
        raise ValueError(f"{root}: the dataset is empty")
    return samples
