"""Declaring validated parameters (core.params.Param) with descriptors, the way every node of the
stack does."""
from __future__ import annotations

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.exceptions import ParameterException
from rclpy.node import Node

from ..core.params import Param


def descriptor(param: Param) -> ParameterDescriptor:
    """The ROS descriptor of `param`: its description, choices and numeric range."""
    result = ParameterDescriptor(name=param.name, description=param.description,
                                 read_only=param.read_only)
    if param.choices:
        result.additional_constraints = "one of: " + ", ".join(param.choices)
    if param.low is not None or param.high is not None:
        low = param.low if param.low is not None else -1e308
        high = param.high if param.high is not None else 1e308
        if isinstance(param.default, int) and not isinstance(param.default, bool):
            result.integer_range = [IntegerRange(
                from_value=int(max(low, -2**62)), to_value=int(min(high, 2**62)), step=0)]
        else:
            result.floating_point_range = [FloatingPointRange(
                from_value=float(low), to_value=float(high), step=0.0)]
    return result


class ParameterSet:
    """Declares `params` on `node`, rejects invalid values at start-up (ValueError) and at run
    time (a failed set_parameters result), and exposes current values as attributes."""

    def __init__(self, node: Node, params: list[Param]):
        self._node = node
        self._params = {p.name: p for p in params}
        for param in params:
            try:
                node.declare_parameter(param.name, param.default, descriptor(param))
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

    def get(self, name: str, default=None):
        """The current value of a declared parameter, else `default` (how a frame processor
        reads its parameters: live, so a `ros2 param set` applies from the next frame)."""
        return self[name] if self._node.has_parameter(name) else default
