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

import hashlib
import json

import numpy as np
import torch

from .models.dronet import DroNet, DroNetConfig


OFFICIAL_LICENCE = "MIT, Copyright (c) 2018 Robotics and Perception Group (rpg_public_dronet)"
PULP_LICENCE = "Apache-2.0, ETH Zurich / University of Bologna (pulp-platform/pulp-dronet)"


class ConversionError(RuntimeError):
    pass


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


def _layer_weights(h5, layer: str) -> dict[str, np.ndarray]:
    group = h5["model_weights"][layer] if "model_weights" in h5 else h5[layer]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["weight_names"]]
    return {name.split("/")[-1].split(":")[0]: np.asarray(group[name]) for name in names}


def dronet_keras(json_path: str, weights_path: str) -> tuple[DroNet, dict]:
    """Build a DroNet holding the official weights. Returns (model, provenance info)."""
    import h5py  # only the converter needs HDF5

    try:
        with open(json_path) as handle:
            graph = _KerasGraph(json.load(handle))
    except (OSError, ValueError, KeyError) as error:
        raise ConversionError(f"cannot read model JSON {json_path}: {error}") from None
    mapping, config = _dronet_layer_map(graph)
    model = DroNet(config)
    state = {}
    try:
        with h5py.File(weights_path, "r") as h5:
            for prefix, layer in mapping.items():
                weights = _layer_weights(h5, layer)
                if "kernel" in weights:
                    kernel = weights["kernel"]
                    # Keras conv (kh, kw, in, out) -> torch (out, in, kh, kw); dense (in, out) -> (out, in)
                    kernel = kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T
                    state[f"{prefix}.weight"] = kernel
                    state[f"{prefix}.bias"] = weights["bias"]
                else:
                    state[f"{prefix}.weight"] = weights["gamma"]
                    state[f"{prefix}.bias"] = weights["beta"]
                    state[f"{prefix}.running_mean"] = weights["moving_mean"]
                    state[f"{prefix}.running_var"] = weights["moving_variance"]
    except (OSError, KeyError) as error:
        raise ConversionError(f"cannot read Keras weights {weights_path}: {error}") from None
    expected = model.state_dict()
    for key, value in state.items():
        if tuple(expected[key].shape) != value.shape:
            raise ConversionError(f"{key}: Keras weights have shape {value.shape}, "
                                  f"model expects {tuple(expected[key].shape)}")
        expected[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ConversionError(f"no Keras weights found for {missing}")
    model.load_state_dict(expected)
    info = {
        "source": "official DroNet release (Keras), rpg_public_dronet",
        "licence": OFFICIAL_LICENCE,
        "model_json": json_path,
        "model_json_sha256": _sha256(json_path),
        "weights_sha256": _sha256(weights_path),
        "keras_layers": mapping,
    }
    return model.eval(), info


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
    model.load_state_dict(converted)
    info = {
        "source": f"PULP-DroNet {flavour} (pulp-platform/pulp-dronet)",
        "licence": PULP_LICENCE,
        "weights": weights_path,
        "weights_sha256": _sha256(weights_path),
        "flavour": flavour,
        "outputs": PULP_OUTPUTS[flavour],
    }
    return model.eval(), info
