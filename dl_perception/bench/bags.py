"""`dl-perception bench process`: frames/s of offline bag processing against the model alone
(preprocess + forward on the same decoded frames) in the same run. The gap is what reading,
deserialising, decoding and writing the bag cost."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import torch
import yaml

from .. import models
from ..core import rosmsg
from .models import bench_model, synthetic_frames
from ..core.device import select_device
from ..core.imaging import decode
from ..core.paths import resolve_weights
from ..bags.process import process_bag
from ..bags.reader import BagReader
from ..bags.writer import BagWriter


def synthetic_bag(path: str, frames: int, image_hz: float = 30.0, value_hz: float = 0.0,
                  value_topic: str = "/bench/value") -> None:
    """320x240 rgb8 corridor frames on /camera/image_raw at `image_hz` (and std_msgs/Float32 on
    `value_topic` at `value_hz` over the same time), logged at their stamps."""
    start = 1_000_000_000_000
    pictures = synthetic_frames(min(frames, 50))
    with BagWriter(path) as bag:
        for index in range(frames):
            stamp = start + int(round(index * 1e9 / image_hz))
            frame = pictures[index % len(pictures)]
            bag.write("/camera/image_raw", stamp, rosmsg.image(
                frame.pixels, frame.encoding, rosmsg.header(stamp, "camera_optical_frame")))
        for index in range(int(frames / image_hz * value_hz)):
            bag.write(value_topic, start + int(round(index * 1e9 / value_hz)),
                      rosmsg.float32(index))


def bench_process(frames: int = 200, weights: str | None = None, device: str = "cpu",
                  bag: str | None = None, rounds: int = 3) -> dict:
    """Frames/s of both paths from their median per-frame wall time (robust to the bursts of
    load a shared machine has; the means are reported beside them), medians over `rounds`
    interleaved rounds. Ratio = process over model."""
    weights = resolve_weights("dronet", weights or "")
    device = select_device(device)
    with tempfile.TemporaryDirectory() as folder:
        if bag is None:
            bag = os.path.join(folder, "input")
            synthetic_bag(bag, frames)
            source = "a synthetic 320x240 rgb8 bag"
        else:
            source = bag
        with BagReader(bag) as reader:
            decoded = [decode(reader.deserialize(m)) for m in reader.messages(
                ["/camera/image_raw"])][:frames]
        config = os.path.join(folder, "config.yaml")
        with open(config, "w") as handle:
            yaml.safe_dump({"dronet_node": {"ros__parameters": {
                "weights": weights, "device": str(device)}}}, handle)
        model = models.load(weights, expected="dronet")
        model_runs, process_runs = [], []
        for round_index in range(rounds):  # interleaved, so both see the same machine load
            model_runs.append(bench_model(model, decoded, device))
            process_runs.append(process_bag(bag, config, os.path.join(folder, f"out{round_index}"),
                                            show_progress=False))
    model_p50 = float(np.median([r["latency_ms_p50"] for r in model_runs]))
    process_p50 = float(np.median([np.percentile(r.frame_times_s, 50) * 1e3
                                   for r in process_runs]))
    rows = [{"path": "model (preprocess+forward)", "frames": len(decoded),
             "fps": float(np.mean([r["fps"] for r in model_runs])),
             "frame_ms_p50": model_p50, "fps_at_p50": 1e3 / model_p50},
            {"path": "process (read, decode, model, write)", "frames": process_runs[0].frames,
             "fps": float(np.mean([r.frames_per_s for r in process_runs])),
             "frame_ms_p50": process_p50, "fps_at_p50": 1e3 / process_p50}]
    rows[1]["ratio_to_model"] = rows[1]["fps_at_p50"] / rows[0]["fps_at_p50"]
    return {"device": str(device), "frames": len(decoded), "source": source,
            "threads": torch.get_num_threads(), "rows": rows}
