"""Where the project finds shipped weights and the shared third-party data."""
from __future__ import annotations

import os

# this module lives in dl_perception/core/
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_DIR = os.path.dirname(PACKAGE_DIR)
WEIGHTS_DIR = os.path.join(PACKAGE_DIR, "weights")


def shared_data_dir() -> str:
    """Third-party test data: $DL_PERCEPTION_DATA, else ../shared/data next to the repository."""
    return os.path.abspath(os.environ.get(
        "DL_PERCEPTION_DATA", os.path.join(REPO_DIR, "..", "shared", "data")))


# A weights setting `shipped:PURPOSE` names a shipped checkpoint other than the default one.
SHIPPED_PREFIX = "shipped:"


def shipped_weights(model: str, purpose: str = "") -> str:
    """The checkpoint the package ships for `model`: the default (for real cameras, the best
    measured on real images) or, with `purpose`, `<model>_<purpose>.safetensors` (e.g. "sim":
    the one trained for the built-in simulator)."""
    return os.path.join(WEIGHTS_DIR, f"{model}_{purpose}.safetensors" if purpose
                        else f"{model}.safetensors")


def resolve_weights(model_name: str, path: str) -> str:
    """The checkpoint a node or offline processor loads: `path` when given (`shipped:PURPOSE`
    for a shipped one other than the default), else the shipped default."""
    from .checkpoint import CheckpointError

    purpose = ""
    if path and not path.startswith(SHIPPED_PREFIX):
        return os.path.expanduser(path)
    if path:
        purpose = path[len(SHIPPED_PREFIX):]
    shipped = shipped_weights(model_name, purpose)
    if not os.path.isfile(shipped):
        raise CheckpointError(
            f"no '{model_name}' weights are shipped at {shipped}; set the 'weights' parameter "
            f"to a checkpoint (see `dl-perception train {model_name}` / `dl-perception convert`)")
    return shipped
