"""`dl-perception eval features --pairs DIR`: local features on image pairs related by a known
homography, LIFT next to OpenCV SIFT and ORB computed in the same run.

Pair layout (as ../shared/data/homography): <name>A.<ext>, <name>B.<ext> and
<name>_H_A_to_B.derived.txt, a 3x3 homography mapping pixels of A into B. (That folder's upstream
<name>_model.txt maps B into A; it is not read.)

Metrics per pair, each method with the same keypoint budget:
* repeatability: keypoints of one image with a keypoint of the other within `threshold` px after
  mapping by the true homography, over the keypoints of both images that lie in the shared region;
* matching score: correct mutual-nearest-neighbour matches (error <= threshold) over the mean
  number of keypoints in the shared region;
* MMA@1/3/5: share of mutual-nearest-neighbour matches whose error is within 1, 3, 5 px;
* homography: RANSAC on those matches; corner error = mean distance of A's four corners mapped by
  the estimate and by the truth; accuracy@e = share of pairs with corner error <= e px.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..imaging import DecodedImage
from ..matching import mutual_nearest_neighbours

MMA_THRESHOLDS = (1, 3, 5)
CORNER_THRESHOLDS = (1, 3, 5, 10)


@dataclass
class HomographyPair:
    name: str
    image_a: str
    image_b: str
    H: np.ndarray  # A -> B


def read_homography_pairs(folder: str) -> tuple[list[HomographyPair], list[str]]:
    """Pairs of the folder, and notes on names that are incomplete (no B image, no homography)."""
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


def map_points(H: np.ndarray, points: np.ndarray) -> np.ndarray:
    if len(points) == 0:
        return points.reshape(0, 2)
    homogeneous = np.c_[points, np.ones(len(points))] @ H.T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


# ---------------------------------------------------------------------------------------------
# feature extractors: gray uint8 image -> (N x 2 keypoints, N x D descriptors)

class Extractor:
    name: str
    metric = "l2"

    def __call__(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class OpenCVExtractor(Extractor):
    def __init__(self, name: str, max_keypoints: int):
        self.name = name
        if name == "SIFT":
            self.detector = cv2.SIFT_create(nfeatures=max_keypoints)
        else:
            self.detector = cv2.ORB_create(nfeatures=max_keypoints)
            self.metric = "hamming"

    def __call__(self, gray):
        keypoints, descriptors = self.detector.detectAndCompute(gray, None)
        points = np.array([k.pt for k in keypoints], np.float64).reshape(-1, 2)
        if descriptors is None:
            descriptors = np.zeros((0, 32 if self.metric == "hamming" else 128),
                                   np.uint8 if self.metric == "hamming" else np.float32)
        return points, descriptors


class LIFTExtractor(Extractor):
    def __init__(self, model, device: torch.device, max_keypoints: int):
        self.name = "LIFT"
        self.model = model.to(device).eval()
        self.device = device
        self.model.settings.max_keypoints = max_keypoints

    def __call__(self, gray):
        with torch.inference_mode():
            out = self.model(self.model.preprocess(DecodedImage(gray, "mono8")).to(self.device))
        return (out["keypoints"].cpu().numpy().astype(np.float64),
                out["descriptors"].cpu().numpy())


# ---------------------------------------------------------------------------------------------
# metrics

def _inside(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    return ((points[:, 0] >= 0) & (points[:, 0] <= width - 1)
            & (points[:, 1] >= 0) & (points[:, 1] <= height - 1))


def pair_metrics(points_a, desc_a, points_b, desc_b, H, shape_a, shape_b, metric="l2",
                 threshold: float = 3.0) -> dict:
    H_inv = np.linalg.inv(H)
    a_in_b = map_points(H, points_a)
    b_in_a = map_points(H_inv, points_b)
    shared_a = _inside(a_in_b, shape_b) if len(points_a) else np.zeros(0, bool)
    shared_b = _inside(b_in_a, shape_a) if len(points_b) else np.zeros(0, bool)
    n_shared = (shared_a.sum() + shared_b.sum()) / 2.0
    result = {"keypoints_a": len(points_a), "keypoints_b": len(points_b),
              "shared_keypoints": float(n_shared)}
    # repeatability
    if shared_a.any() and shared_b.any():
        distance = np.linalg.norm(a_in_b[shared_a][:, None] - points_b[shared_b][None], axis=2)
        repeated = (distance.min(axis=1) <= threshold).sum() + (distance.min(axis=0) <= threshold).sum()
        result["repeatability"] = float(repeated / (shared_a.sum() + shared_b.sum()))
    else:
        result["repeatability"] = 0.0
    matches = mutual_nearest_neighbours(desc_a, desc_b, metric=metric)
    result["matches"] = len(matches)
    if len(matches):
        error = np.linalg.norm(a_in_b[matches[:, 0]] - points_b[matches[:, 1]], axis=1)
        correct = int((error <= threshold).sum())
        for t in MMA_THRESHOLDS:
            result[f"mma@{t}"] = float((error <= t).mean())
    else:
        correct = 0
        for t in MMA_THRESHOLDS:
            result[f"mma@{t}"] = 0.0
    result["correct_matches"] = correct
    result["matching_score"] = float(correct / n_shared) if n_shared else 0.0
    # homography from the matches
    height, width = shape_a
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], float)
    corner_error = float("inf")
    inliers = 0
    if len(matches) >= 4:
        cv2.setRNGSeed(0)
        estimate, mask = cv2.findHomography(points_a[matches[:, 0]], points_b[matches[:, 1]],
                                            cv2.RANSAC, 3.0, maxIters=10000, confidence=0.999)
        if estimate is not None:
            inliers = int(mask.sum())
            corner_error = float(np.linalg.norm(map_points(estimate, corners)
                                                - map_points(H, corners), axis=1).mean())
    result["ransac_inliers"] = inliers
    result["corner_error"] = corner_error
    for t in CORNER_THRESHOLDS:
        result[f"homography@{t}"] = float(corner_error <= t)
    return result


SUMMARY_KEYS = ["repeatability", "matching_score", *[f"mma@{t}" for t in MMA_THRESHOLDS],
                *[f"homography@{t}" for t in CORNER_THRESHOLDS], "corner_error",
                "keypoints_a", "matches", "correct_matches"]


def summarize(rows: list[dict]) -> dict:
    """Mean of each metric over pairs (corner error: the median, as failures are infinite)."""
    summary = {}
    for key in SUMMARY_KEYS:
        values = np.array([r[key] for r in rows], float)
        summary[key] = float(np.median(values)) if key == "corner_error" else float(values.mean())
    return summary


def evaluate_features(pairs_dir: str, extractors: list[Extractor], threshold: float = 3.0,
                      log=print) -> dict:
    pairs, notes = read_homography_pairs(pairs_dir)
    for note in notes:
        log(f"note: {note}")
    per_pair: dict[str, list[dict]] = {e.name: [] for e in extractors}
    for pair in pairs:
        gray_a = cv2.imread(pair.image_a, cv2.IMREAD_GRAYSCALE)
        gray_b = cv2.imread(pair.image_b, cv2.IMREAD_GRAYSCALE)
        if gray_a is None or gray_b is None:
            raise ValueError(f"cannot read the images of pair {pair.name}")
        for extractor in extractors:
            points_a, desc_a = extractor(gray_a)
            points_b, desc_b = extractor(gray_b)
            row = pair_metrics(points_a, desc_a, points_b, desc_b, pair.H, gray_a.shape,
                               gray_b.shape, extractor.metric, threshold)
            per_pair[extractor.name].append({"pair": pair.name, **row})
    return {"pairs": [p.name for p in pairs], "notes": notes, "threshold_px": threshold,
            "per_pair": per_pair,
            "summary": {name: summarize(rows) for name, rows in per_pair.items()}}


def format_report(result: dict) -> str:
    methods = list(result["summary"])
    lines = [f"{len(result['pairs'])} pairs ({', '.join(result['pairs'])}), correct = within "
             f"{result['threshold_px']:g} px; mean over pairs (corner error: median, px)", ""]
    lines.append(f"{'metric':18s}" + "".join(f"{m:>10s}" for m in methods))
    for key in SUMMARY_KEYS:
        lines.append(f"{key:18s}" + "".join(_cell(result["summary"][m][key]) for m in methods))
    lines += ["", "pair by pair"]
    columns = ["repeatability", "matching_score", "mma@1", "mma@3", "mma@5", "corner_error",
               "keypoints_a", "matches"]
    lines.append(f"{'pair':8s}{'method':8s}" + "".join(f"{c:>15s}" for c in columns))
    for index, pair in enumerate(result["pairs"]):
        for method in methods:
            row = result["per_pair"][method][index]
            lines.append(f"{pair:8s}{method:8s}" + "".join(_cell(row[c], 15) for c in columns))
    if "LIFT" in methods:
        lines += ["", "LIFT against the baselines, pair by pair (matching score, corner error):"]
        for index, pair in enumerate(result["pairs"]):
            lift = result["per_pair"]["LIFT"][index]
            verdicts = []
            for other in (m for m in methods if m != "LIFT"):
                row = result["per_pair"][other][index]
                verdicts.append(
                    f"vs {other}: matching score {_compare(lift['matching_score'], row['matching_score'], True)}, "
                    f"corner error {_compare(lift['corner_error'], row['corner_error'], False)}")
            lines.append(f"  {pair}: " + "; ".join(verdicts))
    return "\n".join(lines)


def _cell(value, width: int = 10) -> str:
    if isinstance(value, float):
        text = "inf" if np.isinf(value) else f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    else:
        text = str(value)
    return f"{text:>{width}s}"


def _compare(lift: float, other: float, higher_is_better: bool) -> str:
    if lift == other:
        return "tie"
    better = lift > other if higher_is_better else lift < other
    return f"{'better' if better else 'worse'} ({_cell(lift, 0).strip()} vs {_cell(other, 0).strip()})"
