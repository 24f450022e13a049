"""dl_perception/registry.py is the one registry: setup.py's console scripts, the launcher's
node map, stack_node's hosted defaults and the model and processor maps agree with it (phase B
derives them from it and deletes the copies)."""
import ast
import importlib
import os
import runpy

import pytest

from dl_perception import models, processors, registry
from dl_perception.paths import REPO_DIR

def setup_py_nodes() -> dict:
    tree = ast.parse(open(os.path.join(REPO_DIR, "setup.py")).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "NODES":
            # a literal or a comprehension over literals (the ros branch's form): no names
            return eval(compile(ast.Expression(node.value), "setup.py", "eval"),
                        {"__builtins__": {}})
    raise AssertionError("setup.py has no NODES")


def test_setup_py_console_scripts_are_the_registrys():
    nodes = setup_py_nodes()
    targets = set(nodes.values())
    # one `main` per node module (main today), or one entry point for all (the ros branch's)
    scripts = registry.console_scripts(targets.pop() if len(targets) == 1 else "{module}:main")
    assert sorted(scripts[:-1]) == sorted(f"{k}={v}" for k, v in nodes.items())
    assert scripts[-1] == "dl-perception=dl_perception.cli:console"


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
        assert node_class.model_name == network.name
        assert importlib.import_module(network.model_module).MODEL.name == network.name


def test_docs_table_names_every_executable():
    table = registry.markdown_table()
    assert all(f"`{name}`" in table for name in registry.node_classes())


def test_architecture_docs_table_is_the_registrys():
    text = open(os.path.join(REPO_DIR, "docs", "architecture.md")).read()
    start = text.index("<!-- registry table -->\n") + len("<!-- registry table -->\n")
    assert text[start:text.index("<!-- end registry table -->")] == registry.markdown_table()
