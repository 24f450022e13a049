"""Console-script entry of every node executable: installs the stop-signal handlers
(ros/signals.py) before the heavy imports of the node module begin, then runs the node its name
says. Light on purpose (no rclpy, no torch at import).
"""
from __future__ import annotations

import os
import sys

from .signals import exit_process, stop_on_signals


def run_node(name: str, args: list[str]) -> int:
    """Run node executable `name` with command-line `args` (ROS arguments included)."""
    stop_on_signals()
    from .node_base import run_nodes
    from .nodes import node_class
    try:
        cls = node_class(name)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return run_nodes([lambda: cls(name)], args=[name, *args])


def main() -> None:
    """The node whose console script was started (camera_node, dronet_node, ...)."""
    exit_process(run_node(os.path.basename(sys.argv[0]), sys.argv[1:]))


if __name__ == "__main__":  # `python -m dl_perception.ros.entry NODE [--ros-args ...]` (launcher)
    exit_process(run_node(sys.argv[1], sys.argv[2:]))
