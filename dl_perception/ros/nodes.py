"""Node executables by name, from the registry: the launcher, stack_node, the soak and bench
tools and the console-script entry all look node classes up here (importing only what the node
asked for needs). A network's node is not written by hand: it is ProcessorNode over the
network's frame processor, made here (`from dl_perception.ros.nodes import DepthNode` works too).
"""
from __future__ import annotations

import functools
import importlib

from .. import registry

# executable / node name -> "module:class"
NODE_CLASSES = registry.node_classes()


@functools.cache
def network_node_class(network_name: str) -> type:
    """The node class of a registered network: ProcessorNode over its processor."""
    from ..processors import processor_class
    from .node_base import ProcessorNode

    network = registry.network(network_name)
    processor = processor_class(network.node)
    return type(network.node_class, (ProcessorNode,), {
        "__module__": __name__, "model_name": network.name, "processor_class": processor,
        "__doc__": f"{network.node}: {network.summary} (the work: {processor.__module__})"})


def node_class(name: str):
    if name not in NODE_CLASSES:
        raise ValueError(f"unknown node '{name}' (known: {', '.join(sorted(NODE_CLASSES))})")
    module, cls = NODE_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def __getattr__(name: str):
    for network in registry.NETWORKS:
        if network.node_class == name:
            return network_node_class(network.name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
