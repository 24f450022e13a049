"""Declaring validated parameters with descriptors, the way every node of the stack does."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.exceptions import ParameterException
from rclpy.node import Node


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

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(name=self.name, description=self.description,
                                         read_only=self.read_only)
        if self.choices:
            descriptor.additional_constraints = "one of: " + ", ".join(self.choices)
        if self.low is not None or self.high is not None:
            low = self.low if self.low is not None else -1e308
            high = self.high if self.high is not None else 1e308
            if isinstance(self.default, int) and not isinstance(self.default, bool):
                descriptor.integer_range = [IntegerRange(
                    from_value=int(max(low, -2**62)), to_value=int(min(high, 2**62)), step=0)]
            else:
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(low), to_value=float(high), step=0.0)]
        return descriptor

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


class ParameterSet:
    """Declares `params` on `node`, rejects invalid values at start-up (ValueError) and at run
    time (a failed set_parameters result), and exposes current values as attributes."""

    def __init__(self, node: Node, params: list[Param]):
        self._node = node
        self._params = {p.name: p for p in params}
        for param in params:
            try:
                node.declare_parameter(param.name, param.default, param.descriptor())
            except ParameterException as error:  # e.g. an override outside the range
                raise ValueError(f"{node.get_name()}: invalid parameter '{param.name}': {error}") \
                    from None
            problem = param.check(node.get_parameter(param.name).value)
            if problem:
                raise ValueError(f"{node.get_name()}: invalid parameter {problem}")
        node.add_on_set_parameters_callback(self._on_set)

    def _on_set(self, changes) -> SetParametersResult:
        for change in changes:
            param = self._params.get(change.name)
            problem = param.check(change.value) if param else None
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    def __getitem__(self, name: str):
        return self._node.get_parameter(name).value
