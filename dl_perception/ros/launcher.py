"""`dl-perception launch CONFIG.yaml`: start the nodes a ROS parameters file configures, in one
process, from the same file `ros2 launch dl_perception perception.launch.py` reads.

Every top-level key of the YAML naming a known executable starts that node with its
`ros__parameters`; `/**` sections apply to all nodes, as in ROS.
"""
from __future__ import annotations

import importlib

import yaml

# executable / node name -> "module:class"
NODE_CLASSES = {
    "dronet_node": "dl_perception.ros.dronet_node:DroNetNode",
    "dronet_control_node": "dl_perception.ros.dronet_control_node:DroNetControlNode",
    "camera_node": "dl_perception.ros.camera_node:CameraNode",
    "sim_node": "dl_perception.ros.sim_node:SimNode",
    "lift_node": "dl_perception.ros.lift_node:LIFTNode",
    "vo_node": "dl_perception.ros.vo_node:VONode",
    "netvlad_node": "dl_perception.ros.netvlad_node:NetVLADNode",
    "posenet_node": "dl_perception.ros.posenet_node:PoseNetNode",
    "depth_node": "dl_perception.ros.depth_node:DepthNode",
}


def node_class(name: str):
    module, cls = NODE_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def configured_nodes(config_path: str) -> list[str]:
    """Node names the parameters file configures, in file order."""
    with open(config_path) as handle:
        config = yaml.safe_load(handle) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a ROS parameters mapping")
    names = []
    for key in config:
        name = str(key).lstrip("/")
        if name == "**":
            continue
        if name not in NODE_CLASSES:
            raise ValueError(f"{config_path}: unknown node '{key}' "
                             f"(known: {', '.join(sorted(NODE_CLASSES))})")
        names.append(name)
    return names


def launch(config_path: str, only: list[str] | None = None, executor: str = "single",
           duration: float | None = None, ros_args: list[str] | None = None) -> int:
    from .node_base import run_nodes

    names = configured_nodes(config_path)
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ValueError(f"{config_path} does not configure {unknown} (it has {names})")
        names = [n for n in names if n in only]
    args = ["dl-perception", "--ros-args", "--params-file", config_path, *(ros_args or [])]
    factories = [lambda name=name: node_class(name)(name) for name in names]
    print(f"launching {', '.join(names)} from {config_path} ({executor}-threaded executor)")
    return run_nodes(factories, args=args, executor_kind=executor, duration=duration)
