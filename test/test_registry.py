"""dl_perception/registry.py is the one registry: setup.py's console scripts, the launcher's
node map, stack_node's hosted defaults, the model and processor maps and the network nodes are
derived from it."""
import importlib
import os
import runpy

import pytest

from dl_perception import models, processors, registry
from dl_perception.core.paths import REPO_DIR

def test_installed_console_scripts_are_the_registrys():
    """setup.py derives its console scripts from the registry; the installed package has them."""
    from importlib.metadata import distribution
    installed = sorted(f"{ep.name}={ep.value}" for ep in distribution("dl_perception").entry_points
                       if ep.group == "console_scripts")
    assert installed == sorted(registry.console_scripts())
    setup_py = open(os.path.join(REPO_DIR, "setup.py")).read()
    assert 'REGISTRY["console_scripts"]()' in setup_py
    assert not any(f'"{network.node}"' in setup_py for network in registry.NETWORKS)


def test_setup_py_can_read_the_registry_before_installation():
    """No package imports: `runpy.run_path` works on the bare file."""
    data = runpy.run_path(os.path.join(REPO_DIR, "dl_perception", "registry.py"))
    assert data["console_scripts"]() == registry.console_scripts()


def test_launcher_stack_node_and_model_maps_are_the_registrys():
    pytest.importorskip("rclpy")
    from dl_perception.ros import launcher, stack_node
    assert launcher.NODE_CLASSES == registry.node_classes()
    assert stack_node.DEFAULT_HOSTED == registry.hosted_defaults()
    assert models.MODEL_MODULES == registry.model_modules()


def test_processor_map_agrees_and_every_processor_fits_its_node():
    pytest.importorskip("rclpy")
    assert processors.PROCESSOR_MODULES == registry.processor_modules()  # all five: `process`
    for network in registry.NETWORKS:
        processor = importlib.import_module(network.processor_module).PROCESSOR
        node = registry.node_classes()[network.node].split(":")
        node_class = getattr(importlib.import_module(node[0]), node[1])
        assert processor.node_name == network.node and processor.model_name == network.name
        assert importlib.import_module(network.model_module).MODEL.name == network.name
        # the node is generated from the processor: no hand-written node module per network
        from dl_perception.ros.node_base import ProcessorNode
        assert issubclass(node_class, ProcessorNode) and node_class.__name__ == network.node_class
        assert node_class.processor_class is processor and node_class.model_name == network.name
        declared = [p.name for p in node_class.declared_params()]
        own = [p.name for p in processor.parameters]
        assert declared[len(declared) - len(own):] == own
        assert not os.path.exists(os.path.join(REPO_DIR, "dl_perception", "ros",
                                               f"{network.node}.py"))


def test_docs_table_names_every_executable():
    table = registry.markdown_table()
    assert all(f"`{name}`" in table for name in registry.node_classes())


def test_architecture_docs_table_is_the_registrys():
    text = open(os.path.join(REPO_DIR, "docs", "architecture.md")).read()
    start = text.index("<!-- registry table -->\n") + len("<!-- registry table -->\n")
    assert text[start:text.index("<!-- end registry table -->")] == registry.markdown_table()
