"""Converters from foreign weight files to the project's checkpoint format.

`dronet_keras`: the official DroNet release (Keras 2 functional model JSON + HDF5 weights). Layers
are matched by following the model graph in the JSON, not by their auto-generated names, so a
re-exported model with other layer numbering converts too.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from .models.dronet import DroNet, DroNetConfig


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
        "source": "official DroNet release (Keras)",
        "model_json": json_path,
        "model_json_sha256": _sha256(json_path),
        "weights_sha256": _sha256(weights_path),
        "keras_layers": mapping,
    }
    return model.eval(), info
