"""Import structure (read from the source, nothing imported): no cycles between modules of the
package, and no module outside dl_perception/ros/ importing rclpy or ROS message packages
(docs/architecture.md, "The shape in one picture")."""
import ast
import functools
import os
import sys

from dl_perception.core.paths import REPO_DIR

PACKAGE = "dl_perception"
ROS_PACKAGES = {"rclpy", "rosidl_runtime_py", "sensor_msgs", "std_msgs", "geometry_msgs",
                "nav_msgs", "diagnostic_msgs", "std_srvs", "tf2_ros", "tf2_msgs",
                "rcl_interfaces", "builtin_interfaces", "visualization_msgs", "launch",
                "launch_ros"}
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


def test_no_import_cycles():
    """The layers of docs/architecture.md import downwards only: no two modules import each
    other, directly or through others, lazy imports included."""
    assert cycles(import_graph()) == []


def test_no_rclpy_outside_ros():
    """rclpy and ROS message packages are imported in dl_perception/ros/ only, and only the
    entry layer (cli.py, commands/) imports dl_perception.ros (lazily, to start a ROS program)."""
    assert ros_outside_ros() == frozenset()


def test_the_layer_checks_see_a_cycle_and_an_rclpy_import(tmp_path, monkeypatch):
    """The two checks above on a package made to break them (they could pass by reading
    nothing)."""
    package = tmp_path / PACKAGE
    (package / "ros").mkdir(parents=True)
    for name, text in {"__init__.py": "", "a.py": "from . import b\n",
                       "b.py": "def f():\n    from .a import g\n",
                       "core.py": "import rclpy.node\n", "ros/__init__.py": "",
                       "ros/node.py": "import rclpy\n",
                       "uses_ros.py": "from .ros.node import x\n"}.items():
        (package / name).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "REPO_DIR", str(tmp_path))
    for cached in (module_files, import_graph, ros_outside_ros):
        cached.cache_clear()
    try:
        assert cycles(import_graph()) == [{f"{PACKAGE}.a", f"{PACKAGE}.b"}]
        assert ros_outside_ros() == {f"{PACKAGE}.core", f"{PACKAGE}.uses_ros"}
    finally:
        for cached in (module_files, import_graph, ros_outside_ros):
            cached.cache_clear()
