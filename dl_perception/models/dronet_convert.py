"""Converters from foreign weight files to the project's checkpoint format.

`dronet_keras`: the official DroNet release (Keras 2 functional model JSON + HDF5 weights; MIT,
Copyright (c) 2018 Robotics and Perception Group). Layers are matched by following the model graph
in the JSON, not by their auto-generated names, so a re-exported model with other layer numbering
converts too.

`pulp_dronet`: PULP-DroNet v2 (GAPflow and NEMO/DORY flavours) and v3 (ResBlock) PyTorch
state_dicts (pulp-platform/pulp-dronet, Apache-2.0) into the "pulp" layout of the DroNet model
(models/dronet.py). The flavour is recognised from the state_dict's keys; their fc layer's two
outputs become the steering and collision heads.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import torch

from ..core.checkpoint import CheckpointError, check_tensor_values, json_object
from .dronet import DroNet, DroNetConfig

# a model description larger than this is not a network description
MAX_MODEL_JSON_BYTES = 16 << 20


OFFICIAL_LICENCE = "MIT, Copyright (c) 2018 Robotics and Perception Group (rpg_public_dronet)"
PULP_LICENCE = "Apache-2.0, ETH Zurich / University of Bologna (pulp-platform/pulp-dronet)"


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
        "source": "official DroNet release (Keras), rpg_public_dronet",
        "licence": OFFICIAL_LICENCE,
        "model_json": json_path,
        "model_json_sha256": _sha256(json_path),
        "weights_sha256": _sha256(weights_path),
        "keras_layers": mapping,
    }
    return model, info


# PULP-DroNet flavour -> (stem conv, block prefix, config flags). Recognised by the stem's key
# and the block naming; "v3" ResBlock weights share the NEMO/DORY layout.
_PULP_FLAVOURS = {
    "v2-gapflow": ("layer1", "resBlock", dict(
        stem_batchnorm=False, shortcut_batchnorm=False, conv_bias=True, head_bias=True,
        head_activation=True)),
    "v2-nemo-dory": ("first_conv", "resBlock", dict(
        stem_batchnorm=True, shortcut_batchnorm=True, conv_bias=False, head_bias=False,
        head_activation=False)),
    "v3-resblock": ("first_conv", "Block", dict(
        stem_batchnorm=True, shortcut_batchnorm=True, conv_bias=False, head_bias=False,
        head_activation=False)),
}
PULP_OUTPUTS = {
    "v2-gapflow": "steering angle (Udacity scale), collision probability",
    "v2-nemo-dory": "steering angle (Udacity scale), collision probability",
    "v3-resblock": "yaw-rate command normalised to [-1, 1] (positive = turn left), "
                   "collision probability (obstacle closer than 2 m)",
}


def _pulp_flavour(state: dict) -> str:
    if "layer1.weight" in state and "resBlock1.conv1.weight" in state:
        return "v2-gapflow"
    if "first_conv.weight" in state and "resBlock1.bn_bypass.weight" in state:
        return "v2-nemo-dory"
    if "first_conv.weight" in state and "Block1.bn_bypass.weight" in state:
        return "v3-resblock"
    if "Block1.depthconv1.weight" in state:
        raise ConversionError(
            "this is Tiny-PULP-DroNet v3 (depthwise-separable blocks without shortcuts), which is "
            "not a DroNet layout; only v2 (GAPflow, NEMO/DORY) and v3 ResBlock weights convert")
    raise ConversionError(f"not a PULP-DroNet state_dict (keys {sorted(state)[:4]} ...)")


def pulp_dronet(weights_path: str, crop_anchor: str | None = None) -> tuple[DroNet, dict]:
    """Build a DroNet ("pulp" layout) holding PULP-DroNet weights. `crop_anchor` defaults to
    where upstream crops its 324x244 frames: the bottom for v2, the centre for v3."""
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a file that is not a state_dict
        raise ConversionError(f"cannot read PyTorch weights {weights_path}: {error}") from None
    if not isinstance(state, dict):
        raise ConversionError(f"{weights_path} holds a {type(state).__name__}, not a state_dict")
    flavour = _pulp_flavour(state)
    stem, block, flags = _PULP_FLAVOURS[flavour]
    blocks = sorted(int(k[len(block):].split(".")[0]) for k in state
                    if k.startswith(block) and k.endswith(".conv1.weight"))
    channels = [int(state[f"{block}{i}.conv2.weight"].shape[0]) for i in blocks]
    fc = state["fc.weight"]
    if fc.shape[0] != 2:
        raise ConversionError(f"expected a 2-output fc layer (steering, collision), got {tuple(fc.shape)}")
    config = DroNetConfig(
        layout="pulp", block_channels=channels, resize_to=[324, 244],
        crop_anchor=crop_anchor or ("centre" if flavour.startswith("v3") else "bottom"), **flags)
    model = DroNet(config)
    names = {"conv1": stem, "stem_bn": "bn1", "steering": "fc", "collision": "fc"}
    for index, number in enumerate(blocks):
        for ours, theirs in (("conv1", "conv1"), ("conv2", "conv2"), ("bn1", "bn1"), ("bn2", "bn2"),
                             ("shortcut", "bypass"), ("shortcut_bn", "bn_bypass")):
            names[f"blocks.{index}.{ours}"] = f"{block}{number}.{theirs}"
    converted, used = {}, set()
    for key, target in model.state_dict().items():
        module, _, parameter = key.rpartition(".")
        source = f"{names[module]}.{parameter}"
        if source not in state:
            raise ConversionError(f"{weights_path}: no {source} for {key} ({flavour})")
        value = state[source]
        if module in ("steering", "collision"):  # fc row 0 = steering, row 1 = collision
            value = value[0 if module == "steering" else 1].reshape(target.shape)
        if value.shape != target.shape:
            raise ConversionError(f"{source}: shape {tuple(value.shape)}, model expects "
                                  f"{tuple(target.shape)} for {key}")
        converted[key] = value.to(target.dtype)
        used.add(source)
    unused = sorted(set(state) - used)
    if unused:
        raise ConversionError(f"{weights_path}: weights left unconverted: {unused[:5]}")
    model = checked_model(DroNet, config, converted, weights_path)
    info = {
        "source": f"PULP-DroNet {flavour} (pulp-platform/pulp-dronet)",
        "licence": PULP_LICENCE,
        "weights": weights_path,
        "weights_sha256": _sha256(weights_path),
        "flavour": flavour,
        "outputs": PULP_OUTPUTS[flavour],
    }
    return model, info
