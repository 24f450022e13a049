"""Registry of the stack's networks. Adding a network: write one module with a PerceptionModel
subclass and list it here."""
from __future__ import annotations

import importlib

from ..core.checkpoint import CheckpointError, read_metadata
from .base import PerceptionModel

# registry name -> module defining it (imported on first use to keep start-up light)
MODEL_MODULES = {
    "dronet": "dl_perception.models.dronet",
    "lift": "dl_perception.models.lift",
    "netvlad": "dl_perception.models.netvlad",
    "posenet": "dl_perception.models.posenet",
    "depth": "dl_perception.models.depth",
}


def model_class(name: str) -> type[PerceptionModel]:
    if name not in MODEL_MODULES:
        raise KeyError(f"unknown model '{name}' (known: {', '.join(sorted(MODEL_MODULES))})")
    module = importlib.import_module(MODEL_MODULES[name])
    return getattr(module, "MODEL")


def create(name: str, preset: str = "cpu", **overrides) -> PerceptionModel:
    cls = model_class(name)
    return cls(cls.make_config(preset, **overrides))


def load(path: str, expected: str | None = None) -> PerceptionModel:
    """Load any checkpoint; with `expected`, refuse one made for another network."""
    name = read_metadata(path)["model"]
    if expected is not None and name != expected:
        raise CheckpointError(f"{path} holds a '{name}' model, expected '{expected}'")
    if name not in MODEL_MODULES:
        raise CheckpointError(f"{path} holds an unknown model '{name[:80]}' "
                              f"(known: {', '.join(sorted(MODEL_MODULES))})")
    return model_class(name).from_checkpoint(path)


__all__ = ["MODEL_MODULES", "PerceptionModel", "create", "load", "model_class"]
