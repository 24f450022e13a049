"""Import structure (read from the source, nothing imported): cycles between modules of the
package, and modules outside dl_perception/ros/ that import rclpy or ROS message packages.

The cycles and ROS imports that exist today are recorded below; a new one fails here. Phase B of
docs/architecture.md removes them, empties the lists, and the xfail tests then pass (strict:
they fail as soon as that happens, so the marks are removed with the lists)."""
import ast
import functools
import os

import pytest

from dl_perception.paths import REPO_DIR

PACKAGE = "dl_perception"
ROS_PACKAGES = {"rclpy", "rosidl_runtime_py", "sensor_msgs", "std_msgs", "geometry_msgs",
                "nav_msgs", "diagnostic_msgs", "std_srvs", "tf2_ros", "tf2_msgs",
                "rcl_interfaces", "builtin_interfaces", "visualization_msgs", "launch",
                "launch_ros"}
# every cycle (a strongly connected set of modules) in main on 2026-12-07, after the merges of
# ros (entry.py's stop-signal state joined launcher <-> stack_node) and netvlad (place_sets)
KNOWN_CYCLES = [
    {"dl_perception.evaluation.dronet", "dl_perception.training.dronet"},
    {"dl_perception.evaluation.posenet", "dl_perception.training.posenet"},
    {"dl_perception.ros.entry", "dl_perception.ros.launcher", "dl_perception.ros.node_base",
     "dl_perception.ros.spinning", "dl_perception.ros.stack_node"},
    {"dl_perception.datasets.places", "dl_perception.datasets.place_sets"},
]
# rclpy code outside ros/ (phase B moves it there: demo.py to ros/demo.py, the `node` verbs'
# rclpy Parameter building to ros/)
KNOWN_ROS_OUTSIDE = {"dl_perception.demo", "dl_perception.commands.depth",
                     "dl_perception.commands.dronet", "dl_perception.commands.lift"}


@functools.lru_cache(maxsize=1)
def module_files() -> dict[str, str]:
    root = os.path.join(REPO_DIR, PACKAGE)
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, REPO_DIR)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                files[".".join(parts)] = path
    return files


def imports_of(module: str, path: str, known: set[str]) -> set[str]:
    """Modules `module` imports (at any depth of the file: lazy imports count), resolved to
    package modules where they are ones, else their top-level name."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module
            for alias in node.names:
                candidate = f"{stem}.{alias.name}"
                found.add(candidate if candidate in known else stem)
    return found


@functools.lru_cache(maxsize=1)
def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {module: {m for m in imports_of(module, path, known) if m in known and m != module}
            for module, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def in_ros(module: str) -> bool:
    return module == f"{PACKAGE}.ros" or module.startswith(f"{PACKAGE}.ros.")


@functools.lru_cache(maxsize=1)
def ros_outside_ros() -> frozenset[str]:
    """Modules outside ros/ importing rclpy or ROS message packages, and modules below the
    command layer (cli.py, commands/: they may start ROS programs) importing dl_perception.ros."""
    files = module_files()
    found = set()
    for module, path in files.items():
        if in_ros(module):
            continue
        imported = imports_of(module, path, set(files))
        entry = module == f"{PACKAGE}.cli" or module.startswith(f"{PACKAGE}.commands")
        if ({m.split(".")[0] for m in imported} & ROS_PACKAGES
                or (not entry and any(in_ros(m) for m in imported))):
            found.add(module)
    return frozenset(found)


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_new_import_cycles():
    found = cycles(import_graph())
    new = [c for c in found if not any(c <= known for known in KNOWN_CYCLES)]
    assert not new, f"new import cycles: {new}"


def test_no_new_ros_imports_outside_ros():
    assert ros_outside_ros() <= KNOWN_ROS_OUTSIDE


@pytest.mark.xfail(strict=True, reason="phase B (docs/architecture.md): training <-> evaluation "
                   "of dronet and posenet, ros.launcher <-> ros.stack_node")
def test_no_import_cycles():
    assert cycles(import_graph()) == []


@pytest.mark.xfail(strict=True, reason="phase B moves demo.py (an rclpy program) into ros/ and "
                   "the rclpy Parameter building of commands/{depth,dronet,lift}.py")
def test_no_rclpy_outside_ros():
    assert ros_outside_ros() == set()
