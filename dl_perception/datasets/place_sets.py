"""Real place-recognition sets of the shared data (../shared/data, `paths.shared_data_dir()`),
named by a short spec wherever a place folder is accepted (`train netvlad --data`,
`eval place --database/--queries`, `place build-db --data`):

    nordland:SEASON[:FIRST-LAST]   nordland_seqslam, SEASON summer or winter; frames FIRST..LAST
                                   (0-based positions in the sorted file list, inclusive).
                                   Position x = frame number: the same in both seasons (same
                                   number = same place), so a --threshold counts frames.
    cohog:query|match[:SET[+SET]]  cohog_vpr_pairs, SET Gardens_Point, SPED_Test or ESSEX3IN1
                                   (default: all 953 pairs). Ground truth by index: query i's one
                                   correct place is match i (place ids), no positions.
    udacity[:FIRST-LAST]           udacity_hmb3, a real drive; position x = seconds since its
                                   first frame (positives within 0.5 s, negatives beyond 10 s).
    strecha:FAMILY                 strecha_mvs, FAMILY castle (P19 + P30), herz-jesus (P8 + P25),
                                   fountain or entry: every view of a family is one place (its
                                   own place group); `strecha` alone names all four.

Nordland is split by contiguous blocks of frames (fixed before any training; a gap of 25
frames between blocks, more than neighbouring frames share):

    0-2149       training (`nordland:summer:0-2149`, `nordland:winter:0-2149`)
    2175-2550    model selection (the training command's --val-db / --val-queries)
    2576-3575    validation, never trained on (`eval place`)

cohog_vpr_pairs is validation only. Training refuses both validation parts, as training data
and as model-selection data.

A set's meta may carry `positive_radius` / `negative_radius` in its position unit: training uses
them instead of the command's metres.
"""
from __future__ import annotations

import csv
import glob
import os
import re
from dataclasses import dataclass

import cv2
import numpy as np

from ..core.paths import shared_data_dir

SET_NAMES = ("nordland", "cohog", "udacity", "strecha")
NORDLAND_SEASONS = ("summer", "winter")
COHOG_SETS = ("Gardens_Point", "SPED_Test", "ESSEX3IN1")
STRECHA_FAMILIES = {"castle": ("castle-P19", "castle-P30"),
                    "herz-jesus": ("Herz-Jesus-P8", "Herz-Jesus-P25"),
                    "fountain": ("fountain-P11",), "entry": ("entry-P10",)}
# Nordland: neighbouring frames within 2 show the same place; beyond 10 another one
NORDLAND_RADII = {"positive_radius": 2.0, "negative_radius": 10.0, "position_unit": "frame"}
UDACITY_RADII = {"positive_radius": 0.5, "negative_radius": 10.0, "position_unit": "s"}
STRECHA_RADII = {"positive_radius": 1.0, "negative_radius": 1e9, "position_unit": "scene"}
NORDLAND_VALIDATION = (2576, 3575)  # inclusive frame range kept out of training


@dataclass
class PlaceSet:
    root: str
    group: str
    images: list[str]  # absolute paths
    positions: np.ndarray  # (N, 3), NaN where unknown
    quaternions: np.ndarray  # (N, 4) x, y, z, w, NaN where unknown
    stamps: np.ndarray  # (N,) seconds, NaN where unknown
    meta: dict
    # (N,) integers, or None: the same id in two sets is the same place (ground truth by index)
    place_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    def load_rgb(self, index: int) -> np.ndarray:
        bgr = cv2.imread(self.images[index], cv2.IMREAD_COLOR)
        if bgr is None or bgr.size == 0:
            raise ValueError(f"cannot read image {self.images[index]}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)



def refuse_validation_sets(spec: str) -> None:
    """Raise when a training source is (or overlaps) a validation set."""
    if not is_named_set(spec):
        return
    name, _, rest = spec.partition(":")
    if name == "cohog":
        raise ValueError(f"{spec}: cohog_vpr_pairs is for validation only, never for training "
                         "or model selection")
    if name == "nordland":
        parts = rest.split(":")
        bounds = re.fullmatch(r"(\d+)-(\d+)", parts[1]) if len(parts) > 1 else None
        if len(parts) > 1 and not bounds:
            return  # a malformed range: read_named_set says what is wrong
        first, last = (int(bounds[1]), int(bounds[2])) if bounds else (0, 1 << 30)
        if first <= NORDLAND_VALIDATION[1] and last >= NORDLAND_VALIDATION[0]:
            raise ValueError(f"{spec}: Nordland frames {NORDLAND_VALIDATION[0]}-"
                             f"{NORDLAND_VALIDATION[1]} are the held-out validation block, "
                             "never used for training or model selection")


def is_named_set(spec: str) -> bool:
    """A spec of this module (not an existing folder of that name)."""
    return spec.split(":", 1)[0] in SET_NAMES and not os.path.isdir(spec)


def expand_specs(specs: list[str]) -> list[str]:
    """`strecha` alone -> one spec per scene family; everything else unchanged."""
    out = []
    for spec in specs:
        out += [f"strecha:{family}" for family in STRECHA_FAMILIES] if spec == "strecha" \
            else [spec]
    return out


def _folder(name: str) -> str:
    path = os.path.join(shared_data_dir(), name)
    if not os.path.isdir(path):
        raise ValueError(f"{path} is missing: the shared data set '{name}' is needed "
                         "(set DL_PERCEPTION_DATA to the folder holding it)")
    return path


def _range(text: str | None, count: int, spec: str) -> tuple[int, int]:
    if not text:
        return 0, count - 1
    match = re.fullmatch(r"(\d+)-(\d+)", text)
    if not match or not int(match[1]) <= int(match[2]) < count:
        raise ValueError(f"{spec}: the frame range must be FIRST-LAST within 0-{count - 1}")
    return int(match[1]), int(match[2])


def read_named_set(spec: str):
    """The PlaceSet a spec names; ValueError says what is wrong."""
    name, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    if name == "nordland":
        if not parts or parts[0] not in NORDLAND_SEASONS or len(parts) > 2:
            raise ValueError(f"{spec}: expected nordland:summer|winter[:FIRST-LAST]")
        root = _folder("nordland_seqslam")
        images = sorted(glob.glob(os.path.join(root, parts[0], "images-*.png")))
        first, last = _range(parts[1] if len(parts) > 1 else None, len(images), spec)
        frames = np.arange(first, last + 1)
        positions = np.stack([frames, np.zeros(len(frames)), np.zeros(len(frames))], 1)
        return PlaceSet(os.path.join(root, parts[0]), "nordland",
                        [images[i] for i in frames], positions.astype(float),
                        np.full((len(frames), 4), np.nan), np.full(len(frames), np.nan),
                        {"set": spec, **NORDLAND_RADII}, place_ids=frames)
    if name == "cohog":
        if not parts or parts[0] not in ("query", "match") or len(parts) > 2:
            raise ValueError(f"{spec}: expected cohog:query|match[:SET[+SET]]")
        wanted = parts[1].split("+") if len(parts) > 1 else list(COHOG_SETS)
        unknown = sorted(set(wanted) - set(COHOG_SETS))
        if unknown:
            raise ValueError(f"{spec}: unknown cohog set(s) {unknown} (have {list(COHOG_SETS)})")
        root = _folder("cohog_vpr_pairs")
        with open(os.path.join(root, "pairs.csv"), newline="") as handle:
            rows = list(csv.DictReader(handle))
        ids = np.array([i for i, row in enumerate(rows) if row["dataset"] in wanted])
        count = len(ids)
        return PlaceSet(root, "cohog", [os.path.join(root, rows[i][parts[0]]) for i in ids],
                        np.full((count, 3), np.nan), np.full((count, 4), np.nan),
                        np.full(count, np.nan), {"set": spec}, place_ids=ids)
    if name == "udacity":
        if len(parts) > 1:
            raise ValueError(f"{spec}: expected udacity[:FIRST-LAST]")
        root = _folder("udacity_hmb3")
        images = sorted(glob.glob(os.path.join(root, "frame_*.jpg")))
        first, last = _range(parts[0] if parts else None, len(images), spec)
        images = images[first:last + 1]
        stamps = np.array([int(os.path.basename(p)[6:-4]) for p in images], dtype=np.float64)
        seconds = (stamps - stamps[0]) * 1e-9
        positions = np.stack([seconds, np.zeros(len(images)), np.zeros(len(images))], 1)
        return PlaceSet(root, "udacity_hmb3", images, positions, np.full((len(images), 4), np.nan),
                        seconds, {"set": spec, **UDACITY_RADII},
                        place_ids=np.arange(first, last + 1))
    if name == "strecha":
        if len(parts) != 1 or parts[0] not in STRECHA_FAMILIES:
            raise ValueError(f"{spec}: expected strecha:{'|'.join(STRECHA_FAMILIES)} "
                             "(or strecha alone for all)")
        root = _folder("strecha_mvs")
        images = [path for scene in STRECHA_FAMILIES[parts[0]]
                  for path in sorted(glob.glob(os.path.join(root, scene, "images", "*.jpg")))]
        # byte-identical views shared by castle-P19 and P30 are kept once
        unique, seen = [], set()
        for path in images:
            with open(path, "rb") as handle:
                content = handle.read()
            if content not in seen:
                seen.add(content)
                unique.append(path)
        count = len(unique)
        return PlaceSet(root, f"strecha:{parts[0]}", unique, np.zeros((count, 3)),
                        np.full((count, 4), np.nan), np.full(count, np.nan),
                        {"set": spec, **STRECHA_RADII}, place_ids=np.zeros(count, np.int64))
    raise ValueError(f"{spec}: unknown set (have {', '.join(SET_NAMES)})")
