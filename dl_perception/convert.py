"""Converters from foreign weight files to the project's checkpoint format.

`dronet_keras`: the official DroNet release (Keras 2 functional model JSON + HDF5 weights). Layers
are matched by following the model graph in the JSON, not by their auto-generated names, so a
re-exported model with other layer numbering converts too.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import torch

from .checkpoint import CheckpointError, check_tensor_values, json_object
from .models.dronet import DroNet, DroNetConfig

# a model description larger than this is not a network description
MAX_MODEL_JSON_BYTES = 16 << 20


class ConversionError(RuntimeError):
    pass


def input_file(path: str, what: str) -> str:
    """`path` if it names a non-empty regular file, else a ConversionError saying why."""
    if not os.path.exists(path):
        raise ConversionError(f"{what} {path} does not exist")
    if not os.path.isfile(path):
        raise ConversionError(f"{what} {path} is not a regular file")
    if os.path.getsize(path) == 0:
        raise ConversionError(f"{what} {path} is empty")
    return path


def read_json_object(path: str, what: str) -> dict:
    """A JSON object from a file, with its size and nesting bounded."""
    input_file(path, what)
    if os.path.getsize(path) > MAX_MODEL_JSON_BYTES:
        raise ConversionError(f"{what} {path} is larger than {MAX_MODEL_JSON_BYTES >> 20} MiB")
    try:
        with open(path, "rb") as handle:
            return json_object(handle.read(), f"{what} {path}", MAX_MODEL_JSON_BYTES)
    except OSError as error:
        raise ConversionError(f"cannot read {what} {path}: {error}") from None
    except CheckpointError as error:
        raise ConversionError(str(error)) from None


def checked_shapes(model_class, config, source: str) -> dict[str, tuple]:
    """Parameter name -> shape of the model `config` describes, after the checks a checkpoint's
    config gets on loading (models/base.py: schema, bounds, parameter budget), allocating
    nothing: foreign weights are compared with these before they are read."""
    try:
        config = model_class.checked_config(dataclasses.asdict(config))
        skeleton = model_class.check_parameter_budget(config)
    except CheckpointError as error:
        raise ConversionError(f"{source}: {error}") from None
    return {key: tuple(value.shape) for key, value in skeleton.state_dict().items()}


def read_array(dataset, key: str, shapes: dict[str, tuple], source: str,
               transpose: tuple | None = None) -> np.ndarray:
    """A foreign array (h5py dataset, ...) for parameter `key`, its shape checked before it is
    read; `transpose` maps the foreign axis order onto the model's."""
    shape = tuple(dataset.shape)
    if transpose is not None:
        shape = tuple(shape[axis] for axis in transpose) if len(shape) == len(transpose) else shape
    if key not in shapes or shapes[key] != shape:
        raise ConversionError(f"{key}: {source} has shape {shape}, the model expects "
                              f"{shapes.get(key, 'no such parameter')}")
    array = np.asarray(dataset)
    return array.transpose(transpose) if transpose is not None else array


def checked_model(model_class, config, state: dict[str, np.ndarray], source: str):
    """The model of `config` holding `state` (arrays read with `read_array`): finite values,
    every parameter present, one test frame through the loaded model, as a loaded checkpoint."""
    expected = checked_shapes(model_class, config, source)
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ConversionError(f"no weights found in {source} for {missing}")
    try:
        tensors = {key: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
                   for key, value in state.items()}
    except (ValueError, TypeError) as error:
        raise ConversionError(f"{source} holds weights that are not numbers ({error})") from None
    try:
        check_tensor_values(tensors, source)
        model = model_class(config)
        model.load_state_dict(tensors, strict=False)
        model.eval().check_runs(source)
    except CheckpointError as error:
        raise ConversionError(str(error)) from None
    return model


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _KerasGraph:
    def __init__(self, model_json: dict):
        if model_json.get("class_name") != "Model":
            raise ConversionError(f"expected a Keras functional Model, got {model_json.get('class_name')}")
        config = model_json["config"]
        self.layers = {layer["name"]: layer for layer in config["layers"]}
        self.order = [layer["name"] for layer in config["layers"]]
        self.outputs = [out[0] for out in config["output_layers"]]

    def kind(self, name: str) -> str:
        return self.layers[name]["class_name"]

    def inputs(self, name: str) -> list[str]:
        nodes = self.layers[name]["inbound_nodes"]
        return [inbound[0] for inbound in nodes[0]] if nodes else []

    def single_input(self, name: str, kind: str) -> str:
        (source,) = self.inputs(name)
        if self.kind(source) != kind:
            raise ConversionError(f"layer {name} is fed by {self.kind(source)} {source}, expected {kind}")
        return source

    def consumers(self, name: str) -> list[str]:
        return [n for n in self.order if name in self.inputs(n)]


def _dronet_layer_map(graph: _KerasGraph) -> tuple[dict[str, str], DroNetConfig]:
    """Our parameter prefix -> Keras layer name, found by walking the graph."""
    inputs = [n for n in graph.order if graph.kind(n) == "InputLayer"]
    if len(inputs) != 1:
        raise ConversionError("expected exactly one input layer")
    shape = graph.layers[inputs[0]]["config"]["batch_input_shape"]
    if shape[1] != shape[2] or shape[3] != 1:
        raise ConversionError(f"expected a square grayscale input, got {shape}")
    (stem,) = graph.consumers(inputs[0])
    mapping = {"conv1": stem}
    adds = [n for n in graph.order if graph.kind(n) == "Add"]
    channels = []
    for index, add in enumerate(adds):
        convs = graph.inputs(add)
        kernels = {c: graph.layers[c]["config"]["kernel_size"][0] for c in convs}
        shortcut = next(c for c in convs if kernels[c] == 1)
        conv2 = next(c for c in convs if kernels[c] == 3)
        bn2 = graph.single_input(graph.single_input(conv2, "Activation"), "BatchNormalization")
        conv1 = graph.single_input(bn2, "Conv2D")
        bn1 = graph.single_input(graph.single_input(conv1, "Activation"), "BatchNormalization")
        prefix = f"blocks.{index}"
        mapping.update({f"{prefix}.bn1": bn1, f"{prefix}.conv1": conv1, f"{prefix}.bn2": bn2,
                        f"{prefix}.conv2": conv2, f"{prefix}.shortcut": shortcut})
        channels.append(graph.layers[conv2]["config"]["filters"])
    for output in graph.outputs:
        if graph.kind(output) == "Dense":
            mapping["steering"] = output
        elif graph.kind(output) == "Activation" and \
                graph.layers[output]["config"]["activation"] == "sigmoid":
            mapping["collision"] = graph.single_input(output, "Dense")
    if "steering" not in mapping or "collision" not in mapping:
        raise ConversionError(f"could not identify steering and collision outputs in {graph.outputs}")
    dropout = next((graph.layers[n]["config"]["rate"] for n in graph.order
                    if graph.kind(n) == "Dropout"), 0.5)
    config = DroNetConfig(crop_size=shape[1], block_channels=channels, dropout=dropout)
    return mapping, config


def _layer_weights(h5, layer: str) -> dict:
    """Weight name -> h5py dataset (not read yet) of a Keras layer."""
    group = h5["model_weights"][layer] if "model_weights" in h5 else h5[layer]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["weight_names"]]
    return {name.split("/")[-1].split(":")[0]: group[name] for name in names}


def dronet_keras(json_path: str, weights_path: str) -> tuple[DroNet, dict]:
    """Build a DroNet holding the official weights. Returns (model, provenance info)."""
    import h5py  # only the converter needs HDF5

    model_json = read_json_object(json_path, "model JSON")
    try:
        graph = _KerasGraph(model_json)
        mapping, config = _dronet_layer_map(graph)
    except (KeyError, IndexError, TypeError, ValueError, StopIteration, AttributeError) as error:
        raise ConversionError(f"{json_path} is not a DroNet Keras model description "
                              f"({type(error).__name__}: {str(error)[:200]})") from None
    input_file(weights_path, "Keras weights")
    shapes = checked_shapes(DroNet, config, json_path)
    state = {}
    try:
        with h5py.File(weights_path, "r") as h5:
            for prefix, layer in mapping.items():
                weights = _layer_weights(h5, layer)

                def read(key, name, transpose=None):
                    state[f"{prefix}.{key}"] = read_array(weights[name], f"{prefix}.{key}",
                                                          shapes, weights_path, transpose)
                if "kernel" in weights:
                    # Keras conv (kh, kw, in, out) -> torch (out, in, kh, kw); dense (in, out) -> (out, in)
                    read("weight", "kernel", (3, 2, 0, 1) if weights["kernel"].ndim == 4 else (1, 0))
                    read("bias", "bias")
                else:
                    read("weight", "gamma")
                    read("bias", "beta")
                    read("running_mean", "moving_mean")
                    read("running_var", "moving_variance")
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as error:
        raise ConversionError(f"cannot read Keras weights {weights_path}: "
                              f"{type(error).__name__}: {str(error)[:200]}") from None
    model = checked_model(DroNet, config, state, weights_path)
    info = {
        "source": "official DroNet release (Keras)",
        "model_json": json_path,
        "model_json_sha256": _sha256(json_path),
        "weights_sha256": _sha256(weights_path),
        "keras_layers": mapping,
    }
    return model, info
