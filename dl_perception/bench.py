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


def bench_frames(count: int, distinct: int = 50) -> list[DecodedImage]:
    """`count` 320x240 frames cycling through at most `distinct` rendered ones."""
    frames = synthetic_frames(min(count, distinct))
    return (frames * (count // len(frames) + 1))[:count]


def bench_model(model: models.PerceptionModel, frames: list[DecodedImage], device: torch.device,
                warmup: int = 5, postprocess=None) -> dict:
    """Preprocess + forward (+ `postprocess(outputs, frame)`), batch 1, frame after frame: what a
    node does per frame."""
    model = model.to(device).eval()
    latencies = []
    with torch.inference_mode():
        for index, frame in enumerate(frames[:warmup] + frames):
            started = time.perf_counter()
            out = model(model.preprocess(frame).to(device))
            for value in out.values():
                value.cpu()
            if postprocess is not None:
                postprocess(out, frame)
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
