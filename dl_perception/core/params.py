"""A node parameter as data (name, default, description, allowed values), with no rclpy: frame
processors declare theirs here, and a ROS node declares them with descriptors
(ros/params.py), so the node's parameters and the offline `process` defaults are one list."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class Param:
    name: str
    default: object
    description: str
    choices: tuple = ()  # allowed string values
    low: float | None = None  # numeric range (inclusive)
    high: float | None = None
    read_only: bool = False
    validator: Callable[[object], str | None] | None = None  # extra rule; returns the problem

    def check(self, value) -> str | None:
        """Why `value` is invalid, or None."""
        if self.validator is not None:
            problem = self.validator(value)
            if problem:
                return f"'{self.name}': {problem}"
        elif self.choices and value not in self.choices:
            return f"'{self.name}' must be one of {', '.join(self.choices)}, got '{value}'"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (self.low is not None and value < self.low) or (
                    self.high is not None and value > self.high):
                return f"'{self.name}' must lie in [{self.low}, {self.high}], got {value}"
        return None
