"""The one registry of the stack: every network (its model module, its frame processor, the node
that runs it) and every other ROS executable. setup.py's console scripts, the launcher's node
map, stack_node's hosted defaults, the model and processor maps and the docs tables are derived
from it (test_registry.py checks that they agree).

Plain data and the standard library only, no package imports: setup.py reads it by path
(`runpy.run_path("dl_perception/registry.py")`) before anything is installed.

Adding a network is its model file, its processor (when its output is new) and one
`Network(...)` line here: its node is generated from the processor (docs/architecture.md,
"Adding a sixth network").
"""
from __future__ import annotations

from dataclasses import dataclass

PACKAGE = "dl_perception"
CLI = "dl-perception=dl_perception.cli:console"
NODE_ENTRY = "dl_perception.ros.entry:main"


@dataclass(frozen=True)
class Network:
    name: str  # the model's registry name (checkpoint metadata "model")
    node: str  # executable and node name
    node_class: str  # name of its node class (ros/nodes.py makes it from the processor)
    summary: str  # one line for the docs tables
    hosted_by_default: bool = True  # stack_node hosts it when `nodes` is not set

    @property
    def model_module(self) -> str:
        return f"{PACKAGE}.models.{self.name}"

    @property
    def processor_module(self) -> str:
        return f"{PACKAGE}.processors.{self.name}"

    @property
    def node_module(self) -> str:
        return f"{PACKAGE}.ros.nodes"


@dataclass(frozen=True)
class Executable:
    """A ROS executable that runs no network of its own."""

    node: str
    node_class: str
    summary: str

    @property
    def node_module(self) -> str:
        return f"{PACKAGE}.ros.{self.node}"


NETWORKS = (
    Network("dronet", "dronet_node", "DroNetNode",
            "DroNet steering angle and collision probability (std_msgs/Float32)"),
    Network("lift", "lift_node", "LIFTNode",
            "LIFT keypoints and descriptors (PointCloud2), optional overlay"),
    Network("netvlad", "netvlad_node", "NetVLADNode",
            "NetVLAD place matches, place pose, loop closures"),
    Network("posenet", "posenet_node", "PoseNetNode",
            "PoseNet camera pose (PoseWithCovarianceStamped), TF"),
    Network("depth", "depth_node", "DepthNode",
            "Eigen et al. depth image (32FC1, m), its camera_info, points"),
)

EXECUTABLES = (
    Executable("dronet_control_node", "DroNetControlNode", "DroNet outputs -> /cmd_vel"),
    Executable("camera_node", "CameraNode", "synthetic corridor or a folder of images"),
    Executable("sim_node", "SimNode", "the MuJoCo simulator"),
    Executable("stack_node", "StackNode", "hosts the network nodes on one batching engine"),
    Executable("vo_node", "VONode", "monocular visual odometry on LIFT features"),
)


def network(name: str) -> Network:
    for each in NETWORKS:
        if each.name == name:
            return each
    raise KeyError(f"unknown network '{name}' (known: {', '.join(n.name for n in NETWORKS)})")


def node_classes() -> dict[str, str]:
    """Executable / node name -> "module:Class" (the launcher's map)."""
    return {each.node: f"{each.node_module}:{each.node_class}" for each in NETWORKS + EXECUTABLES}


def console_scripts() -> list[str]:
    """setup.py's console_scripts: every node executable runs the one entry point, which starts
    the node its name says (entry.py installs the stop-signal handlers before the node's heavy
    imports), and the CLI."""
    return [f"{node}={NODE_ENTRY}" for node in node_classes()] + [CLI]


def model_modules() -> dict[str, str]:
    """Network name -> module defining MODEL (models.MODEL_MODULES)."""
    return {each.name: each.model_module for each in NETWORKS}


def processor_modules() -> dict[str, str]:
    """Node name -> module defining PROCESSOR (processors.PROCESSOR_MODULES): all five."""
    return {each.node: each.processor_module for each in NETWORKS}


def hosted_defaults() -> list[str]:
    """The nodes stack_node hosts when its `nodes` parameter is not set."""
    return [each.node for each in NETWORKS if each.hosted_by_default]


def markdown_table() -> str:
    """The executables table of the docs: what each runs."""
    rows = ["| executable | network | what |", "|---|---|---|"]
    rows += [f"| `{n.node}` | `{n.name}` | {n.summary} |" for n in NETWORKS]
    rows += [f"| `{e.node}` | - | {e.summary} |" for e in EXECUTABLES]
    return "\n".join(rows) + "\n"


__all__ = ["EXECUTABLES", "NETWORKS", "Executable", "Network", "console_scripts",
           "hosted_defaults", "markdown_table", "model_modules", "network", "node_classes",
           "processor_modules"]
