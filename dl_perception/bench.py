"""`dl-perception bench`: throughput measured as ratios against a baseline in the same run, never
as absolute pass/fail times. The model-only part runs without ROS."""
from __future__ import annotations

import time

import numpy as np
import torch

from . import models
from .imaging import DecodedImage
from .synthetic import SyntheticCorridor


def synthetic_frames(count: int, width: int = 320, height: int = 240) -> list[DecodedImage]:
    corridor = SyntheticCorridor(width, height)
    return [DecodedImage(corridor.render(i * 0.1), "rgb8") for i in range(count)]


def bench_model(model: models.PerceptionModel, frames: list[DecodedImage], device: torch.device,
                warmup: int = 5) -> dict:
    """Preprocess + forward, batch 1, frame after frame: what a node does per frame."""
    model = model.to(device).eval()
    latencies = []
    with torch.inference_mode():
        for index, frame in enumerate(frames[:warmup] + frames):
            started = time.perf_counter()
            out = model(model.preprocess(frame).to(device))
            for value in out.values():
                value.cpu()
            if index >= warmup:
                latencies.append(time.perf_counter() - started)
    array = np.asarray(latencies) * 1e3
    return {"frames": len(frames), "fps": float(len(frames) / (array.sum() / 1e3)),
            "latency_ms_p50": float(np.percentile(array, 50)),
            "latency_ms_p99": float(np.percentile(array, 99))}


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(w) for c, w in zip(columns, widths)))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return "-" if value is None else str(value)


def bench_features(extract, frames: list[DecodedImage], warmup: int = 2) -> dict:
    """Frames/s and keypoints/s of a feature extractor (`extract(frame) -> number of keypoints`),
    frame after frame."""
    latencies, counts = [], []
    for index, frame in enumerate(frames[:warmup] + frames):
        started = time.perf_counter()
        count = extract(frame)
        if index >= warmup:
            latencies.append(time.perf_counter() - started)
            counts.append(count)
    total = float(np.sum(latencies))
    array = np.asarray(latencies) * 1e3
    return {"frames": len(frames), "fps": len(frames) / total,
            "keypoints_per_frame": float(np.mean(counts)),
            "keypoints_per_s": float(np.sum(counts) / total),
            "latency_ms_p50": float(np.percentile(array, 50)),
            "latency_ms_p99": float(np.percentile(array, 99))}
