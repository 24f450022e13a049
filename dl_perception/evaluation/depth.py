"""`dl-perception eval depth`: the error measures of Eigen et al. 2014 on RGB + depth folders,
computed on the depth image the node publishes (full camera resolution), raw and with per-image
median scaling. Invalid ground truth (0, inf, NaN) is masked.

Every image is scored on the pixels that have ground truth AND lie inside the network's view;
ground-truth pixels outside the view (the sides of a frame wider or taller than the network
input, NaN in the published depth) are counted and reported, never silently dropped. With
`baseline="constant"` the same pixels of the same images are scored for the trivial predictor:
the median ground-truth depth of the image everywhere (so median scaling leaves it unchanged).
"""
from __future__ import annotations

import os
import time

import cv2
import numpy as np
import torch

from ..datasets.depth import load_rgb, load_sample_depth, read_depth_dataset
from ..core.imaging import DecodedImage
from ..models.depth import EigenDepth
from .metrics import DEPTH_ERRORS, DepthErrorMeans, depth_errors, paired_bootstrap_interval

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
BASELINES = ("constant", "none")


class SourceScores:
    """The network's and the baseline's errors on one dataset folder, plus pixel accounting."""

    def __init__(self, metric: bool):
        self.network, self.constant = DepthErrorMeans(), DepthErrorMeans()
        self.metric = metric  # False: relative ground truth (raw errors mean nothing)
        self.truth_pixels = 0  # valid ground truth
        self.outside_view = 0  # valid ground truth the network did not look at

    def summary(self, baseline: str) -> dict:
        result = {**self.network.summary(), "metric_ground_truth": self.metric,
                  "ground_truth_pixels": self.truth_pixels,
                  "outside_view_pixels": self.outside_view}
        if baseline == "constant":
            result["baseline_constant"] = self.constant.summary()
            result["ratio_interval"] = ratio_interval(
                [r["abs_rel"] for r in self.network.median_scaled],
                [r["abs_rel"] for r in self.constant.median_scaled])
        return result


def ratio_interval(network: list[float], constant: list[float]) -> list[float] | None:
    """95 % paired-bootstrap interval over the images of mean network abs rel / mean constant abs
    rel. Frames of one video are not independent, so the interval is if anything too narrow.
    None with fewer than two images scored alike."""
    network, constant = np.asarray(network, float), np.asarray(constant, float)
    if len(network) < 2 or len(network) != len(constant):
        return None
    return list(paired_bootstrap_interval(
        lambda i: network[i].mean() / max(constant[i].mean(), 1e-12), len(network)))


def constant_prediction(truth: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """The trivial baseline: the median ground truth of the scored pixels, everywhere."""
    value = float(np.median(truth[scored])) if scored.any() else 1.0
    return np.full(truth.shape, value, np.float32)


def error_map_panel(rgb: np.ndarray, truth: np.ndarray, prediction: np.ndarray,
                    constant_abs_rel: float | None) -> np.ndarray:
    """One row of four pictures (BGR uint8): the image, ground truth, the median-scaled
    prediction (both in one log-depth colour scale, black = no value) and the per-pixel abs rel
    error |pred - true| / true (0 black ... >= 0.5 white), with both images' abs rel printed."""
    scored = np.isfinite(truth) & np.isfinite(prediction) & (truth > 0)
    scale = float(np.median(truth[scored]) / np.median(prediction[scored])) if scored.any() else 1.0
    scaled = prediction * scale
    valid_truth = truth[np.isfinite(truth) & (truth > 0)]
    low, high = (np.log(np.percentile(valid_truth, [2, 98])) if valid_truth.size
                 else (0.0, 1.0))

    def colour(depth):
        with np.errstate(invalid="ignore", divide="ignore"):
            value = (np.log(depth) - low) / max(high - low, 1e-6)
        image = cv2.applyColorMap(np.clip(np.nan_to_num(value) * 255, 0, 255).astype(np.uint8),
                                  cv2.COLORMAP_TURBO)
        image[~(np.isfinite(depth) & (depth > 0))] = 0
        return image

    error = np.zeros(truth.shape, np.float32)
    error[scored] = np.abs(scaled[scored] - truth[scored]) / truth[scored]
    error_image = cv2.applyColorMap(np.clip(error / 0.5 * 255, 0, 255).astype(np.uint8),
                                    cv2.COLORMAP_INFERNO)
    error_image[~scored] = 0
    panels = [cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), colour(truth), colour(scaled), error_image]
    network_abs_rel = float(error[scored].mean()) if scored.any() else float("nan")
    captions = ["image", "ground truth", "network (median-scaled)",
                f"abs rel {network_abs_rel:.3f}" + (
                    f" (constant {constant_abs_rel:.3f})" if constant_abs_rel is not None else "")]
    for panel, caption in zip(panels, captions):
        size = max(0.35, panel.shape[1] / 900)
        cv2.putText(panel, caption, (5, int(22 * size / 0.5)), cv2.FONT_HERSHEY_SIMPLEX, size,
                    (255, 255, 255), max(1, int(2 * size)), cv2.LINE_AA)
    return np.concatenate(panels, axis=1)


def evaluate_depth(weights: str, data_dirs: list[str], device: torch.device, fmt: str = "auto",
                   stride: int = 1, min_depth: float = 0.0, max_depth: float = 0.0,
                   baseline: str = "constant", error_maps: str | None = None,
                   error_maps_per_set: int = 4, doffs: float = 0.0) -> dict:
    """Metrics over every `stride`-th frame of the folders; ground truth outside
    [min_depth, max_depth] (max 0 = no cap) is masked as well. `error_maps`: a folder that
    receives `error_maps_per_set` pictures per dataset folder (evenly spaced frames)."""
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline '{baseline}' (one of {', '.join(BASELINES)})")
    model = EigenDepth.from_checkpoint(weights).to(device).eval()
    overall, per_source = SourceScores(True), {}
    started = time.time()
    frames = 0
    for directory in data_dirs:
        samples = read_depth_dataset(directory, fmt, doffs=doffs)[::stride]
        picture_every = max(1, len(samples) // max(1, error_maps_per_set))
        for index, sample in enumerate(samples):
            rgb = load_rgb(sample.image)
            truth = load_sample_depth(sample)
            with np.errstate(invalid="ignore"):
                truth[truth < min_depth] = np.nan
                if max_depth > 0:
                    truth[truth > max_depth] = np.nan
            prediction = model.predict_image(DecodedImage(rgb, "rgb8"), device)
            if truth.shape != prediction.shape:
                raise ValueError(f"{sample.depth}: depth {truth.shape[1]}x{truth.shape[0]} does "
                                 f"not match its image {rgb.shape[1]}x{rgb.shape[0]}")
            source = per_source.setdefault(sample.source, SourceScores(sample.metric))
            overall.metric &= sample.metric
            has_truth = np.isfinite(truth) & (truth > 0)
            scored = has_truth & np.isfinite(prediction)
            constant = constant_prediction(truth, scored)
            constant[~scored] = np.nan  # the baseline is scored on the network's pixels only
            for scores in (overall, source):
                scores.network.add(prediction, truth)
                scores.constant.add(constant, truth)
                scores.truth_pixels += int(has_truth.sum())
                scores.outside_view += int((has_truth & ~scored).sum())
            if error_maps and index % picture_every == 0 and \
                    index // picture_every < error_maps_per_set:
                constant_errors = depth_errors(constant, truth) if baseline == "constant" else None
                panel = error_map_panel(rgb, truth, prediction,
                                        constant_errors["abs_rel"] if constant_errors else None)
                name = os.path.basename(os.path.normpath(sample.source)) or "data"
                os.makedirs(error_maps, exist_ok=True)
                cv2.imwrite(os.path.join(error_maps, f"{name}_{index:04d}.png"), panel)
            frames += 1
    if frames == 0:
        raise ValueError("no frames to evaluate")
    return {"weights": weights, "frames": frames, "seconds": time.time() - started,
            "baseline": baseline, **overall.summary(baseline),
            "per_folder": {name: scores.summary(baseline) for name, scores in per_source.items()}}


def _table(result: dict) -> list[str]:
    lines = [f"  images {result['images']} (without valid depth: "
             f"{result['images_without_valid_depth']}), ground-truth pixels "
             f"{result['ground_truth_pixels']}, outside the network's view (not scored) "
             f"{result['outside_view_pixels']}, scored {result['pixels']}, median scale factor "
             f"{result['median_scale_factor']:.3f}"]
    constant = result.get("baseline_constant")
    metric = result["metric_ground_truth"]
    header = f"  {'metric':26s} {'raw':>8s} {'median-scaled':>14s}"
    if constant:
        header += f" {'constant (median GT)':>21s}"
    if not metric:
        lines.append("  relative ground truth (uncalibrated disparity): raw errors are not "
                     "meaningful, compare the median-scaled column")
    lines.append(header)
    for key in DEPTH_ERRORS:
        line = f"  {LABELS[key]:26s} {result['raw'][key]:8.4f} " \
               f"{result['median_scaled'][key]:14.4f}"
        if constant:
            line += f" {constant['median_scaled'][key]:21.4f}"
        lines.append(line)
    if constant:
        ratio = result["median_scaled"]["abs_rel"] / max(constant["median_scaled"]["abs_rel"],
                                                          1e-12)
        interval = result.get("ratio_interval")
        lines.append(f"  median-scaled abs rel, network / constant baseline: {ratio:.3f}"
                     + (f" (95 % interval over the images {interval[0]:.3f}-{interval[1]:.3f})"
                        if interval else ""))
    return lines


def format_report(result: dict) -> str:
    lines = _table(result)
    if len(result["per_folder"]) > 1:
        for name, folder in result["per_folder"].items():
            lines.append(f" {name}:")
            lines += _table(folder)
    return "\n".join(lines)
