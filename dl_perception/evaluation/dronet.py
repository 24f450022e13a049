"""`dl-perception eval dronet`: steering EVA and RMSE, collision accuracy, F1 and ROC-AUC, the
metrics of Loquercio et al. 2018."""
from __future__ import annotations

import numpy as np
import torch

from .metrics import binary_scores, explained_variance, rmse


def dronet_metrics(steering: np.ndarray, collision: np.ndarray, true_steering: np.ndarray,
                   true_collision: np.ndarray) -> dict:
    """Metrics over the samples that carry each label (NaN = unlabelled)."""
    out: dict = {}
    has_s, has_c = np.isfinite(true_steering), np.isfinite(true_collision)
    out["steering_samples"] = int(has_s.sum())
    if has_s.any():
        out["steering_eva"] = explained_variance(steering[has_s], true_steering[has_s])
        out["steering_rmse"] = rmse(steering[has_s], true_steering[has_s])
    out["collision_samples"] = int(has_c.sum())
    if has_c.any():
        p = np.clip(collision[has_c], 1e-7, 1 - 1e-7)
        y = true_collision[has_c]
        out["collision_bce"] = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        scores = binary_scores(collision[has_c], y)
        out.update({f"collision_{k}": v for k, v in scores.items()})
    return out


def evaluate_dronet(weights: str, data_dirs: list[str], device: torch.device) -> dict:
    from ..datasets.dronet import read_dronet_dataset
    from ..models.dronet import DroNet
    from ..training.dronet import DroNetData, predict

    model = DroNet.from_checkpoint(weights).to(device)
    samples = [s for d in data_dirs for s in read_dronet_dataset(d)]
    data = DroNetData(samples, model)
    indices = np.arange(len(samples))
    steering, collision = predict(model, data, indices, device=device)
    return dronet_metrics(steering, collision, data.steering, data.collision)
