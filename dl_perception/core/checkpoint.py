"""Checkpoint files: safetensors tensors plus JSON metadata naming the model, its config and the
preprocessing it expects. Loading never executes code from the file, and a file made for another
model or another configuration is refused with a message that says so.

Nothing in a file is trusted before it is checked: the metadata is parsed with bounded size, the
config is checked field by field against the model's Config dataclass (`checked_config`), tensor
names and shapes are compared with the model from the header alone, and tensors holding NaN or
infinity are refused (`load_tensors`). models/base.py `PerceptionModel.from_checkpoint` runs these
steps in that order, so every load path (nodes, CLI, offline processing, engine) shares them.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

FORMAT = "dl_perception.checkpoint/1"
# JSON metadata larger than this is not a config but an attack on the parser
MAX_METADATA_CHARS = 1 << 20
# A config list longer than this, or nested deeper than the model's defaults, is refused
MAX_LIST_LENGTH = 1024
MAX_STRING_CHARS = 1024
# Integers a config may hold when its model names no tighter bound (a C int)
INT_LIMIT = 2 ** 31 - 1


class CheckpointError(RuntimeError):
    """A weights file that is missing, unreadable, or for something else."""


@dataclass
class Checkpoint:
    model: str
    config: dict
    state_dict: dict[str, torch.Tensor]
    preprocessing: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


@dataclass
class CheckpointHeader:
    """What a checkpoint file declares, read without loading its tensors."""

    path: str
    model: str
    config: dict
    preprocessing: dict
    info: dict
    tensors: dict[str, tuple[int, ...]]  # name -> shape


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
    """The file's metadata strings; raises CheckpointError unless it is a dl_perception
    checkpoint naming its model."""
    if not os.path.exists(path):
        raise CheckpointError(f"weights file not found: {path}")
    if not os.path.isfile(path):
        raise CheckpointError(f"weights path {path} is not a file")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint: {error}") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a dl_perception checkpoint (format '{metadata.get('format')}'); "
            "convert foreign weights with `dl-perception convert`")
    for key in ("model", "config"):
        if not metadata.get(key):
            raise CheckpointError(f"{path} is damaged: its metadata has no '{key}'")
    return metadata


def json_object(text: str | bytes, what: str, limit: int = MAX_METADATA_CHARS) -> dict:
    """A JSON object parsed from untrusted text, its size and nesting bounded (a CheckpointError
    naming `what` otherwise)."""
    if len(text) > limit:
        raise CheckpointError(f"{what} is {len(text)} characters long (at most {limit})")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{what} is not valid JSON "
                              f"({type(error).__name__}: {str(error)[:200]})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{what} is a JSON {type(value).__name__}, expected an object")
    return value


def _json_object(path: str, metadata: dict, key: str) -> dict:
    return json_object(metadata.get(key, "{}"), f"{path}: metadata '{key}'")


def read_header(path: str, expected_model: str | None = None) -> CheckpointHeader:
    """Metadata and tensor shapes of a checkpoint, without reading the tensors."""
    metadata = read_metadata(path)
    if expected_model is not None and metadata["model"] != expected_model:
        raise CheckpointError(
            f"{path} holds a '{metadata['model']}' model, expected '{expected_model}'")
    try:
        with safe_open(path, framework="pt") as handle:
            tensors = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is corrupt: {error}") from None
    return CheckpointHeader(path, metadata["model"], _json_object(path, metadata, "config"),
                            _json_object(path, metadata, "preprocessing"),
                            _json_object(path, metadata, "info"), tensors)


def check_tensor_values(state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Refuse NaN and infinity anywhere."""
    bad = [name for name, tensor in state_dict.items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise CheckpointError(f"{source} holds non-finite values (NaN or infinity) in "
                              f"{len(bad)} tensors: {', '.join(bad[:5])}")


def load_tensors(path: str) -> dict[str, torch.Tensor]:
    try:
        state_dict = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is corrupt: {error}") from None
    check_tensor_values(state_dict, path)
    return state_dict


def load_checkpoint(path: str, expected_model: str | None = None) -> Checkpoint:
    """Metadata and tensors of a checkpoint (checked as above, except against a model: use
    `models.load` / `from_checkpoint` to build one)."""
    header = read_header(path, expected_model)
    return Checkpoint(model=header.model, config=header.config, state_dict=load_tensors(path),
                      preprocessing=header.preprocessing, info=header.info)


# --- config schema ---------------------------------------------------------------------------
def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def _depth(value) -> int:
    if isinstance(value, (list, tuple)):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _check_value(name: str, value, expected: str, depth: int, element_kinds: set[str],
                 bounds: tuple | None, empty_ok: bool = False) -> None:
    """`expected`: the field's kind; lists are checked element by element against the kinds
    the defaults use, nested at most `depth` levels."""
    kind = _kind(value)
    if expected == "float" and kind == "int":
        kind = "float"  # JSON writes 2.0 as 2.0, but a hand-made 2 means the same
    if kind != expected:
        raise CheckpointError(f"config field '{name}' must be {expected}, got {kind} "
                              f"{json.dumps(value)[:60]}")
    if kind == "list":
        if not value:
            if empty_ok:
                return
            raise CheckpointError(f"config field '{name}' is an empty list")
        if len(value) > MAX_LIST_LENGTH:
            raise CheckpointError(f"config field '{name}' has {len(value)} elements "
                                  f"(at most {MAX_LIST_LENGTH})")
        if depth <= 0:
            raise CheckpointError(f"config field '{name}' is nested deeper than the model's "
                                  "defaults")
        for index, element in enumerate(value):
            element_kind = _kind(element)
            if element_kind == "int" and "float" in element_kinds and "int" not in element_kinds:
                element_kind = "float"
            if element_kind not in element_kinds:
                raise CheckpointError(
                    f"config field '{name}' element {index} is {element_kind} "
                    f"{json.dumps(element)[:60]}, expected {' or '.join(sorted(element_kinds))}")
            _check_value(f"{name}[{index}]", element, element_kind, depth - 1, element_kinds,
                         bounds)
        return
    if kind == "str" and len(value) > MAX_STRING_CHARS:
        raise CheckpointError(f"config field '{name}' is a string of {len(value)} characters")
    if kind in ("int", "float"):
        if not math.isfinite(value):
            raise CheckpointError(f"config field '{name}' is {value}")
        low, high = bounds if bounds is not None else (
            (-INT_LIMIT, INT_LIMIT) if kind == "int" else (-math.inf, math.inf))
        if not low <= value <= high:
            raise CheckpointError(f"config field '{name}' = {value} is outside [{low}, {high}]")


_TYPE_KINDS = {int: "int", float: "float", str: "str", bool: "bool", list: "list",
               tuple: "list", dict: "dict", type(None): "NoneType"}


def _annotated_kinds(hint) -> set[str]:
    """The value kinds a field's annotation allows (int, list[int], Optional[str], X | None, ...);
    empty when the annotation says nothing we check (the default's kind is used then)."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        kinds = [_annotated_kinds(arg) for arg in typing.get_args(hint)]
        return set().union(*kinds) if all(kinds) else set()
    kind = _TYPE_KINDS.get(origin or hint)
    return {kind} if kind else set()


def _leaf_kinds(value) -> set[str]:
    if isinstance(value, (list, tuple)):
        kinds: set[str] = set()
        for element in value:
            kinds |= _leaf_kinds(element) if isinstance(element, (list, tuple)) \
                else {_kind(element)}
        return kinds | ({"list"} if any(isinstance(e, (list, tuple)) for e in value) else set())
    return {_kind(value)}


def checked_config(config_class: type, values: dict, bounds: dict[str, tuple],
                   examples: list[dict] = ()):
    """`values` (a checkpoint's config) as a `config_class` instance, refused with a
    CheckpointError naming the field unless each value has its field's type (lists: the element
    types and nesting of the defaults and `examples`, e.g. the presets) and lies within
    `bounds[field]` = (low, high), applied to every number of the field. Fields missing from
    `values` keep their defaults."""
    if not isinstance(values, dict):
        raise CheckpointError(f"config is a {type(values).__name__}, expected an object")
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise CheckpointError(f"config has fields this version does not know: "
                              f"{', '.join(unknown[:5])}")
    hints = typing.get_type_hints(config_class)
    defaults = config_class()
    for name, value in values.items():
        allowed = _annotated_kinds(hints[name]) or {_kind(getattr(defaults, name))}
        kind = _kind(value)
        if kind == "int" and "float" in allowed and "int" not in allowed:
            kind = "float"  # JSON writes 2.0 as 2.0, but a hand-made 2 means the same
        if kind not in allowed:
            raise CheckpointError(f"config field '{name}' must be {' or '.join(sorted(allowed))}"
                                  f", got {kind} {json.dumps(value)[:60]}")
        samples = [getattr(defaults, name)] + [e[name] for e in examples if name in e]
        lists = [s for s in samples if isinstance(s, (list, tuple))]
        # a list field whose defaults hold no list (Optional[list] = None) takes flat lists
        depth = max((_depth(s) for s in lists), default=1)
        element_kinds = set().union(*(_leaf_kinds(s) for s in lists)) or \
            {"int", "float", "str", "bool"}
        _check_value(name, value, kind, depth, element_kinds, bounds.get(name),
                     empty_ok=not lists or any(not s for s in lists))
    try:
        return config_class(**values)
    except ValueError as error:  # a config's own consistency checks (__post_init__)
        raise CheckpointError(f"config: {error}") from None
