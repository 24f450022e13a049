"""Frame processors: the per-frame work of a camera node as a plain function of a decoded image
and its header, returning the messages the node publishes. The ROS node
(`ros/node_base.ProcessorNode`) and offline bag processing (`dl-perception process`) both call
it, so a bag processed offline holds byte for byte what the node would have published.

Adding one for a network: a module here, `processors/<network>.py`, defining a `FrameProcessor`
subclass and `PROCESSOR = <class>`; its `Network(...)` line in registry.py puts it in
PROCESSOR_MODULES (node name -> module).
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
import yaml

from .. import models, registry
from ..core.params import Param
from ..core.device import select_device
from ..core.imaging import DecodedImage
from ..core.paths import resolve_weights

# node name (as in config/perception.yaml) -> module defining PROCESSOR: every network
PROCESSOR_MODULES = registry.processor_modules()


def root_name(topic: str) -> str:
    """A topic name from the root, as processors, bags and docs/interfaces.md name topics: a
    parameter's relative name (a node resolves it in its namespace) read with no namespace."""
    return topic if topic.startswith("/") else "/" + topic


@dataclass(frozen=True)
class Output:
    """One message a node publishes: the topic and a `dl_perception.core.rosmsg` dataclass."""

    topic: str
    message: object

    @property
    def msgtype(self) -> str:
        return self.message.__msgtype__


# published as ROS publishes TF: from the root whatever the node's namespace, reliable, depth 100
TF_TOPICS = ("/tf", "/tf_static")


class FrameProcessor:
    """The per-frame work of one network's node. Its node (ros/node_base.ProcessorNode) is
    generated from it: the node declares `parameters` (besides the common ones), subscribes to
    the camera and to `side_inputs()`, advertises `outputs` and reports `diagnostic_values()`."""

    node_name: ClassVar[str]
    model_name: ClassVar[str]
    # topic -> message type the node advertises
    outputs: ClassVar[dict[str, str]]
    # topics published best effort, latest frames first (images a viewer may drop)
    sensor_data_outputs: ClassVar[tuple[str, ...]] = ()
    image_topic: ClassVar[str] = "/camera/image_raw"
    # the node's own parameters (core.params.Param); `defaults` is derived from them
    parameters: ClassVar[list[Param]] = []
    defaults: ClassVar[dict] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.defaults = {param.name: param.default for param in cls.parameters}

    def __init__(self, model: models.PerceptionModel, device: torch.device,
                 params=None):
        """`params`: a mapping with `get` (a dict, or a node's live ParameterSet)."""
        self.model = model.to(device).eval()
        self.device = device
        self.params = params if params is not None else {}

    # False under a batching executor (stack_node, BatchExecutor): its engine passes the
    # execution choices it measured, the processor only its settings
    passes_execution: bool = True

    def forward_arguments(self) -> dict:
        """This frame's keyword arguments of the model's `forward`, from the current parameters
        (a batching executor hands them to its engine with the frame)."""
        return {}

    def infer(self, image: DecodedImage) -> dict:
        """The network's outputs for one frame (batch of one)."""
        batch = self.model.preprocess(image).to(self.device, non_blocking=True)
        with torch.inference_mode():
            return self.model(batch, **self.forward_arguments())

    @classmethod
    def from_params(cls, params: dict) -> "FrameProcessor":
        """Build from a node's parameters (as in its section of a parameters file)."""
        device = select_device(str(params.get("device", "auto")))
        weights = resolve_weights(cls.model_name, str(params.get("weights", "") or ""))
        return cls(models.load(weights, expected=cls.model_name), device, params)

    @classmethod
    def input_topic(cls, params: dict) -> str:
        compressed = params.get("image_transport", "raw") == "compressed"
        return cls.image_topic + ("/compressed" if compressed else "")

    def process(self, image: DecodedImage, header) -> list[Output]:
        """`header` is a rosmsg std_msgs/Header (the input frame's)."""
        raise NotImplementedError

    def param(self, name: str):
        """A parameter's value: as given, else its default."""
        return self.params.get(name, self.defaults[name])

    # --- inputs besides the camera, diagnostics, warnings -----------------------------------
    def side_inputs(self) -> dict[str, str]:
        """Other topics the processor reads (topic -> message type); their messages go to
        `observe`, in arrival (node) or log-time (bag) order, before the frames after them."""
        return {}

    def side_input_qos(self, topic: str) -> tuple[str, int]:
        """(reliability, depth) of the node's subscription to a side input."""
        return "reliable", 50

    def observe(self, topic: str, message) -> None:
        """A message of a side input (a rosmsg dataclass)."""
        raise KeyError(f"{type(self).__name__} reads no topic '{topic}'")

    def diagnostic_values(self) -> dict[str, str]:
        """Counters and state the node reports on /diagnostics."""
        return {}

    def warn(self, message: str) -> None:
        """A warning about the input (a node routes it to its throttled ROS logger)."""
        logging.getLogger(type(self).__module__).warning(message)

    def info(self, message: str) -> None:
        """A note for the user (a node routes it to its ROS logger)."""
        logging.getLogger(type(self).__module__).info(message)

    def announce(self) -> None:
        """Say (info, warn) what a user should know once the node has started."""


def node_parameters(config_path: str) -> dict[str, dict]:
    """Node name -> its parameters from a ROS 2 parameters file (what config/perception.yaml is):
    `/**` sections apply to every node, nested keys are joined with dots as ROS does."""
    with open(config_path) as handle:
        config = yaml.safe_load(handle) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a ROS parameters mapping")

    def flat(values, prefix=""):
        items = {}
        for key, value in (values or {}).items():
            if isinstance(value, dict):
                items.update(flat(value, f"{prefix}{key}."))
            else:
                items[f"{prefix}{key}"] = value
        return items

    def parameters(section):
        if section is not None and not (isinstance(section, dict) and
                                        isinstance(section.get("ros__parameters", {}), dict)):
            raise ValueError(f"{config_path}: a section is not 'name: ros__parameters: {{...}}'")
        return flat((section or {}).get("ros__parameters"))

    common = {}
    for key, section in config.items():
        if str(key).lstrip("/") == "**":
            common.update(parameters(section))
    return {str(key).lstrip("/"): {**common, **parameters(section)}
            for key, section in config.items() if str(key).lstrip("/") != "**"}


def processor_class(node_name: str) -> type[FrameProcessor] | None:
    """The processor of a node, or None when the node has no offline processor."""
    module = PROCESSOR_MODULES.get(node_name)
    return getattr(importlib.import_module(module), "PROCESSOR") if module else None


__all__ = ["FrameProcessor", "Output", "PROCESSOR_MODULES", "Param", "TF_TOPICS", "node_parameters",
           "processor_class"]
