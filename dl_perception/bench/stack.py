"""`dl-perception bench`: the whole stack on one camera stream, engine against a naive baseline
measured in the same run.

Naive baseline: per frame, each model in turn runs its own `preprocess` on the CPU image, eager
fp32 at batch 1 (under no_grad), and its outputs are copied back. Engine: dl_perception.engine
(one upload, device preprocessing, measured precision/layout, batches, CPU worker threads).

Modes, in the manner of ros2_benchmark: free-run (all frames available at once: throughput),
fixed rate (frames arrive at a set rate into a bounded queue; frames that find it full are
dropped; latency = result time - arrival time) and peak (the highest probed rate with < 5%
drops). No rclpy: the ROS path is measured by dl_perception.ros.bench.stack.
"""
from __future__ import annotations

import os
import queue
import resource
import threading
import time

import numpy as np
import torch

from .. import models
from ..engine import Engine, EngineOptions
from ..core.imaging import DecodedImage
from ..core.paths import shipped_weights

STACK = ("dronet", "lift", "netvlad", "posenet", "depth")
PEAK_MAX_DROPS = 0.05


def load_stack(preset: str, names=STACK, weights: dict | None = None) -> tuple[dict, dict]:
    """Models of the stack: the given or shipped checkpoint for the cpu preset, else the preset's
    architecture freshly initialised (timings do not depend on the weights). Returns the models
    and where each came from."""
    loaded, sources = {}, {}
    for name in names:
        path = (weights or {}).get(name) or shipped_weights(name)
        if preset == "cpu" and os.path.isfile(path):
            loaded[name] = models.load(path, expected=name)
            sources[name] = path
        else:
            loaded[name] = models.create(name, preset=preset)
            sources[name] = f"{preset} preset, initialised weights"
    return loaded, sources


def generated_frames(count: int, width: int, height: int) -> list[np.ndarray]:
    from .models import synthetic_frames
    distinct = synthetic_frames(min(count, 24), width, height)
    return [distinct[i % len(distinct)].pixels for i in range(count)]


def sequence_frames(folder: str, count: int, width: int, height: int) -> list[np.ndarray]:
    """RGB frames of a recorded sequence (docs/datasets.md), resized to width x height."""
    import cv2

    from ..datasets.sequence import read_sequence

    frames = []
    for frame in read_sequence(folder).frames[:count]:
        frames.append(cv2.resize(frame.load_rgb(), (width, height), interpolation=cv2.INTER_AREA))
    if not frames:
        raise ValueError(f"{folder}: no readable frames")
    return [frames[i % len(frames)] for i in range(count)]


def _percentiles(seconds) -> dict:
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        return {"latency_ms_p50": None, "latency_ms_p99": None}
    return {"latency_ms_p50": float(np.percentile(ms, 50)),
            "latency_ms_p99": float(np.percentile(ms, 99))}


class MemoryProbe:
    """Peak GPU memory (CUDA) or peak resident set of the process (CPU) over a phase."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        else:  # Linux reports kilobytes; monotonic over the process
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return False


def run_naive(stack: dict, frames: list[np.ndarray], device: torch.device) -> tuple[dict, list]:
    """The baseline: per frame, each model's own preprocess + eager fp32 forward at batch 1."""
    per_model = {name: [] for name in stack}
    per_frame, outputs = [], []
    for model in stack.values():
        model.to(device=device, memory_format=torch.contiguous_format).eval()
    with torch.no_grad():
        for pixels in frames:
            image = DecodedImage(pixels, "rgb8")
            frame_started = time.perf_counter()
            results = {}
            for name, model in stack.items():
                started = time.perf_counter()
                out = model(model.preprocess(image).to(device))
                results[name] = {k: v.detach().float().cpu() if torch.is_floating_point(v) else v.cpu()
                                 for k, v in out.items()}
                per_model[name].append(time.perf_counter() - started)
            per_frame.append(time.perf_counter() - frame_started)
            outputs.append(results)
    return {"per_model": per_model, "per_frame": per_frame}, outputs


def _summary(path: str, frames: int, seconds: float, latencies, memory: MemoryProbe, **extra) -> dict:
    return {"path": path, "frames": frames, "fps": frames / seconds if seconds > 0 else None,
            **_percentiles(latencies), "peak_memory_mb": getattr(memory, "peak_mb", None), **extra}


def run_engine_free(engine: Engine, frames: list[np.ndarray], names=None) -> tuple[float, list, list]:
    """All frames available at once: total seconds, per-frame latency (its batch's processing
    time: queueing is what the fixed-rate mode measures), outputs."""
    size = engine.batch_size
    started = time.perf_counter()
    if engine.workers > 1:
        futures = [engine.submit(frames[i:i + size], names) for i in range(0, len(frames), size)]
        latencies, outputs = [], []
        for future in futures:
            chunk, seconds = future.result()
            latencies += [seconds] * len(chunk)
            outputs += chunk
    else:
        latencies, outputs = [], []
        for i in range(0, len(frames), size):
            chunk_started = time.perf_counter()
            chunk = engine.run(frames[i:i + size], names)
            latencies += [time.perf_counter() - chunk_started] * len(chunk)
            outputs += chunk
    return time.perf_counter() - started, latencies, outputs


def run_engine_at_rate(engine: Engine, frames: list[np.ndarray], rate: float, duration: float,
                       queue_depth: int | None = None) -> dict:
    """Frames arrive at `rate` for `duration` s into a bounded queue (full -> dropped); workers
    take up to batch_size waiting frames at a time."""
    depth = queue_depth or engine.batch_size * engine.workers
    waiting: queue.Queue = queue.Queue(maxsize=depth)
    latencies, lock = [], threading.Lock()
    sent = dropped = 0
    done = threading.Event()

    def worker():
        while not (done.is_set() and waiting.empty()):
            try:
                batch = [waiting.get(timeout=0.05)]
            except queue.Empty:
                continue
            while len(batch) < engine.batch_size:
                try:
                    batch.append(waiting.get_nowait())
                except queue.Empty:
                    break
            engine._run_chunk([pixels for _, pixels in batch], list(engine.models))
            finished = time.perf_counter()
            with lock:
                latencies.extend(finished - arrived for arrived, _ in batch)

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(engine.workers)]
    for thread in workers:
        thread.start()
    started = time.perf_counter()
    while True:
        due = started + sent / rate
        if due - started >= duration:
            break
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        try:
            waiting.put_nowait((time.perf_counter(), frames[sent % len(frames)]))
        except queue.Full:
            dropped += 1
        sent += 1
    done.set()
    for thread in workers:
        thread.join()
    return {"rate_hz": rate, "sent": sent, "dropped": dropped,
            "drop_share": dropped / max(sent, 1), "processed": len(latencies),
            **_percentiles(latencies)}


def find_peak(engine: Engine, frames: list[np.ndarray], throughput: float,
              min_seconds: float = 3.0) -> dict:
    """ros2_benchmark-style peak: probe rates around the free-run throughput, highest first, and
    report the first with < 5% drops. Each probe sends at least ten times the queue's depth:
    the queue absorbs its depth of frames before it drops any, so with fewer frames a rate 20%
    above the throughput would still pass (measured: a peak 1.2x the free-run rate with four)."""
    probes = []
    min_frames = max(20, 10 * engine.batch_size * engine.workers)
    for factor in (2.0, 1.5, 1.2, 1.0, 0.85, 0.7, 0.5, 0.3):
        rate = throughput * factor
        probe = run_engine_at_rate(engine, frames, rate, max(min_seconds, min_frames / rate))
        probes.append(probe)
        if probe["drop_share"] < PEAK_MAX_DROPS:
            return {"peak_hz": rate, "probes": probes}
    return {"peak_hz": None, "probes": probes}


def compare_outputs(reference: list[dict], candidate: list[dict], engine: Engine) -> dict:
    """Per model: the deviation of the engine's outputs from the baseline's over all frames
    (dense outputs stacked, so the scale is the outputs' range over the run; keypoints: the mean
    unmatched share per frame), and whether it is within the engine's tolerance."""
    report = {}
    for name in engine.models:
        schema = engine.models[name].outputs
        deviation = schema.deviation_over_frames([r[name] for r in reference],
                                                 [c[name] for c in candidate],
                                                 engine.options.dense_tolerance)
        kind = schema.kind
        limit = (engine.options.keypoint_tolerance if kind == "keypoints"
                 else engine.options.dense_tolerance)
        report[name] = {"deviation": deviation, "kind": kind, "tolerance": limit,
                        "within_tolerance": deviation <= limit}
    return report


def run_stack_bench(preset: str = "cpu", frames: list[np.ndarray] | None = None,
                    options: EngineOptions | None = None, names=STACK, weights=None,
                    rate: float | None = None, peak: bool = True, per_model: bool = True,
                    rounds: int = 2, log=print) -> dict:
    """The whole benchmark; returns the JSON-ready result (rows for the table included)."""
    options = options or EngineOptions()
    frames = frames if frames is not None else generated_frames(16, 640, 480)
    stack, sources = load_stack(preset, names, weights)
    engine = Engine(stack, options)
    device = engine.device
    height, width = frames[0].shape[:2]
    log(f"stack {', '.join(stack)} ({preset} preset), {len(frames)} frames {width}x{height}, "
        f"device {device}")
    threads = torch.get_num_threads()

    log("calibrating the engine (precision and memory format per model)")
    engine.calibrate(frames)
    for name, plan in engine.plans.items():
        log(f"  {name:8s} {plan.precision:7s} channels_last={plan.channels_last} "
            f"deviation {plan.deviation:.2e}")

    # Baseline and engine alternate, round after round, so both see the same machine load.
    run_naive(stack, frames[:2], device)  # warm-up
    run_engine_free(engine, frames[:engine.batch_size])  # warm-up
    naive = {"per_model": {name: [] for name in stack}, "per_frame": []}
    naive_memory, engine_memory = MemoryProbe(device), MemoryProbe(device)
    seconds, latencies = 0.0, []
    for _ in range(rounds):
        with naive_memory:
            timing, naive_outputs = run_naive(stack, frames, device)
        naive["per_frame"] += timing["per_frame"]
        for name in stack:
            naive["per_model"][name] += timing["per_model"][name]
        for name in stack:  # the engine's layout and execution choices, undone by the baseline
            engine.apply_plan(name)
        with engine_memory:
            round_seconds, round_latencies, engine_outputs = run_engine_free(engine, frames)
        torch.set_num_threads(threads)
        seconds += round_seconds
        latencies += round_latencies
    count = len(frames) * rounds
    naive_seconds = float(np.sum(naive["per_frame"]))
    throughput = count / seconds
    rows = [_summary("naive stack (eager fp32, batch 1, one model after another)", count,
                     naive_seconds, naive["per_frame"], naive_memory, ratio=1.0),
            _summary("engine stack", count, seconds, latencies, engine_memory,
                     ratio=naive_seconds / seconds)]
    if per_model:
        for name in stack:
            model_seconds = float(np.sum(naive["per_model"][name]))
            rows.append(_summary(f"  {name} naive", count, model_seconds,
                                 naive["per_model"][name], naive_memory, ratio=1.0))
            model_time, model_latencies = 0.0, []
            with MemoryProbe(device) as model_memory:
                for _ in range(rounds):
                    round_seconds, round_latencies, _ = run_engine_free(engine, frames, [name])
                    model_time += round_seconds
                    model_latencies += round_latencies
            torch.set_num_threads(threads)
            rows.append(_summary(f"  {name} engine", count, model_time, model_latencies,
                                 model_memory, ratio=model_seconds / model_time))
    agreement = compare_outputs(naive_outputs, engine_outputs, engine)
    result = {"preset": preset, "device": str(device), "frame_size": [width, height],
              "frames": len(frames), "rounds": rounds, "torch": torch.__version__, "threads": threads,
              "sources": sources, "engine": engine.describe(), "rows": rows,
              "outputs_vs_naive": agreement,
              "stack_ratio": rows[1]["ratio"]}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    if rate:
        result["fixed_rate"] = run_engine_at_rate(engine, frames, rate,
                                                  max(3.0, 2 * len(frames) / rate))
    if peak:
        result["peak"] = find_peak(engine, frames, throughput)
    torch.set_num_threads(threads)
    engine.close()
    return result
