"""RGB + depth pairs for `dl-perception train depth` / `eval depth`, from three folder layouts
(docs/depth.md, "Data"):

- sequence: the recorded-sequence layout (docs/datasets.md); `depth/*.png` uint16 millimetres,
  0 = no return. A folder holding sequence folders stands for all of them.
- nyu: NYU-Depth-style exports, uint16 PNG in millimetres, 0 = no measurement. Either
  `<any folder>/rgb_N.jpg|png` beside `sync_depth_N.png` (the "sync" export of the raw NYU v2
  scenes), or `DATASET/rgb/NAME.jpg|png` beside `DATASET/depth/NAME.png`.
- kitti: the KITTI depth benchmark's annotated depth, uint16 PNG, metres = value / 256, 0 = no
  measurement: `<drive>/proj_depth/groundtruth/image_0{2,3}/NAME.png` with the raw frame at
  `<drive>/image_0{2,3}/data/NAME.png` (the raw drive folder and the annotation folder merged or
  linked into one).
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

import cv2
import numpy as np

from .sequence import DEPTH_SCALE as SEQUENCE_DEPTH_SCALE
from .sequence import FORMAT as SEQUENCE_FORMAT
from .sequence import read_sequence

FORMATS = ("auto", "sequence", "nyu", "kitti")
NYU_DEPTH_SCALE = 1000.0  # PNG value per metre
KITTI_DEPTH_SCALE = 256.0
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclass
class DepthSample:
    image: str  # RGB file
    depth: str  # uint16 PNG
    depth_scale: float  # PNG value per metre
    source: str  # the dataset folder it came from (a sequence folder, or the NYU/KITTI root)


def load_rgb(path: str) -> np.ndarray:
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


SATURATED = 65535  # the PNG's largest value: at least that far, not a measurement


def load_depth(path: str, depth_scale: float) -> np.ndarray:
    """Metric depth (float32 metres), NaN where there is no measurement: PNG value 0, or 65535
    (saturated: beyond the format's range, e.g. the simulator's sky)."""
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"cannot read depth {path}")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f"{path}: depth PNGs must be single-channel 16-bit, got {raw.dtype} "
                         f"with shape {raw.shape}")
    depth = raw.astype(np.float32) / np.float32(depth_scale)
    depth[(raw == 0) | (raw == SATURATED)] = np.nan
    return depth


def is_sequence(folder: str) -> bool:
    import json
    meta = os.path.join(folder, "meta.json")
    if not os.path.isfile(meta):
        return False
    try:
        with open(meta) as handle:
            return json.load(handle).get("format") == SEQUENCE_FORMAT
    except (OSError, ValueError):
        return False


def sequence_folders(folder: str) -> list[str]:
    """The folder itself when it is a sequence, else the sequences directly inside it."""
    if is_sequence(folder):
        return [folder]
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if is_sequence(os.path.join(folder, name)))


def _sequence_samples(folder: str) -> list[DepthSample]:
    sequence = read_sequence(folder)
    return [DepthSample(f.image, f.depth, SEQUENCE_DEPTH_SCALE, folder)
            for f in sequence.frames if f.depth]


def _image_beside(folder: str, stem: str) -> str | None:
    for extension in IMAGE_EXTENSIONS:
        path = os.path.join(folder, stem + extension)
        if os.path.isfile(path):
            return path
    return None


def _nyu_samples(root: str) -> list[DepthSample]:
    samples = []
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            match = re.fullmatch(r"sync_depth_(\w+)\.png", name)
            if match:
                image = _image_beside(folder, f"rgb_{match.group(1)}")
                if image:
                    samples.append(DepthSample(image, os.path.join(folder, name),
                                               NYU_DEPTH_SCALE, root))
    depth_dir, rgb_dir = os.path.join(root, "depth"), os.path.join(root, "rgb")
    if os.path.isdir(depth_dir) and os.path.isdir(rgb_dir):
        for path in sorted(glob.glob(os.path.join(depth_dir, "*.png"))):
            image = _image_beside(rgb_dir, os.path.splitext(os.path.basename(path))[0])
            if image:
                samples.append(DepthSample(image, path, NYU_DEPTH_SCALE, root))
    return samples


def _kitti_samples(root: str) -> list[DepthSample]:
    samples = []
    pattern = os.path.join(root, "**", "proj_depth", "groundtruth", "image_0[23]", "*.png")
    for path in sorted(glob.glob(pattern, recursive=True)):
        camera_dir = os.path.dirname(path)
        drive = os.path.dirname(os.path.dirname(os.path.dirname(camera_dir)))
        image = os.path.join(drive, os.path.basename(camera_dir), "data", os.path.basename(path))
        if os.path.isfile(image):
            samples.append(DepthSample(image, path, KITTI_DEPTH_SCALE, root))
    return samples


def detect_format(folder: str) -> str:
    if sequence_folders(folder):
        return "sequence"
    if glob.glob(os.path.join(folder, "**", "proj_depth", "groundtruth"), recursive=True):
        return "kitti"
    if _nyu_samples(folder):
        return "nyu"
    raise ValueError(
        f"{folder}: no depth data found (expected a sequence folder or a folder of them, a "
        "NYU-style folder with rgb_N/sync_depth_N.png or rgb/ + depth/, or a KITTI-style folder "
        "with <drive>/proj_depth/groundtruth/image_02/; see docs/depth.md)")


def read_depth_dataset(folder: str, fmt: str = "auto") -> list[DepthSample]:
    """All RGB + depth pairs of one dataset folder; raises ValueError when there are none."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown depth dataset format '{fmt}' (one of {', '.join(FORMATS)})")
    if not os.path.isdir(folder):
        raise ValueError(f"dataset folder not found: {folder}")
    fmt = detect_format(folder) if fmt == "auto" else fmt
    if fmt == "sequence":
        samples = [s for seq in sequence_folders(folder) for s in _sequence_samples(seq)]
    elif fmt == "nyu":
        samples = _nyu_samples(folder)
    else:
        samples = _kitti_samples(folder)
    if not samples:
        raise ValueError(f"{folder}: no RGB + depth pairs in the {fmt} layout")
    return samples
