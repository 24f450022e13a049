"""Checkpoint files: safetensors tensors plus JSON metadata naming the model, its config and the
preprocessing it expects. Loading never executes code from the file, and a file made for another
model or another configuration is refused with a message that says so."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

FORMAT = "dl_perception.checkpoint/1"


class CheckpointError(RuntimeError):
    """A weights file that is missing, unreadable, or for something else."""


@dataclass
class Checkpoint:
    model: str
    config: dict
    state_dict: dict[str, torch.Tensor]
    preprocessing: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def save_checkpoint(path: str, checkpoint: Checkpoint) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    metadata = {
        "format": FORMAT,
        "model": checkpoint.model,
        "config": json.dumps(checkpoint.config, sort_keys=True),
        "preprocessing": json.dumps(checkpoint.preprocessing, sort_keys=True),
        "info": json.dumps(checkpoint.info, sort_keys=True),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in checkpoint.state_dict.items()}
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)  # never leave a half-written checkpoint under the real name


def read_metadata(path: str) -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"weights file not found: {path}")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint: {error}") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a dl_perception checkpoint (format '{metadata.get('format')}'); "
            "convert foreign weights with `dl-perception convert`")
    return metadata


def load_checkpoint(path: str, expected_model: str | None = None) -> Checkpoint:
    metadata = read_metadata(path)
    if expected_model is not None and metadata["model"] != expected_model:
        raise CheckpointError(
            f"{path} holds a '{metadata['model']}' model, expected '{expected_model}'")
    try:
        state_dict = load_file(path, device="cpu")
        return Checkpoint(
            model=metadata["model"],
            config=json.loads(metadata["config"]),
            state_dict=state_dict,
            preprocessing=json.loads(metadata.get("preprocessing", "{}")),
            info=json.loads(metadata.get("info", "{}")),
        )
    except (SafetensorError, OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path} is corrupt: {error}") from None
