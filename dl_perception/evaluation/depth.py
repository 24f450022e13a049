"""`dl-perception eval depth`: the error measures of Eigen et al. 2014 on RGB + depth folders,
computed on the depth image the node publishes (full camera resolution), raw and with per-image
median scaling. Invalid ground truth (0, inf, NaN) is masked."""
from __future__ import annotations

import time

import numpy as np
import torch

from ..datasets.depth import load_depth, load_rgb, read_depth_dataset
from ..imaging import DecodedImage
from ..models.depth import EigenDepth
from .metrics import DEPTH_ERRORS, DepthErrorMeans

LABELS = {
    "abs_rel": "abs rel",
    "sq_rel": "sq rel",
    "rmse": "RMSE (m)",
    "rmse_log": "RMSE log",
    "si_rmse_log": "scale-invariant RMSE log",
    "delta_1": "delta < 1.25",
    "delta_2": "delta < 1.25^2",
    "delta_3": "delta < 1.25^3",
}


def evaluate_depth(weights: str, data_dirs: list[str], device: torch.device, fmt: str = "auto",
                   stride: int = 1, min_depth: float = 0.0, max_depth: float = 0.0) -> dict:
    """Metrics over every `stride`-th frame of the folders; ground truth outside
    [min_depth, max_depth] (max 0 = no cap) is masked as well."""
    model = EigenDepth.from_checkpoint(weights).to(device).eval()
    overall, per_source = DepthErrorMeans(), {}
    started = time.time()
    frames = 0
    for directory in data_dirs:
        for sample in read_depth_dataset(directory, fmt)[::stride]:
            rgb = load_rgb(sample.image)
            truth = load_depth(sample.depth, sample.depth_scale)
            with np.errstate(invalid="ignore"):
                truth[truth < min_depth] = np.nan
                if max_depth > 0:
                    truth[truth > max_depth] = np.nan
            prediction = model.predict_image(DecodedImage(rgb, "rgb8"), device)
            if truth.shape != prediction.shape:
                raise ValueError(f"{sample.depth}: depth {truth.shape[1]}x{truth.shape[0]} does "
                                 f"not match its image {rgb.shape[1]}x{rgb.shape[0]}")
            overall.add(prediction, truth)
            per_source.setdefault(sample.source, DepthErrorMeans()).add(prediction, truth)
            frames += 1
    if frames == 0:
        raise ValueError("no frames to evaluate")
    return {"weights": weights, "frames": frames, "seconds": time.time() - started,
            **overall.summary(),
            "per_folder": {source: means.summary() for source, means in per_source.items()}}


def format_report(result: dict) -> str:
    lines = [f"  images {result['images']} (without valid depth: "
             f"{result['images_without_valid_depth']}), valid pixels {result['pixels']}, "
             f"median scale factor {result['median_scale_factor']:.3f}",
             f"  {'metric':26s} {'raw':>8s} {'median-scaled':>14s}"]
    for key in DEPTH_ERRORS:
        lines.append(f"  {LABELS[key]:26s} {result['raw'][key]:8.4f} "
                     f"{result['median_scaled'][key]:14.4f}")
    return "\n".join(lines)
