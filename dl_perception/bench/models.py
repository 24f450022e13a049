"""`dl-perception bench`: throughput measured as ratios against a baseline in the same run, never
as absolute pass/fail times. The model-only part runs without ROS."""
from __future__ import annotations

import time

import numpy as np
import torch

from .. import models
from ..core.imaging import DecodedImage
from ..sim.synthetic import SyntheticCorridor


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


def bench_place_search(model: models.PerceptionModel, frames: list[DecodedImage],
                       places: int, device: torch.device, k: int = 20,
                       index_kinds: tuple[str, ...] = ("flat", "hnsw"), seed: int = 0) -> dict:
    """Per-query cost of place recognition: descriptor extraction (preprocess + forward, batch
    1) and the search of a `places`-entry database, each query timed in the same run.

    The database holds the descriptors of `frames` plus, up to `places`, noisy copies of them
    (Gaussian noise of 0.5x a descriptor's per-dimension spread, re-normalised): search cost
    depends on the count and dimension, and the copies keep the neighbourhood structure of real
    descriptors. Returns the extraction timing and one row per index kind."""
    from ..place.database import PlaceDatabase, model_fingerprint

    model = model.to(device).eval()
    descriptors, extraction = [], []
    with torch.inference_mode():
        for index, frame in enumerate(frames[:5] + frames):
            started = time.perf_counter()
            descriptor = model(model.preprocess(frame).to(device))["descriptor"].cpu().numpy()
            if index >= 5:
                extraction.append(time.perf_counter() - started)
                descriptors.append(descriptor[0])
    queries = np.stack(descriptors).astype(np.float32)
    rng = np.random.default_rng(seed)
    copies = queries[rng.integers(0, len(queries), max(places - len(queries), 0))]
    copies = copies + rng.normal(0, 0.5 / np.sqrt(queries.shape[1]), copies.shape)
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    entries = np.concatenate([queries, copies.astype(np.float32)])[:places]
    fingerprint = model_fingerprint(model)
    extraction_ms = np.asarray(extraction) * 1e3
    rows, exact_top = [], None
    for kind in index_kinds:
        database = PlaceDatabase(dim=entries.shape[1], model=fingerprint, index_kind=kind)
        database.add(entries)
        started = time.perf_counter()
        database.index  # built outside the timed searches
        build_s = time.perf_counter() - started
        search, top = [], []
        for query in queries[:5]:
            database.search(query, k)
        for query in queries:
            started = time.perf_counter()
            _, indices = database.search(query, k)
            search.append(time.perf_counter() - started)
            top.append(indices[0, 0])
        top = np.asarray(top)
        exact_top = top if exact_top is None and kind == "flat" else exact_top
        search_ms = np.asarray(search) * 1e3
        per_query = extraction_ms + search_ms
        rows.append({
            "index": kind, "places": len(database), "dim": int(entries.shape[1]),
            "build_s": build_s,
            "extract_ms_p50": float(np.percentile(extraction_ms, 50)),
            "search_ms_p50": float(np.percentile(search_ms, 50)),
            "search_ms_p99": float(np.percentile(search_ms, 99)),
            "search_share": float(search_ms.sum() / per_query.sum()),
            "top1_as_exact": float(np.mean(top == exact_top)) if exact_top is not None else None,
        })
    return {"queries": len(queries), "extract_ms_p50": float(np.percentile(extraction_ms, 50)),
            "rows": rows}
