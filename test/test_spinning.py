"""The spin loop's stop handling: a failure under spin_once while rclpy's signal thread shuts the
context down is a clean stop; the same failure with the context staying up is a fault."""
import threading

import pytest

from dl_perception.ros import spinning


class FailingExecutor:
    def spin_once(self, timeout_sec):
        raise RuntimeError("Unable to convert call argument '0' to Python object")


def test_failure_while_the_context_shuts_down_is_a_stop(monkeypatch):
    state = {"ok": True}
    monkeypatch.setattr(spinning.rclpy, "ok", lambda: state["ok"])
    threading.Timer(0.2, lambda: state.update(ok=False)).start()  # the signal thread, late
    spinning.spin_until_stopped(FailingExecutor(), duration=5)


def test_failure_with_the_context_up_is_raised(monkeypatch):
    monkeypatch.setattr(spinning.rclpy, "ok", lambda: True)
    monkeypatch.setattr(spinning, "SHUTDOWN_GRACE_S", 0.1)
    with pytest.raises(RuntimeError, match="convert call argument"):
        spinning.spin_until_stopped(FailingExecutor(), duration=5)
