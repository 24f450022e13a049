"""Node executables by name, from the registry: the launcher, stack_node, the soak and bench
tools and the console-script entry all look node classes up here (importing only the module of
the node asked for)."""
from __future__ import annotations

import importlib

from .. import registry

# executable / node name -> "module:class"
NODE_CLASSES = registry.node_classes()


def node_class(name: str):
    if name not in NODE_CLASSES:
        raise ValueError(f"unknown node '{name}' (known: {', '.join(sorted(NODE_CLASSES))})")
    module, cls = NODE_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)
