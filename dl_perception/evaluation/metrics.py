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


def pose_errors(positions: np.ndarray, quaternions: np.ndarray, true_positions: np.ndarray,
                true_quaternions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame position error (Euclidean, units of the positions) and rotation error in
    degrees, 2*acos|q1.q2| (sign- and scale-invariant), as PoseNet reports them."""
    from ..geometry import rotation_angle_deg

    position_error = np.linalg.norm(np.asarray(positions) - np.asarray(true_positions), axis=-1)
    return position_error, rotation_angle_deg(quaternions, true_quaternions)
