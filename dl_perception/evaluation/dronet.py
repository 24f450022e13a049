"""`dl-perception eval dronet`: steering EVA and RMSE, collision accuracy, F1 and ROC-AUC, the
metrics of Loquercio et al. 2018."""
from __future__ import annotations

import cv2
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


def predict_samples(model, samples: list, device: torch.device,
                    batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Steering and collision probability of each sample's grey frame, cropped as the model
    crops (what training's DroNetData holds, read batch by batch)."""
    model.eval()
    steering, collision = [], []
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            crops = []
            for sample in samples[start:start + batch_size]:
                gray = cv2.imread(sample.image, cv2.IMREAD_GRAYSCALE)
                if gray is None:
                    raise ValueError(f"cannot read image {sample.image}")
                crops.append(model.crop_pixels(gray))
            images = torch.from_numpy(np.stack(crops).astype(np.float32) / 255.0)[:, None]
            out = model(images.to(device))
            steering.append(out["steering"].cpu().numpy())
            collision.append(out["collision_probability"].cpu().numpy())
    return np.concatenate(steering), np.concatenate(collision)


def evaluate_dronet(weights: str, data_dirs: list[str], device: torch.device) -> dict:
    from ..datasets.dronet import read_dronet_dataset
    from ..models.dronet import DroNet

    model = DroNet.from_checkpoint(weights).to(device)
    samples = [s for d in data_dirs for s in read_dronet_dataset(d)]
    steering, collision = predict_samples(model, samples, device)
    return dronet_metrics(steering, collision,
                          np.array([s.steering for s in samples], dtype=np.float32),
                          np.array([s.collision for s in samples], dtype=np.float32))
