"""The interface every network implements, so nodes, training, evaluation and the benchmark treat
them alike: a config dataclass with named presets, `preprocess` from a decoded frame to a batch
tensor, `forward` returning a dict of named outputs, and checkpoint save/load."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from ..checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from ..imaging import DecodedImage


class PerceptionModel(nn.Module):
    name: ClassVar[str]
    Config: ClassVar[type]
    # preset name -> keyword overrides of Config; "cpu" is the default, "paper" the published one
    presets: ClassVar[dict[str, dict]] = {"cpu": {}}
    # False where `forward` takes one frame at a time (the engine then runs frames one by one)
    batchable: ClassVar[bool] = True

    def __init__(self, config):
        super().__init__()
        self.config = config

    @classmethod
    def make_config(cls, preset: str = "cpu", **overrides):
        if preset not in cls.presets:
            raise ValueError(f"{cls.name}: unknown preset '{preset}' (have {sorted(cls.presets)})")
        return cls.Config(**{**cls.presets[preset], **overrides})

    def preprocess(self, image: DecodedImage) -> torch.Tensor:
        """One decoded frame -> a 1xCxHxW float tensor on the CPU."""
        raise NotImplementedError

    def preprocess_tensor(self, frames: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W uint8 RGB frames on any device -> the input batch `preprocess` would
        make of them one by one, on that device (built from dl_perception.tensor_preprocess)."""
        raise NotImplementedError

    def preprocessing_info(self) -> dict:
        """What `preprocess` does, stored in checkpoints so a mismatch is visible."""
        return {}

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def execution_choices(self) -> dict[str, list]:
        """Run-time choices that change how, not what, the model computes: attribute name ->
        candidate values, the first being the default (what eager `forward` does). The engine
        measures them and keeps the fastest whose outputs stay within tolerance."""
        return {}

    def default_execution(self) -> dict:
        return {choice: values[0] for choice, values in self.execution_choices().items()}

    def set_execution(self, **choices) -> None:
        allowed = self.execution_choices()
        for name, value in choices.items():
            if name not in allowed or value not in allowed[name]:
                raise ValueError(f"{self.name}: no execution choice {name}={value!r} "
                                 f"(have {allowed})")
            setattr(self, name, value)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def to_checkpoint(self, info: dict | None = None) -> Checkpoint:
        return Checkpoint(
            model=self.name,
            config=dataclasses.asdict(self.config),
            state_dict=self.state_dict(),
            preprocessing=self.preprocessing_info(),
            info=info or {},
        )

    def save(self, path: str, info: dict | None = None) -> None:
        save_checkpoint(path, self.to_checkpoint(info))

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint | str) -> "PerceptionModel":
        if isinstance(checkpoint, str):
            checkpoint = load_checkpoint(checkpoint, expected_model=cls.name)
        elif checkpoint.model != cls.name:
            raise CheckpointError(f"checkpoint holds '{checkpoint.model}', expected '{cls.name}'")
        try:
            config = cls.Config(**checkpoint.config)
        except TypeError as error:
            raise CheckpointError(f"{cls.name} checkpoint has an incompatible config: {error}") from None
        model = cls(config)
        expected, given = model.state_dict(), checkpoint.state_dict
        missing = [k for k in expected if k not in given]
        unexpected = [k for k in given if k not in expected]
        wrong_shape = [k for k in given if k in expected and expected[k].shape != given[k].shape]
        if missing or unexpected or wrong_shape:
            raise CheckpointError(
                f"{cls.name} checkpoint does not fit the model: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}, wrong shape {wrong_shape[:5]}")
        model.load_state_dict(given)
        model.checkpoint_info = checkpoint.info
        return model.eval()
