"""Metrics shared by the evaluation commands (numpy only)."""
from __future__ import annotations

import numpy as np


def explained_variance(prediction: np.ndarray, truth: np.ndarray) -> float:
    """EVA as DroNet reports it: 1 - Var[truth - prediction] / Var[truth]."""
    variance = np.var(truth)
    return float("nan") if variance == 0 else float(1.0 - np.var(truth - prediction) / variance)


def rmse(prediction: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(prediction - truth))))


def binary_scores(probability: np.ndarray, label: np.ndarray, threshold: float = 0.5) -> dict:
    predicted = probability >= threshold
    positive = label > 0.5
    tp = int(np.sum(predicted & positive))
    fp = int(np.sum(predicted & ~positive))
    fn = int(np.sum(~predicted & positive))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": float(np.mean(predicted == positive)), "precision": precision,
            "recall": recall, "f1": f1, "roc_auc": roc_auc(probability, label)}


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney statistic (ties count half)."""
    positive = label > 0.5
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    # average ranks over ties
    start = 0
    while start < len(score):
        end = start
        while end + 1 < len(score) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(score: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) from the highest threshold down, one point per
    distinct score, starting at (0, 0) and ending at (1, 1)."""
    positive = label > 0.5
    order = np.argsort(-score, kind="mergesort")
    ranked, hits = score[order], positive[order]
    last_of_tie = np.r_[ranked[1:] != ranked[:-1], True]
    tp = np.cumsum(hits)[last_of_tie]
    fp = np.cumsum(~hits)[last_of_tie]
    n_pos, n_neg = max(int(positive.sum()), 1), max(int((~positive).sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def pose_errors(positions: np.ndarray, quaternions: np.ndarray, true_positions: np.ndarray,
                true_quaternions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame position error (Euclidean, units of the positions) and rotation error in
    degrees, 2*acos|q1.q2| (sign- and scale-invariant), as PoseNet reports them."""
    from ..core.geometry import rotation_angle_deg

    position_error = np.linalg.norm(np.asarray(positions) - np.asarray(true_positions), axis=-1)
    return position_error, rotation_angle_deg(quaternions, true_quaternions)


DEPTH_ERRORS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "si_rmse_log", "delta_1", "delta_2",
                "delta_3")


def paired_bootstrap_interval(statistic, count: int, resamples: int = 2000,
                              seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of `statistic(indices)` over `resamples` resamplings, with
    replacement, of `count` paired items (one resampling serves every method the statistic
    compares, so what the items share cancels). A fixed seed: the same run prints the same."""
    draws = np.random.default_rng(seed).integers(count, size=(resamples, count))
    low, high = np.percentile([statistic(indices) for indices in draws], [2.5, 97.5])
    return float(low), float(high)


def valid_depth_mask(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Pixels with a usable ground truth (finite, > 0: 0, inf and NaN mean no measurement) and a
    prediction (finite, > 0)."""
    with np.errstate(invalid="ignore"):
        return (np.isfinite(truth) & (truth > 0) & np.isfinite(prediction) & (prediction > 0))


def depth_errors(prediction: np.ndarray, truth: np.ndarray) -> dict | None:
    """The error measures of Eigen et al. 2014 (Sec. 4.3) over one depth map's valid pixels:
    abs and squared relative difference, linear and log RMSE, the scale-invariant log RMSE
    (sqrt of Eqn. 1) and the fraction with max(pred/true, true/pred) below 1.25, 1.25^2, 1.25^3.
    None when no pixel is valid."""
    mask = valid_depth_mask(prediction, truth)
    if not mask.any():
        return None
    pred = prediction[mask].astype(np.float64)
    true = truth[mask].astype(np.float64)
    log_diff = np.log(pred) - np.log(true)
    ratio = np.maximum(pred / true, true / pred)
    return {
        "abs_rel": float(np.mean(np.abs(pred - true) / true)),
        "sq_rel": float(np.mean((pred - true) ** 2 / true)),
        "rmse": float(np.sqrt(np.mean((pred - true) ** 2))),
        "rmse_log": float(np.sqrt(np.mean(log_diff ** 2))),
        "si_rmse_log": float(np.sqrt(max(np.mean(log_diff ** 2) - np.mean(log_diff) ** 2, 0.0))),
        "delta_1": float(np.mean(ratio < 1.25)),
        "delta_2": float(np.mean(ratio < 1.25 ** 2)),
        "delta_3": float(np.mean(ratio < 1.25 ** 3)),
    }


def median_scale(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Factor aligning the prediction's median to the ground truth's over the valid pixels."""
    mask = valid_depth_mask(prediction, truth)
    return float(np.median(truth[mask]) / np.median(prediction[mask])) if mask.any() else 1.0


class DepthErrorMeans:
    """Per-image depth errors, raw and after per-image median scaling, averaged over images."""

    def __init__(self):
        self.raw: list[dict] = []
        self.median_scaled: list[dict] = []
        self.scales: list[float] = []
        self.pixels = 0
        self.skipped = 0  # images without one valid pixel

    def add(self, prediction: np.ndarray, truth: np.ndarray) -> None:
        raw = depth_errors(prediction, truth)
        if raw is None:
            self.skipped += 1
            return
        scale = median_scale(prediction, truth)
        self.raw.append(raw)
        self.median_scaled.append(depth_errors(prediction * scale, truth))
        self.scales.append(scale)
        self.pixels += int(valid_depth_mask(prediction, truth).sum())

    def summary(self) -> dict:
        def mean(rows):
            return {k: float(np.mean([r[k] for r in rows])) for k in DEPTH_ERRORS} if rows else {}
        return {"images": len(self.raw), "images_without_valid_depth": self.skipped,
                "pixels": self.pixels, "raw": mean(self.raw),
                "median_scaled": mean(self.median_scaled),
                "median_scale_factor": float(np.median(self.scales)) if self.scales else
                float("nan")}
