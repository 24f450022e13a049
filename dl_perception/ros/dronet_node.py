"""dronet_node: camera frames -> DroNet steering angle and collision probability (the work is
dl_perception.processors.dronet, shared with offline bag processing)."""
from __future__ import annotations

from ..processors.dronet import DroNetProcessor
from .node_base import ProcessorNode


class DroNetNode(ProcessorNode):
    model_name = "dronet"
    processor_class = DroNetProcessor

    def __init__(self, node_name: str = "dronet_node", **kwargs):
        super().__init__(node_name, **kwargs)

