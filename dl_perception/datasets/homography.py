"""Image pairs related by a known homography, for local-feature evaluation.

Two layouts:

* pair folders (../shared/data/homography): <name>A.<ext>, <name>B.<ext> and
  <name>_H_A_to_B.derived.txt, a 3x3 homography mapping pixels of A into B (that folder's upstream
  <name>_model.txt maps B into A and is not read);
* HPatches-style sequences (../shared/data/churchill_homography): images 1..6 and H_1_k mapping
  image 1 into image k, one pair (1, k) per homography file.

Pixel convention everywhere: (0, 0) is the centre of the top-left pixel.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff")


@dataclass
class HomographyPair:
    name: str
    image_a: str
    image_b: str
    H: np.ndarray  # A -> B


def read_homography_pairs(folder: str) -> tuple[list[HomographyPair], list[str]]:
    """Pairs of a pair folder, and notes on names that are incomplete (no B image, no
    homography)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"pairs folder not found: {folder}")
    pairs, notes = [], []
    for path in sorted(glob.glob(os.path.join(folder, "*A.*"))):
        stem, extension = os.path.splitext(os.path.basename(path))
        name = stem[:-1]
        image_b = os.path.join(folder, f"{name}B{extension}")
        h_path = os.path.join(folder, f"{name}_H_A_to_B.derived.txt")
        if not os.path.isfile(image_b):
            notes.append(f"{name}: no {os.path.basename(image_b)}, skipped")
            continue
        if not os.path.isfile(h_path):
            notes.append(f"{name}: no {os.path.basename(h_path)}, skipped")
            continue
        H = np.loadtxt(h_path, comments="#").reshape(3, 3)
        pairs.append(HomographyPair(name, path, image_b, H / H[2, 2]))
    if not pairs:
        raise ValueError(f"{folder} holds no <name>A / <name>B / <name>_H_A_to_B.derived.txt pairs")
    return pairs, notes


def _numbered_image(folder: str, number: int) -> str | None:
    for extension in IMAGE_EXTENSIONS:
        path = os.path.join(folder, f"{number}{extension}")
        if os.path.isfile(path):
            return path
    return None


def read_hpatches_sequence(folder: str) -> tuple[list[HomographyPair], list[str]]:
    """Pairs (1, k) of an HPatches-style sequence: images 1.<ext> .. k.<ext>, H_1_k files."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"sequence folder not found: {folder}")
    sequence = os.path.basename(os.path.normpath(folder))
    first = _numbered_image(folder, 1)
    if first is None:
        raise ValueError(f"{folder}: no image 1 of an HPatches-style sequence")
    pairs, notes = [], []
    h_files = [(int(m.group(1)), p) for p in glob.glob(os.path.join(folder, "H_1_*"))
               if (m := re.fullmatch(r"H_1_(\d+)", os.path.basename(p)))]
    for number, h_path in sorted(h_files):
        image = _numbered_image(folder, number)
        if image is None:
            notes.append(f"{sequence}: H_1_{number} without image {number}, skipped")
            continue
        H = np.loadtxt(h_path).reshape(3, 3)
        pairs.append(HomographyPair(f"{sequence}:1-{number}", first, image, H / H[2, 2]))
    if not pairs:
        raise ValueError(f"{folder} holds no H_1_<k> homographies")
    return pairs, notes


def read_pair_set(folder: str) -> tuple[list[HomographyPair], list[str]]:
    """Whichever of the two layouts `folder` holds."""
    if glob.glob(os.path.join(folder, "*_H_A_to_B.derived.txt")):
        return read_homography_pairs(folder)
    if glob.glob(os.path.join(folder, "H_1_*")):
        return read_hpatches_sequence(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"pairs folder not found: {folder}")
    return read_homography_pairs(folder)  # raises with the expected layout
