"""Console-script entry of every node executable, and the stop-signal rule of every long-running
ROS process: SIGINT or SIGTERM at any moment, imports and start-up included, ends the process
with status 0 (what `ros2 launch` and launch_testing expect of a process asked to shut down).

Until the process starts running (`mark_running()`, just before rclpy.init), a stop signal
exits at once: nothing needs cleaning up while modules import. Afterwards it only records the
request (`stop_requested()`) and rclpy's own handlers shut the context down, so spin loops end
and nodes are destroyed in order. The handlers never raise: an exception raised from a signal
handler inside a C++ call (torch, rclpy) would abort the process.

Light on purpose (no rclpy, no torch at import): the handlers are in place before the heavy
imports of a node module begin.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

_stop = threading.Event()
_running = threading.Event()


def _on_stop_signal(signum, frame) -> None:
    if not _running.is_set():
        os._exit(0)
    _stop.set()


def stop_on_signals() -> None:
    signal.signal(signal.SIGINT, _on_stop_signal)
    signal.signal(signal.SIGTERM, _on_stop_signal)


def mark_running() -> None:
    """From now on a stop signal asks the process to stop instead of ending it."""
    _running.set()


def stop_requested() -> bool:
    return _stop.is_set()


def exit_process(code: int) -> None:
    """End the process now that its ROS work is done: once a ROS process ran (nodes destroyed,
    bags closed), skip the interpreter's teardown of torch and the middleware, which takes
    seconds on a loaded machine, longer than launch waits after SIGINT before escalating."""
    if _running.is_set():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def run_node(name: str, args: list[str]) -> int:
    """Run node executable `name` with command-line `args` (ROS arguments included)."""
    stop_on_signals()
    from .launcher import node_class
    from .node_base import run_nodes
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
