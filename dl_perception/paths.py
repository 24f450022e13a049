"""Where the project finds shipped weights and the shared third-party data."""
from __future__ import annotations

import os

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(PACKAGE_DIR)
WEIGHTS_DIR = os.path.join(PACKAGE_DIR, "weights")


def shared_data_dir() -> str:
    """Third-party test data: $DL_PERCEPTION_DATA, else ../shared/data next to the repository."""
    return os.path.abspath(os.environ.get(
        "DL_PERCEPTION_DATA", os.path.join(REPO_DIR, "..", "shared", "data")))


def shipped_weights(model: str) -> str:
    return os.path.join(WEIGHTS_DIR, f"{model}.safetensors")


def resolve_weights(model_name: str, path: str) -> str:
    """The checkpoint a node or offline processor loads: `path` when given, else the shipped one."""
    from .checkpoint import CheckpointError

    if path:
        return os.path.expanduser(path)
    shipped = shipped_weights(model_name)
    if not os.path.isfile(shipped):
        raise CheckpointError(
            f"no '{model_name}' weights are shipped at {shipped}; set the 'weights' parameter "
            f"to a checkpoint (see `dl-perception train {model_name}` / `dl-perception convert`)")
    return shipped
