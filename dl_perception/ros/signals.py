"""The stop-signal rule of every long-running ROS process: SIGINT or SIGTERM at any moment,
imports and start-up included, ends the process with status 0 (what `ros2 launch` and
launch_testing expect of a process asked to shut down).

Until the process starts running (`mark_running()`, just before rclpy.init), a stop signal
exits at once: nothing needs cleaning up while modules import. Afterwards it only records the
request (`stop_requested()`) and rclpy's own handlers shut the context down, so spin loops end
and nodes are destroyed in order. The handlers never raise: an exception raised from a signal
handler inside a C++ call (torch, rclpy) would abort the process.

Standard library only and no package imports: the handlers are in place before the heavy imports
of a node module begin, and every ROS module may import it (ros/entry.py starts the nodes).
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
