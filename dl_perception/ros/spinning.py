"""The spin loop of every long-running command: until SIGINT/SIGTERM or a deadline."""
from __future__ import annotations

import time

import rclpy
from rclpy.executors import ExternalShutdownException

from .signals import stop_requested


def spin_until_stopped(executor, duration: float | None = None, period: float = 0.1) -> None:
    """Spin `executor` until rclpy's signal handlers shut the context down (SIGINT/SIGTERM), a
    stop is requested (entry.py) or `duration` seconds have passed."""
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while rclpy.ok() and not stop_requested() and (
                deadline is None or time.monotonic() < deadline):
            executor.spin_once(timeout_sec=period)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # a signal that lands between rclpy.ok() and the wait set shuts the context down
        # under spin_once, which then fails (to build its wait set, or to take a message:
        # RuntimeError from the bindings). rclpy shuts down from its signal thread, so ok() may
        # still be true for a moment: a stop if it turns false soon, a fault otherwise.
        if not _shuts_down_within(SHUTDOWN_GRACE_S):
            raise


SHUTDOWN_GRACE_S = 2.0


def _shuts_down_within(seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while rclpy.ok():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
