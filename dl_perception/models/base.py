"""The interface every network implements, so nodes, training, evaluation and the benchmark treat
them alike: a config dataclass with named presets, `preprocess` from a decoded frame to a batch
tensor, `forward` returning a dict of named outputs, and checkpoint save/load."""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors  # torch is pinned (setup.py)

from ..core.checkpoint import (Checkpoint, CheckpointError, check_tensor_values, checked_config,
                               load_tensors, read_header, save_checkpoint)
from ..core.preprocessing import PreprocessSpec, require_preprocessing
from ..core.imaging import DecodedImage

# a checkpoint may declare this many times the parameters of the model's largest preset
PARAMETER_BUDGET_FACTOR = 4


class PerceptionModel(nn.Module):
    name: ClassVar[str]
    Config: ClassVar[type]
    # preset name -> keyword overrides of Config; "cpu" is the default, "paper" the published one
    presets: ClassVar[dict[str, dict]] = {"cpu": {}}
    # False where `forward` takes one frame at a time (the engine then runs frames one by one)
    batchable: ClassVar[bool] = True
    # models/outputs.py schema of `forward`'s dict: its fields, and how the engine compares a
    # reduced-precision run with fp32
    outputs: ClassVar[object]
    # Config field -> (low, high) for every number the field holds: a checkpoint's config is
    # refused outside them. Fields not named are type-checked only (numbers finite, integers
    # within a C int), so name every field that sizes an input or an allocation.
    config_bounds: ClassVar[dict[str, tuple]] = {}
    # Parameters a checkpoint may declare; 0: PARAMETER_BUDGET_FACTOR x the largest preset's
    max_parameters: ClassVar[int] = 0

    def __init__(self, config):
        super().__init__()
        self.config = config

    @classmethod
    def make_config(cls, preset: str = "cpu", **overrides):
        if preset not in cls.presets:
            raise ValueError(f"{cls.name}: unknown preset '{preset}' (have {sorted(cls.presets)})")
        return cls.Config(**{**cls.presets[preset], **overrides})

    def preprocessing_spec(self) -> PreprocessSpec:
        """What the network takes, declared from its config (core/preprocessing.py runs it on
        the host and on the device; checkpoints store it and are checked against it)."""
        raise NotImplementedError

    def preprocess(self, image: DecodedImage) -> torch.Tensor:
        """One decoded frame -> a 1xCxHxW float tensor on the CPU."""
        return self.preprocessing_spec().host(image)

    def preprocess_tensor(self, frames: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W uint8 RGB frames on any device -> the input batch `preprocess` would
        make of them one by one, on that device."""
        return self.preprocessing_spec().device(frames)

    def forward(self, batch: torch.Tensor, **arguments) -> dict[str, torch.Tensor]:
        """The network's outputs by name. Per-call settings and execution choices are keyword
        arguments: a model holds no per-call state, so one model serves callers with different
        settings."""
        raise NotImplementedError

    def execution_choices(self) -> dict[str, list]:
        """Run-time choices that change how, not what, the model computes: keyword argument of
        `forward` -> candidate values, the first being the default. The engine measures them and
        keeps the fastest whose outputs stay within tolerance."""
        return {}

    def default_execution(self) -> dict:
        return {choice: values[0] for choice, values in self.execution_choices().items()}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def to_checkpoint(self, info: dict | None = None) -> Checkpoint:
        return Checkpoint(
            model=self.name,
            config=dataclasses.asdict(self.config),
            state_dict=self.state_dict(),
            preprocessing=self.preprocessing_spec().to_metadata(),
            info=info or {},
        )

    def save(self, path: str, info: dict | None = None) -> None:
        save_checkpoint(path, self.to_checkpoint(info))

    @classmethod
    def checked_config(cls, values: dict):
        """A checkpoint's config as a Config, or a CheckpointError naming the bad field."""
        return checked_config(cls.Config, values, cls.config_bounds, list(cls.presets.values()))

    @classmethod
    def meta_model(cls, config) -> "PerceptionModel":
        """The model with shapes and no storage (torch's meta device): what a config would
        allocate, known before allocating it."""
        try:
            with _ShapesOnly():
                return cls(config)
        except Exception as error:  # a constructor refusing the config, whatever it raises
            raise CheckpointError(f"{cls.name}: the config does not make a model "
                                  f"({type(error).__name__}: {error})") from None

    @classmethod
    def parameter_budget(cls) -> int:
        if cls.max_parameters:
            return cls.max_parameters
        budget = _BUDGETS.get(cls)
        if budget is None:
            largest = max(_parameter_count(cls.meta_model(cls.make_config(preset)))
                          for preset in cls.presets)
            budget = _BUDGETS[cls] = PARAMETER_BUDGET_FACTOR * largest
        return budget

    @classmethod
    def check_parameter_budget(cls, config) -> "PerceptionModel":
        """The meta model of `config`, refused when it holds more parameters than the budget."""
        skeleton = cls.meta_model(config)
        count, budget = _parameter_count(skeleton), cls.parameter_budget()
        if count > budget:
            raise CheckpointError(f"{cls.name}: the config declares {count:,} parameters, more "
                                  f"than the {budget:,} this model allows")
        return skeleton

    def check_runs(self, source: str) -> None:
        """One small synthetic frame through `preprocess` and `forward`: a config that would
        break every frame, or weights whose outputs are not finite, are refused at load."""
        rows, cols = np.mgrid[0:48, 0:64]
        pixels = np.stack([rows * 5, cols * 4, (rows * cols) % 251], axis=-1).astype(np.uint8)
        try:
            with torch.inference_mode():
                outputs = self(self.preprocess(DecodedImage(pixels, "rgb8")))
        except Exception as error:  # whatever breaks on a sound frame breaks on every frame
            raise CheckpointError(f"{source}: the {self.name} model fails on a test frame "
                                  f"({type(error).__name__}: {str(error)[:300]})") from None
        bad = [name for name, value in outputs.items() if torch.is_tensor(value)
               and value.is_floating_point() and not bool(torch.isfinite(value).all())]
        if bad:
            raise CheckpointError(f"{source}: the {self.name} model's {', '.join(bad)} are not "
                                  "finite on a test frame (weights that make NaN from finite "
                                  "inputs, e.g. negative batch-norm variances)")

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint | str) -> "PerceptionModel":
        """The one loader: config checked against the schema and bounds, parameter count and
        tensor shapes checked on the meta model, then tensors read and checked for
        non-finite values, then the model built, loaded and run once on a test frame."""
        if isinstance(checkpoint, str):
            header = read_header(checkpoint, expected_model=cls.name)
            source, values, info, shapes = checkpoint, header.config, header.info, header.tensors
            stored_preprocessing = header.preprocessing
        else:
            if checkpoint.model != cls.name:
                raise CheckpointError(f"checkpoint holds '{checkpoint.model}', expected '{cls.name}'")
            source, values, info = f"{cls.name} checkpoint", checkpoint.config, checkpoint.info
            shapes = {k: tuple(v.shape) for k, v in checkpoint.state_dict.items()}
            stored_preprocessing = checkpoint.preprocessing
        try:
            config = cls.checked_config(values)
            skeleton = cls.check_parameter_budget(config)
        except CheckpointError as error:
            raise CheckpointError(f"{source}: {error}") from None
        require_preprocessing(stored_preprocessing, skeleton.preprocessing_spec(), source)
        expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
        missing = [k for k in expected if k not in shapes]
        unexpected = [k for k in shapes if k not in expected]
        wrong_shape = [k for k in shapes if k in expected and expected[k] != shapes[k]]
        if missing or unexpected or wrong_shape:
            raise CheckpointError(
                f"{cls.name} checkpoint does not fit the model: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}, wrong shape {wrong_shape[:5]}")
        if isinstance(checkpoint, str):
            state = load_tensors(checkpoint)
        else:
            state = checkpoint.state_dict
            check_tensor_values(state, source)
        model = cls(config)
        model.load_state_dict(state)
        model.checkpoint_info = info
        model.eval()
        model.check_runs(source)
        return model


_BUDGETS: dict[type, int] = {}


class _ShapesOnly(TorchFunctionMode):
    """Build a model with its parameters on torch's meta device (shapes, no storage), quickly.

    Plain `with torch.device("meta")` also puts arange, tensor() and small random draws on meta,
    where torch runs them through Python decompositions that import torch._dynamo and sympy on
    first use (2-8 s). Those helper tensors stay real here (they are small: created from Python
    data, or random draws of at most SMALL_DRAW elements), in-place initialisation of meta tensors
    is skipped (it cannot change a shape), and every other constructor makes meta tensors."""

    REAL = {torch.arange, torch.tensor, torch.as_tensor, torch.linspace, torch.logspace}
    RANDOM = {torch.randn, torch.rand}
    SMALL_DRAW = 1 << 16

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if func in self.RANDOM and kwargs.get("device") is None:
            dims = args[0] if len(args) == 1 and not isinstance(args[0], int) else args
            if math.prod(int(d) for d in dims) > self.SMALL_DRAW:
                kwargs.pop("generator", None)
                return torch.empty(*args, **kwargs, device="meta")
            kwargs["device"] = "cpu"
        elif func in _device_constructors() and kwargs.get("device") is None:
            kwargs["device"] = "cpu" if func in self.REAL else "meta"
        elif name.endswith("_") and not name.startswith("__") and name != "requires_grad_":
            target = args[0] if args else kwargs.get("tensor", kwargs.get("self"))
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


def _parameter_count(model: nn.Module) -> int:
    return sum(tensor.numel() for tensor in model.state_dict().values())
