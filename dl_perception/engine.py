"""One inference engine for all the networks of the stack.

Per batch of frames on CUDA: one upload (pinned memory, non-blocking), then every model builds
its input from that one device tensor (`preprocess_tensor`); on the CPU, where nothing is
uploaded, each model's own OpenCV `preprocess` (fastest there). Each model runs under inference
mode in the precision and memory format chosen for it; outputs come back as float32 on the CPU.

Choices per model are measured, not assumed (`Engine.calibrate`): reduced precision (bf16 on the
CPU, fp16 on CUDA) and channels_last are kept only where they are faster and the outputs stay
within half the tolerance of fp32 on the calibration batch (the network's output schema,
models/outputs.py). On the CPU, frames are also spread over worker
threads, each with its share of the cores: small networks use two cores poorly (measured: LIFT
runs 1.35x faster on two threads than on one), two frames side by side use them fully.

No rclpy here: the benchmark and offline tools drive the engine directly.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .core import tensor_preprocess
from .core.device import REDUCED_PRECISION, select_device
from .core.imaging import DecodedImage
from .models.base import PerceptionModel

CALIBRATION_MARGIN = 0.5


@dataclasses.dataclass
class EngineOptions:
    device: str = "auto"
    precision: str = "auto"  # auto (measured) | fp32 | reduced (bf16 on CPU, fp16 on CUDA)
    channels_last: str = "auto"  # auto (measured) | on | off
    batch_size: int = 0  # frames per forward of the models that take batches; 0: 16 CUDA, 2 CPU
    preprocess: str = "auto"  # auto (device on CUDA, host on CPU) | device | host
    workers: int = 0  # worker threads (frames side by side); 0 = one per core (CPU), 1 (CUDA)
    compile: bool = False  # torch.compile the batchable models (measured by the benchmark)
    dense_tolerance: float = 0.02  # max |out - fp32| / max(1, max |fp32|) per output
    keypoint_tolerance: float = 0.10  # share of fp32 keypoints allowed without a match within 1 px


@dataclasses.dataclass
class ModelPlan:
    """What the engine runs for one model, and the measurements behind the choice."""

    name: str
    precision: str = "fp32"
    channels_last: bool = False
    execution: dict = dataclasses.field(default_factory=dict)  # the model's execution choices
    deviation: float = 0.0  # of the chosen variant against fp32
    candidates: list = dataclasses.field(default_factory=list)  # every variant measured


def _to_host(outputs: dict) -> dict:
    return {k: (v.detach().float() if torch.is_floating_point(v) else v).cpu()
            if torch.is_tensor(v) else v for k, v in outputs.items()}


def _split(outputs: dict, count: int) -> list[dict]:
    """Batched outputs -> one dict per frame (tensors whose first dimension is the batch)."""
    frames = [{} for _ in range(count)]
    for key, value in outputs.items():
        for index in range(count):
            per_frame = value[index:index + 1] if torch.is_tensor(value) and value.ndim > 0 \
                and value.shape[0] == count else value
            frames[index][key] = per_frame
    return frames


class Engine:
    def __init__(self, named_models: dict[str, PerceptionModel], options: EngineOptions | None = None):
        self.options = options or EngineOptions()
        self.device = select_device(self.options.device)
        self.models = {name: model.to(self.device).eval() for name, model in named_models.items()}
        self.plans = {name: ModelPlan(name) for name in self.models}
        self._runners = dict(self.models)
        self._local = threading.local()
        cores = os.cpu_count() or 1
        if self.device.type == "cuda":  # more workers: each its own CUDA stream
            self.workers = self.options.workers or 1
        else:
            self.workers = self.options.workers or max(1, min(cores, torch.get_num_threads()))
        self.threads_per_worker = max(1, torch.get_num_threads() // self.workers)
        self.batch_size = self.options.batch_size or (16 if self.device.type == "cuda" else 2)
        if self.options.preprocess not in ("auto", "device", "host"):
            raise ValueError(f"preprocess must be auto, device or host, not {self.options.preprocess}")
        # On the CPU there is no upload to save, and OpenCV's resampling (per frame, in the
        # worker) beats the dense resampling matrices that suit a GPU.
        self.device_preprocessing = (self.options.preprocess == "device" or (
            self.options.preprocess == "auto" and self.device.type == "cuda"))
        self._pool = ThreadPoolExecutor(self.workers) if self.workers > 1 else None
        if self.options.precision not in ("auto", "fp32", "reduced"):
            raise ValueError(f"precision must be auto, fp32 or reduced, not {self.options.precision}")
        if self.options.channels_last not in ("auto", "on", "off"):
            raise ValueError(f"channels_last must be auto, on or off, not {self.options.channels_last}")

    @property
    def reduced_dtype(self) -> torch.dtype:
        return REDUCED_PRECISION.get(self.device.type, torch.bfloat16)

    # --- running --------------------------------------------------------------------------
    def _autocast(self, plan: ModelPlan):
        if plan.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.reduced_dtype)

    def _prepare(self, frames: list[np.ndarray]):
        """What every model's input is made from: the uploaded batch (device preprocessing) or
        the frames themselves (host preprocessing)."""
        if self.device_preprocessing:
            return tensor_preprocess.upload(frames, self.device)
        return [DecodedImage(frame, "rgb8") for frame in frames]

    def _inputs(self, model: PerceptionModel, prepared) -> torch.Tensor:
        if self.device_preprocessing:
            return model.preprocess_tensor(prepared)
        return torch.cat([model.preprocess(image) for image in prepared]).to(self.device)

    def _run_model(self, name: str, prepared, plan: ModelPlan | None = None,
                   arguments: dict | None = None) -> list[dict]:
        """One model over prepared frames -> per-frame outputs on the device. `arguments`: the
        caller's per-call settings for `forward` (the plan adds its execution choices)."""
        plan = plan or self.plans[name]
        model, runner = self.models[name], self._runners[name]
        inputs = self._inputs(model, prepared)
        if plan.channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        keywords = {**(arguments or {}), **plan.execution}
        with torch.inference_mode(), self._autocast(plan):
            if model.batchable:
                return _split(runner(inputs, **keywords), len(inputs))
            return [runner(inputs[i:i + 1], **keywords) for i in range(len(inputs))]

    def _run_chunk(self, frames: list[np.ndarray], names: list[str],
                   arguments: dict | None = None) -> list[dict]:
        if self.device.type == "cpu" and getattr(self._local, "threads", None) != self.threads_per_worker:
            torch.set_num_threads(self.threads_per_worker)  # per worker thread
            self._local.threads = self.threads_per_worker
        with torch.inference_mode(), self._worker_stream():
            prepared = self._prepare(frames)
            per_model = {name: self._run_model(name, prepared,
                                               arguments=(arguments or {}).get(name))
                         for name in names}
            return [{name: _to_host(per_model[name][i]) for name in names}
                    for i in range(len(frames))]

    def _worker_stream(self):
        """A CUDA stream per worker thread, so workers overlap on the GPU."""
        if self.device.type != "cuda" or self.workers == 1:
            return contextlib.nullcontext()
        if getattr(self._local, "stream", None) is None:
            self._local.stream = torch.cuda.Stream(self.device)
        return torch.cuda.stream(self._local.stream)

    def run(self, frames: list[np.ndarray], names: list[str] | None = None,
            arguments: dict[str, dict] | None = None) -> list[dict]:
        """HxWx3 uint8 RGB frames (one size) -> per frame, {model name: outputs (float32, CPU)}.
        Frames go through in batches of `batch_size`, spread over the workers. `arguments`:
        model name -> per-call `forward` settings (e.g. LIFT's DetectionSettings)."""
        names = list(names or self.models)
        size = self.batch_size
        chunks = [frames[i:i + size] for i in range(0, len(frames), size)]
        if self._pool is None or len(chunks) == 1:
            results = [self._run_chunk(chunk, names, arguments) for chunk in chunks]
        else:
            results = list(self._pool.map(lambda chunk: self._run_chunk(chunk, names, arguments),
                                          chunks))
        return [frame for chunk in results for frame in chunk]

    def submit(self, frames: list[np.ndarray], names: list[str] | None = None):
        """Asynchronous `run` of one batch on a worker, for streaming callers: a Future of
        (per-frame outputs, seconds the worker spent on the batch)."""
        names = list(names or self.models)
        if self._pool is None:
            raise RuntimeError("submit needs worker threads (workers > 1)")

        def timed():
            started = time.perf_counter()
            outputs = self._run_chunk(frames, names)
            return outputs, time.perf_counter() - started
        return self._pool.submit(timed)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # --- choosing precision and memory format -------------------------------------------------
    def _time(self, name: str, prepared, plan: ModelPlan, repeats: int) -> tuple[float, list]:
        outputs = self._run_model(name, prepared, plan)  # warm-up (and oneDNN/cuDNN selection)
        times = []
        for _ in range(repeats):
            self._sync()
            started = time.perf_counter()
            outputs = self._run_model(name, prepared, plan)
            self._sync()
            times.append(time.perf_counter() - started)
        return float(np.median(times)) / len(prepared), outputs

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def calibrate(self, frames: list[np.ndarray], repeats: int = 3) -> dict[str, ModelPlan]:
        """Measure each model's variants on `frames` (one batch), under the threads a worker
        gets, and keep the fastest whose outputs stay within tolerance of fp32 NCHW: precision x
        memory format first, then each of the model's execution choices in turn."""
        opts = self.options
        precisions = {"auto": ["fp32", "reduced"], "fp32": ["fp32"], "reduced": ["reduced"]}[opts.precision]
        layouts = {"auto": [False, True], "on": [True], "off": [False]}[opts.channels_last]
        batch = frames[:self.batch_size]
        threads = torch.get_num_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads_per_worker)
        try:
            for name, model in self.models.items():
                self.plans[name] = self._calibrate_model(
                    name, model, self._prepare(batch if model.batchable else batch[:1]),
                    precisions, layouts, repeats)
        finally:
            torch.set_num_threads(threads)
        if opts.compile:
            for name, model in self.models.items():
                if model.batchable:
                    self._runners[name] = torch.compile(model, dynamic=False)
        return self.plans

    def _calibrate_model(self, name, model, sample, precisions, layouts, repeats) -> ModelPlan:
        opts = self.options
        defaults = model.default_execution()
        fp32_s, reference = self._time(name, sample, ModelPlan(name), repeats)
        candidates = []

        def measure(plan: ModelPlan, timed=None):
            seconds, outputs = timed or self._time(name, sample, plan, repeats)
            schema = model.outputs
            deviation = schema.deviation_over_frames(reference, outputs, opts.dense_tolerance)
            kind = schema.kind
            # half the tolerance: one calibration batch under-samples the stream
            limit = CALIBRATION_MARGIN * (opts.keypoint_tolerance if kind == "keypoints"
                                          else opts.dense_tolerance)
            candidates.append({
                "precision": plan.precision if plan.precision == "fp32"
                else str(self.reduced_dtype).split(".")[-1],
                "channels_last": plan.channels_last, "execution": dict(plan.execution),
                "ms_per_frame": seconds * 1e3, "deviation": deviation, "deviation_kind": kind,
                "tolerance": limit, "within_tolerance": deviation <= limit})
            return seconds, deviation, deviation <= limit

        best = None
        for precision in precisions:
            for channels_last in layouts:
                plan = ModelPlan(name, precision, channels_last, dict(defaults))
                model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
                reference_variant = (precision, channels_last) == ("fp32", False)
                seconds, deviation, ok = measure(plan, (fp32_s, reference) if reference_variant else None)
                if ok and (best is None or seconds < best[0]):
                    best = (seconds, plan, deviation)
        seconds, chosen, deviation = best
        model.to(memory_format=torch.channels_last if chosen.channels_last else torch.contiguous_format)
        for choice, values in model.execution_choices().items():
            for value in values[1:]:
                plan = dataclasses.replace(chosen, execution={**chosen.execution, choice: value})
                trial_seconds, trial_deviation, ok = measure(plan)
                if ok and trial_seconds < seconds:
                    seconds, chosen, deviation = trial_seconds, plan, trial_deviation
        chosen.deviation, chosen.candidates = deviation, candidates
        return chosen

    def apply_plan(self, name: str) -> None:
        """Put a model back in its plan's memory format (after something else, such as the
        benchmark's baseline, ran it in its defaults); execution choices are arguments of each
        run, never state of the model."""
        plan, model = self.plans[name], self.models[name]
        model.to(memory_format=torch.channels_last if plan.channels_last else torch.contiguous_format)

    def describe(self) -> dict:
        return {"device": str(self.device), "workers": self.workers,
                "threads_per_worker": self.threads_per_worker,
                "batch_size": self.batch_size, "compile": self.options.compile,
                "device_preprocessing": self.device_preprocessing,
                "plans": {name: dataclasses.asdict(plan) for name, plan in self.plans.items()}}
