"""Image pairs related by a known homography, for local-feature evaluation.

Three layouts:

* pair folders (../shared/data/homography): <name>A.<ext>, <name>B.<ext> and
  <name>_H_A_to_B.derived.txt, a 3x3 homography mapping pixels of A into B (that folder's upstream
  <name>_model.txt maps B into A and is not read);
* HPatches-style sequences (../shared/data/churchill_homography): images 1..6 and H_1_k mapping
  image 1 into image k, one pair (1, k) per homography file;
* planar-target video (visp-images-data's mire-2, image.0001.pgm ...): no ground truth is
  shipped, so the homography from the first frame to frame k is measured by direct (intensity)
  alignment, ECC (Evangelidis and Psarakis, 2008), chained over intermediate frames and refined
  on the pair itself: no keypoint method is involved, so no compared method is favoured.

Pixel convention everywhere: (0, 0) is the centre of the top-left pixel.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

import cv2
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


def ecc_homography(reference: np.ndarray, target: np.ndarray, initial: np.ndarray,
                   iterations: int = 200) -> tuple[np.ndarray, float]:
    """Refine the homography reference -> target by ECC; returns it and the correlation
    coefficient reached. Images are gray uint8, the homography in the pixel-centre convention."""
    # OpenCV's ECC warp maps target coordinates into the reference (inverse of ours)
    warp = np.linalg.inv(initial).astype(np.float32)
    warp /= warp[2, 2]
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-6)
    correlation, warp = cv2.findTransformECC(
        reference.astype(np.float32), target.astype(np.float32), warp, cv2.MOTION_HOMOGRAPHY,
        criteria, None, 5)
    H = np.linalg.inv(warp.astype(np.float64))
    return H / H[2, 2], float(correlation)


def read_planar_video(folder: str, frames: tuple[int, ...] = (50, 100, 150, 200, 250, 300),
                      chain_step: int = 5, min_correlation: float = 0.9
                      ) -> tuple[list[HomographyPair], list[str]]:
    """Pairs (first frame, frame k) of a planar-target video named image.NNNN.<ext> (mire-2),
    homographies measured by ECC (see the module's note); a pair whose alignment does not reach
    `min_correlation` is noted and left out."""
    paths = sorted(p for p in glob.glob(os.path.join(folder, "image.*"))
                   if p.lower().endswith(IMAGE_EXTENSIONS))
    if len(paths) < 2:
        raise ValueError(f"{folder} holds no image.NNNN frames of a planar-target video")
    sequence = os.path.basename(os.path.normpath(folder))
    gray = {}

    def load(index):
        if index not in gray:
            gray[index] = cv2.imread(paths[index], cv2.IMREAD_GRAYSCALE)
        return gray[index]
    pairs, notes = [], []
    H = np.eye(3)
    done = 0
    for target in sorted(f for f in frames if 0 < f < len(paths)):
        try:
            # small steps converge from the identity; their product starts the direct refinement
            for index in list(range(done + chain_step, target, chain_step)) + [target]:
                step, _ = ecc_homography(load(done), load(index), np.eye(3))
                H, done = step @ H, index
            H, correlation = ecc_homography(load(0), load(target), H)
        except cv2.error:  # the chain is broken: later frames cannot be reached either
            notes.append(f"{sequence}: ECC did not converge before frame {target + 1}; frames "
                         f"from there on skipped")
            break
        if correlation < min_correlation:
            notes.append(f"{sequence}: frame {target + 1} aligned only to correlation "
                         f"{correlation:.3f}, skipped")
            continue
        pairs.append(HomographyPair(f"{sequence}:1-{target + 1}", paths[0], paths[target], H))
    if not pairs:
        raise ValueError(f"{folder}: no frame could be aligned to the first")
    return pairs, notes


def read_pair_set(folder: str) -> tuple[list[HomographyPair], list[str]]:
    """Whichever of the three layouts `folder` holds."""
    if glob.glob(os.path.join(folder, "*_H_A_to_B.derived.txt")):
        return read_homography_pairs(folder)
    if glob.glob(os.path.join(folder, "H_1_*")):
        return read_hpatches_sequence(folder)
    if glob.glob(os.path.join(folder, "image.*")):
        return read_planar_video(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"pairs folder not found: {folder}")
    return read_homography_pairs(folder)  # raises with the expected layout
