"""Throttling of repeated log messages by kind, without ROS: rclpy throttles per call site, so
every message a processor sends through one callback would share one throttle and a frequent
warning would hide a rare one."""
from __future__ import annotations

import re
import time

_NUMBER = re.compile(r"[-+]?\d+(\.\d*)?([eE][-+]?\d+)?")


def message_kind(text: str) -> str:
    """The text with its numbers taken out: the same warning about another frame or value is
    the same kind."""
    return _NUMBER.sub("#", text)


class MessageThrottle:
    """Lets each kind of message through at most once per `period` seconds and says how many of
    that kind it held back since the last one it let through."""

    def __init__(self, period: float, clock=time.monotonic):
        self.period = period
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, text: str) -> str | None:
        """The line to log now, or None while this kind is throttled."""
        kind, now = message_kind(text), self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.period:
            self._held[kind] = self._held.get(kind, 0) + 1
            return None
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        return f"{text} ({held} more like it in the last {now - last:.0f} s)" if held else text
