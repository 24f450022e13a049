"""DroNet's control law (Loquercio et al. 2018, rpg_public_dronet deep_navigation), free of ROS.

Forward speed is low-pass filtered towards (1 - p_collision) * max speed, yaw rate towards the
steering output clipped to [-1, 1] (scaled by max_yaw_rate). Three safety rules the official node
lacks or disables: a hard stop when p_collision reaches `critical_probability` (validated to lie in
(0, 1], so it can't be switched off the way the official launch file's 1.3 does), a zero command
with reset filters whenever the network's outputs are older than `input_timeout`, and outputs that
no sound network gives (non-finite, a probability outside [0, 1], |steering| above
`steering_limit`) are invalid: ignored like missing ones, so the last valid output holds until it
times out (clamping a probability of -0.5 to 0 would have meant full speed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class DroNetControlParams:
    max_forward_velocity: float = 0.5  # m/s at zero collision probability
    max_yaw_rate: float = 1.0  # rad/s for a steering output of 1
    alpha_velocity: float = 0.3  # low-pass weight of the new forward-speed target (official 0.3)
    alpha_yaw: float = 0.5  # low-pass weight of the new yaw target (official 0.5)
    critical_probability: float = 0.7  # stop at or above this collision probability
    input_timeout: float = 0.5  # s; older network outputs count as missing
    # |steering| above this is invalid input; between 1 and this it is clipped to [-1, 1]
    steering_limit: float = 2.0

    def validate(self) -> None:
        if not self.max_forward_velocity >= 0.0:
            raise ValueError("max_forward_velocity must be >= 0")
        if not self.max_yaw_rate >= 0.0:
            raise ValueError("max_yaw_rate must be >= 0")
        for name in ("alpha_velocity", "alpha_yaw"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in (0, 1]")
        if not 0.0 < self.critical_probability <= 1.0:
            raise ValueError("critical_probability must lie in (0, 1]; values above 1 would disable the stop")
        if not self.input_timeout > 0.0:
            raise ValueError("input_timeout must be > 0")
        if not 1.0 <= self.steering_limit < math.inf:
            raise ValueError("steering_limit must be >= 1 (steering is clipped to [-1, 1]) "
                             "and finite")

    def input_problem(self, steering: float, collision_probability: float) -> str | None:
        """Why a pair of network outputs is invalid input, or None when it is valid."""
        if not (math.isfinite(steering) and math.isfinite(collision_probability)):
            return "non-finite output"
        if not 0.0 <= collision_probability <= 1.0:
            return f"collision probability {collision_probability:.4g} outside [0, 1]"
        if abs(steering) > self.steering_limit:
            return f"steering {steering:.4g} beyond +-{self.steering_limit:g}"
        return None


@dataclass
class Command:
    forward_velocity: float
    yaw_rate: float
    reason: str  # "tracking", "stop: collision", "stop: stale input", "stop: no input"


class DroNetController:
    def __init__(self, params: DroNetControlParams | None = None):
        self.params = params or DroNetControlParams()
        self.params.validate()
        self.invalid_inputs = 0  # network outputs refused by `update_perception`
        self.reset()

    def reset(self) -> None:
        self.forward_velocity = 0.0
        self.yaw_rate = 0.0
        self._steering: float | None = None
        self._collision: float | None = None
        self._stamp: float | None = None

    def update_perception(self, steering: float, collision_probability: float,
                          stamp: float) -> bool:
        """Latest network outputs and the time (s) they refer to. Invalid outputs
        (`input_problem`) are counted and ignored; returns whether these were taken."""
        if self.params.input_problem(steering, collision_probability) is not None:
            self.invalid_inputs += 1
            return False
        self._steering = min(max(steering, -1.0), 1.0)
        self._collision = collision_probability
        self._stamp = stamp
        return True

    def step(self, now: float) -> Command:
        """One control period at time `now` (same clock as the perception stamps)."""
        p = self.params
        if self._stamp is None:
            self.forward_velocity = self.yaw_rate = 0.0
            return Command(0.0, 0.0, "stop: no input")
        if now - self._stamp > p.input_timeout:
            self.forward_velocity = self.yaw_rate = 0.0
            return Command(0.0, 0.0, "stop: stale input")
        target_velocity = (1.0 - self._collision) * p.max_forward_velocity
        self.forward_velocity += p.alpha_velocity * (target_velocity - self.forward_velocity)
        self.yaw_rate += p.alpha_yaw * (self._steering * p.max_yaw_rate - self.yaw_rate)
        if self._collision >= p.critical_probability:
            self.forward_velocity = 0.0
            return Command(0.0, self.yaw_rate, "stop: collision")
        return Command(self.forward_velocity, self.yaw_rate, "tracking")
