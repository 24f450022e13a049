"""`dl-perception eval posenet`: median position error (m) and median rotation error (degrees,
2*acos|q1.q2|) as Kendall et al. report them, the means, and the share of frames within 0.5 m and
5 degrees."""
from __future__ import annotations

import numpy as np
import torch

from ..datasets.poses import PoseData
from ..models.posenet import PoseNet
from ..core.progress import progress
from .metrics import pose_errors

POSITION_THRESHOLD_M = 0.5
ROTATION_THRESHOLD_DEG = 5.0


def pose_metrics(positions: np.ndarray, quaternions: np.ndarray, true_positions: np.ndarray,
                 true_quaternions: np.ndarray) -> dict:
    position_error, rotation_error = pose_errors(positions, quaternions, true_positions,
                                                 true_quaternions)
    if len(position_error) == 0:
        return {"frames": 0}
    within_position = position_error <= POSITION_THRESHOLD_M
    within_rotation = rotation_error <= ROTATION_THRESHOLD_DEG
    return {
        "frames": int(len(position_error)),
        "median_position_error_m": float(np.median(position_error)),
        "median_rotation_error_deg": float(np.median(rotation_error)),
        "mean_position_error_m": float(np.mean(position_error)),
        "mean_rotation_error_deg": float(np.mean(rotation_error)),
        "within_0.5m": float(np.mean(within_position)),
        "within_5deg": float(np.mean(within_rotation)),
        "within_0.5m_5deg": float(np.mean(within_position & within_rotation)),
    }


def predict(model: PoseNet, data: PoseData, indices: np.ndarray, device: torch.device,
            batch_size: int = 64, show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Positions and unit quaternions of the centre crops."""
    model.eval()
    positions, quaternions = [], []
    with torch.inference_mode():
        for start in progress(range(0, len(indices), batch_size), desc="posenet", unit="batch",
                              enabled=show_progress):
            images, _, _ = data.batch(indices[start:start + batch_size], model.config.crop, None)
            out = model(images.to(device))
            positions.append(out["position"].double().cpu().numpy())
            quaternions.append(out["quaternion"].double().cpu().numpy())
    if not positions:
        return np.zeros((0, 3)), np.zeros((0, 4))
    return np.concatenate(positions), np.concatenate(quaternions)


def evaluate_posenet(weights: str, sources, device: torch.device, log=print) -> dict:
    model = PoseNet.from_checkpoint(weights).to(device)
    for source in sources:
        if source.frame_id != model.config.frame_id:
            log(f"warning: {source.path} gives poses in frame '{source.frame_id}', the model was "
                f"trained in '{model.config.frame_id}'")
    data = PoseData(model, sources, log)
    positions, quaternions = predict(model, data, np.arange(len(data)), device,
                                     show_progress=True)
    metrics = pose_metrics(positions, quaternions, data.positions, data.quaternions)
    metrics["skipped_no_pose"] = data.skipped_no_pose
    return metrics
