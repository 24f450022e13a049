"""`dl-perception eval features`: local features on real image pairs with known geometry, LIFT
next to OpenCV SIFT and ORB computed in the same run.

Two kinds of pairs (any number of sets of each in one run):

* homography pairs (dl_perception/datasets/homography.py: pair folders such as
  ../shared/data/homography, HPatches-style sequences such as ../shared/data/churchill_homography);
* relative-pose pairs (dl_perception/datasets/strecha.py: a scene with K, R, t per image, e.g. a
  held-out ../shared/data/strecha_mvs scene): views up to `pose_gap` apart in capture order.

Metrics per homography pair, each method with the same keypoint budget:
* repeatability: keypoints of one image with a keypoint of the other within `threshold` px after
  mapping by the true homography, over the keypoints of both images that lie in the shared region;
* matching score: correct mutual-nearest-neighbour matches (error <= threshold) over the mean
  number of keypoints in the shared region;
* MMA@1/3/5: share of mutual-nearest-neighbour matches whose error is within 1, 3, 5 px;
* homography: RANSAC on those matches; corner error = mean distance of A's four corners mapped by
  the estimate and by the truth; accuracy@e = share of pairs with corner error <= e px.

Per pose pair (as the SuperGlue / LoFTR evaluations): essential matrix by RANSAC on the
mutual-nearest-neighbour matches in normalised coordinates (1 px threshold), the pose recovered
from it; pose error = max(angle of the rotation error, angle between the translation directions);
AUC of the recall-vs-error curve up to 5, 10 and 20 degrees (a failed pair counts as infinite
error).
"""
from __future__ import annotations

import os

import cv2
import numpy as np
import torch

from ..datasets.homography import HomographyPair, read_homography_pairs, read_pair_set  # noqa: F401
from ..datasets.strecha import View, pose_pairs, read_scene, relative_pose
from ..core.imaging import DecodedImage
from ..core.matching import mutual_nearest_neighbours
from ..core.progress import progress
from .metrics import paired_bootstrap_interval

MMA_THRESHOLDS = (1, 3, 5)
CORNER_THRESHOLDS = (1, 3, 5, 10)
POSE_THRESHOLDS = (5, 10, 20)


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
    def __init__(self, model, device: torch.device, max_keypoints: int, **detection):
        """`detection`: further DetectionSettings fields (e.g. edge_ratio) for every image."""
        self.name = "LIFT"
        self.model = model.to(device).eval()
        self.device = device
        self.settings = self.model.default_settings(max_keypoints=max_keypoints, **detection)

    def __call__(self, gray):
        with torch.inference_mode():
            out = self.model(self.model.preprocess(DecodedImage(gray, "mono8")).to(self.device),
                             settings=self.settings)
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


def angle_between_rotations_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    cosine = (np.trace(R_a.T @ R_b) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def angle_between_vectors_deg(a: np.ndarray, b: np.ndarray) -> float:
    cosine = np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def relative_pose_error(points_a: np.ndarray, points_b: np.ndarray, K_a: np.ndarray,
                        K_b: np.ndarray, R_true: np.ndarray, t_true: np.ndarray,
                        threshold_px: float = 1.0) -> dict:
    """Pose of b relative to a from matched pixels (essential matrix by RANSAC, then the
    cheirality check of recoverPose), and its error against the truth (X_b = R X_a + t). The
    translation's sign is not held against it (min(e, 180 - e)), as in SuperGlue's evaluation."""
    failed = {"rotation_error_deg": float("inf"), "translation_error_deg": float("inf"),
              "pose_error_deg": float("inf"), "pose_inliers": 0}
    if len(points_a) < 5:
        return failed
    normal_a = cv2.undistortPoints(points_a.reshape(-1, 1, 2).astype(np.float64), K_a, None)
    normal_b = cv2.undistortPoints(points_b.reshape(-1, 1, 2).astype(np.float64), K_b, None)
    normal_a, normal_b = normal_a.reshape(-1, 2), normal_b.reshape(-1, 2)
    threshold = threshold_px / np.mean([K_a[0, 0], K_a[1, 1], K_b[0, 0], K_b[1, 1]])
    cv2.setRNGSeed(0)
    E, mask = cv2.findEssentialMat(normal_a, normal_b, np.eye(3), method=cv2.RANSAC,
                                   prob=0.99999, threshold=threshold)
    if E is None or mask is None:
        return failed
    best = None
    for candidate in np.split(E, len(E) // 3):  # up to three solutions of the 5-point solver
        inliers, R, t, _ = cv2.recoverPose(candidate, normal_a, normal_b, np.eye(3), 1e9,
                                           mask=mask.copy())
        if best is None or inliers > best[0]:
            best = (inliers, R, t.ravel())
    inliers, R, t = best
    rotation_error = angle_between_rotations_deg(R, R_true)
    translation_error = angle_between_vectors_deg(t, t_true)
    translation_error = min(translation_error, 180.0 - translation_error)
    return {"rotation_error_deg": rotation_error, "translation_error_deg": translation_error,
            "pose_error_deg": max(rotation_error, translation_error), "pose_inliers": int(inliers)}


def pose_auc(errors, thresholds=POSE_THRESHOLDS) -> dict:
    """Area under the recall-vs-error curve up to each threshold, normalised to 0..1 (1: every
    pair exact). Infinite errors (failures) never reach the recall."""
    errors = np.sort(np.asarray(errors, float))
    recall = np.arange(1, len(errors) + 1) / max(len(errors), 1)
    errors = np.r_[0.0, errors]
    recall = np.r_[0.0, recall]
    result = {}
    for limit in thresholds:
        last = int(np.searchsorted(errors, limit))
        x = np.r_[errors[:last], limit]
        y = np.r_[recall[:last], recall[last - 1]]
        result[f"auc@{limit}"] = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / limit)
    return result


def pose_pair_metrics(points_a, desc_a, points_b, desc_b, view_a: View, view_b: View,
                      metric: str = "l2") -> dict:
    matches = mutual_nearest_neighbours(desc_a, desc_b, metric=metric)
    R_true, t_true = relative_pose(view_a, view_b)
    result = {"keypoints_a": len(points_a), "matches": len(matches)}
    result.update(relative_pose_error(points_a[matches[:, 0]], points_b[matches[:, 1]],
                                      view_a.K, view_b.K, R_true, t_true))
    return result


POSE_SUMMARY_KEYS = [*[f"auc@{t}" for t in POSE_THRESHOLDS], "pose_error_deg", "matches",
                     "pose_inliers"]


def summarize_poses(rows: list[dict]) -> dict:
    """AUCs over the pairs; pose error: the median; matches and inliers: the mean."""
    summary = pose_auc([r["pose_error_deg"] for r in rows])
    summary["pose_error_deg"] = float(np.median([r["pose_error_deg"] for r in rows]))
    summary["matches"] = float(np.mean([r["matches"] for r in rows]))
    summary["pose_inliers"] = float(np.mean([r["pose_inliers"] for r in rows]))
    return summary


# the three measures of LIFT against SIFT: (result key of the per-pair rows, measure)
COMPARED_MEASURES = (("per_pair", "mma@3"), ("per_pair", "homography@3"),
                     ("pose_per_pair", "auc@10"))


def paired_differences(result: dict, method: str = "LIFT") -> dict:
    """`method` minus each other method on mean MMA@3, homography accuracy @3 px and pose
    AUC@10, with a 95 % paired-bootstrap interval over the pairs. Pairs that share images are
    not independent, so the intervals are if anything too narrow: a difference whose interval
    holds 0 is not established by the run."""
    differences: dict[str, dict] = {}
    for other in (m for m in result["per_pair"] if m != method):
        cells = {}
        for rows_key, key in COMPARED_MEASURES:
            ours, theirs = result[rows_key].get(method, []), result[rows_key].get(other, [])
            if not ours:
                continue
            if key.startswith("auc@"):
                limit = int(key.split("@")[1])
                mine = np.array([r["pose_error_deg"] for r in ours], float)
                yours = np.array([r["pose_error_deg"] for r in theirs], float)

                def statistic(i, mine=mine, yours=yours, limit=limit):
                    return (pose_auc(mine[i], (limit,))[f"auc@{limit}"]
                            - pose_auc(yours[i], (limit,))[f"auc@{limit}"])
            else:
                per_pair = np.array([a[key] - b[key] for a, b in zip(ours, theirs)], float)

                def statistic(i, per_pair=per_pair):
                    return per_pair[i].mean()
            low, high = paired_bootstrap_interval(statistic, len(ours))
            cells[key] = {"difference": float(statistic(np.arange(len(ours)))),
                          "low": low, "high": high}
        differences[other] = cells
    return differences


def _set_name(folder: str) -> str:
    return os.path.basename(os.path.normpath(folder))


def evaluate_features(pair_sets: list[str] | str, extractors: list[Extractor],
                      threshold: float = 3.0, pose_scenes: list[str] = (), pose_gap: int = 3,
                      log=print) -> dict:
    """Every method on every pair of every set; each image's features are computed once per
    method. Homography sets are summarised together ("summary", a mean over all their pairs) and
    one by one ("set_summary"); pose scenes together ("pose_summary") and one by one."""
    if isinstance(pair_sets, str):
        pair_sets = [pair_sets]
    homography_sets, pose_sets, notes = [], [], []
    for folder in pair_sets:
        pairs, set_notes = read_pair_set(folder)
        homography_sets.append((_set_name(folder), pairs))
        notes += set_notes
    for folder in pose_scenes:
        views = read_scene(folder)
        pose_sets.append((_set_name(folder), views, pose_pairs(views, pose_gap)))
    for note in notes:
        log(f"note: {note}")
    images = sorted({p for _, pairs in homography_sets for pair in pairs
                     for p in (pair.image_a, pair.image_b)}
                    | {v.path for _, views, _ in pose_sets for v in views})
    features: dict[tuple[str, str], tuple] = {}
    with progress(total=len(images) * len(extractors), desc="features", unit="image") as bar:
        for path in images:
            gray = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
            if gray is None:
                raise ValueError(f"cannot read {path}")
            for extractor in extractors:
                features[extractor.name, path] = (*extractor(gray), gray.shape)
                bar.update(1)
    per_pair: dict[str, list[dict]] = {e.name: [] for e in extractors}
    pose_rows: dict[str, list[dict]] = {e.name: [] for e in extractors}
    for set_name, pairs in homography_sets:
        for pair in pairs:
            for extractor in extractors:
                points_a, desc_a, shape_a = features[extractor.name, pair.image_a]
                points_b, desc_b, shape_b = features[extractor.name, pair.image_b]
                row = pair_metrics(points_a, desc_a, points_b, desc_b, pair.H, shape_a, shape_b,
                                   extractor.metric, threshold)
                per_pair[extractor.name].append({"set": set_name, "pair": pair.name, **row})
    for set_name, views, index_pairs in pose_sets:
        for i, j in index_pairs:
            for extractor in extractors:
                points_a, desc_a, _ = features[extractor.name, views[i].path]
                points_b, desc_b, _ = features[extractor.name, views[j].path]
                row = pose_pair_metrics(points_a, desc_a, points_b, desc_b, views[i], views[j],
                                        extractor.metric)
                pose_rows[extractor.name].append(
                    {"set": set_name, "pair": f"{set_name}:{views[i].name}-{views[j].name}", **row})
    names = [e.name for e in extractors]
    result = {"pairs": [r["pair"] for r in per_pair[names[0]]] if names else [],
              "sets": [name for name, _ in homography_sets], "notes": notes,
              "threshold_px": threshold, "per_pair": per_pair, "summary": {}, "set_summary": {},
              "pose_sets": [name for name, _, _ in pose_sets], "pose_gap": pose_gap,
              "pose_pairs": [r["pair"] for r in pose_rows[names[0]]] if names else [],
              "pose_per_pair": pose_rows, "pose_summary": {}, "pose_set_summary": {}}
    for name in names:
        if per_pair[name]:
            result["summary"][name] = summarize(per_pair[name])
        for set_name, _ in homography_sets:
            result["set_summary"].setdefault(set_name, {})[name] = summarize(
                [r for r in per_pair[name] if r["set"] == set_name])
        if pose_rows[name]:
            result["pose_summary"][name] = summarize_poses(pose_rows[name])
        for set_name, _, _ in pose_sets:
            result["pose_set_summary"].setdefault(set_name, {})[name] = summarize_poses(
                [r for r in pose_rows[name] if r["set"] == set_name])
    if "LIFT" in names and len(names) > 1:
        result["differences"] = paired_differences(result)
    return result


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Columns as wide as their longest entry (names of any length stay apart)."""
    widths = [max(len(str(row[c])) for row in [header] + rows) for c in range(len(header))]
    lines = []
    for row in [header] + rows:
        cells = [str(v).ljust(w) if c == 0 or (c == 1 and header[1] == "method") else str(v).rjust(w)
                 for c, (v, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


def format_report(result: dict) -> str:
    methods = list(result["summary"] or result["pose_summary"])
    lines = []
    if result["summary"]:
        sets = ", ".join(f"{name} ({sum(1 for r in result['per_pair'][methods[0]] if r['set'] == name)})"
                         for name in result["sets"])
        lines += [f"{len(result['pairs'])} homography pairs ({sets}), correct = within "
                  f"{result['threshold_px']:g} px; mean over all pairs (corner error: median, px)", ""]
        lines += _table(["metric", *methods], [[key, *(_cell(result["summary"][m][key], 0).strip()
                                                       for m in methods)] for key in SUMMARY_KEYS])
        if len(result["sets"]) > 1:
            lines += ["", "set by set (mma@3 / homography@3 / matching score)"]
            rows = []
            for name in result["sets"]:
                cells = result["set_summary"][name]
                rows.append([name, *(f"{cells[m]['mma@3']:.3f} / {cells[m]['homography@3']:.3f} / "
                                     f"{cells[m]['matching_score']:.3f}" for m in methods)])
            lines += _table(["set", *methods], rows)
    if result["pose_summary"]:
        lines += ["", f"{len(result['pose_pairs'])} relative-pose pairs ({', '.join(result['pose_sets'])}; "
                  f"views up to {result['pose_gap']} apart): AUC of the pose error (max of rotation "
                  f"and translation-direction error) up to 5/10/20 deg; median error, mean matches"]
        lines += _table(["metric", *methods],
                        [[key, *(_cell(result["pose_summary"][m][key], 0).strip() for m in methods)]
                         for key in POSE_SUMMARY_KEYS])
    if result.get("differences"):
        others = list(result["differences"])
        keys = [k for _, k in COMPARED_MEASURES if k in result["differences"][others[0]]]
        lines += ["", "LIFT minus each baseline, with a 95 % paired-bootstrap interval over the "
                  "pairs (an interval that holds 0: not established by this run)"]
        lines += _table(["measure", *others], [
            [key, *(f"{c['difference']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"
                    for c in (result["differences"][o][key] for o in others))] for key in keys])
    if result["summary"]:
        columns = ["repeatability", "matching_score", "mma@1", "mma@3", "mma@5", "corner_error",
                   "keypoints_a", "matches"]
        rows = [[row["pair"], method, *(_cell(row[c], 0).strip() for c in columns)]
                for index in range(len(result["pairs"])) for method in methods
                for row in [result["per_pair"][method][index]]]
        lines += ["", "homography pairs one by one"] + _table(["pair", "method", *columns], rows)
    if result["pose_summary"]:
        columns = ["pose_error_deg", "rotation_error_deg", "translation_error_deg", "matches",
                   "pose_inliers"]
        rows = [[row["pair"], method, *(_cell(row[c], 0).strip() for c in columns)]
                for index in range(len(result["pose_pairs"])) for method in methods
                for row in [result["pose_per_pair"][method][index]]]
        lines += ["", "pose pairs one by one"] + _table(["pair", "method", *columns], rows)
    if "LIFT" in methods and result["summary"]:
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
