"""The expert autopilot: follows the route's waypoints and avoids obstacles using ground truth
(a fan of range rays from the engine), flying forward and yawing only, as DroNet does.

Labels (docs/simulator.md, "Labels"):
- steering: the expert's yaw-rate command divided by `max_yaw_rate`, in [-1, 1], positive =
  turn left (+angular.z), DroNet's sign and scale.
- collision: 1 when an obstacle lies inside the corridor ahead (the hull's width plus
  `label_margin` on each side) closer than `collision_distance` metres, else 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class ExpertParams:
    cruise_speed: float = 2.0  # m/s
    max_yaw_rate: float = 1.0  # rad/s at steering 1 (the DroNet controller's default scale)
    steering_gain: float = 2.0  # normalised steering per radian of heading error
    waypoint_radius: float = 3.0  # m; the next waypoint is taken within this distance
    corridor_half_width: float = 0.6  # m; clearance corridor used for planning
    safe_distance: float = 5.0  # m; clearance below which a heading is penalised
    stop_distance: float = 1.0  # m; no forward motion below this clearance
    collision_distance: float = 2.0  # m; the collision label's distance
    label_margin: float = 0.25  # m beside the hull for the collision label
    max_range: float = 15.0
    hull_half_width: float = 0.25


@dataclass
class ExpertCommand:
    forward: float  # m/s
    yaw_rate: float  # rad/s
    steering: float  # normalised yaw command, the DroNet steering label
    collision: int  # the DroNet collision label
    clearance: float  # m free ahead


class ExpertAutopilot:
    RAY_ANGLES = np.radians(np.arange(-120.0, 120.1, 2.0))
    CANDIDATES = np.radians(np.arange(-90.0, 90.1, 5.0))

    def __init__(self, sim, params: ExpertParams | None = None, route: np.ndarray | None = None):
        self.sim = sim
        self.params = params or ExpertParams()
        self.route = sim.route if route is None else route
        self.target = 1
        self._previous = 0.0

    @property
    def waypoint(self) -> np.ndarray:
        return self.route[self.target % len(self.route)]

    def corridor_clearance(self, ranges: np.ndarray, headings: np.ndarray,
                           half_width: float) -> np.ndarray:
        """Free distance along each relative heading inside a corridor of +-half_width, from
        the ray hits (all relative to the body's yaw)."""
        relative = self.RAY_ANGLES[None, :] - headings[:, None]
        along = ranges[None, :] * np.cos(relative)
        across = np.abs(ranges[None, :] * np.sin(relative))
        hits = (along > 0) & (across < half_width) & (ranges[None, :] < self.params.max_range)
        return np.where(hits, along, self.params.max_range).min(axis=1)

    def command(self) -> ExpertCommand:
        p, state = self.params, self.sim.state
        while np.linalg.norm(self.waypoint - state.position[:2]) < p.waypoint_radius:
            self.target += 1
        ranges = self.sim.ranges(self.RAY_ANGLES, p.max_range)
        clearance = self.corridor_clearance(ranges, self.CANDIDATES, p.corridor_half_width)
        goal = self.waypoint - state.position[:2]
        goal_error = np.abs(np.remainder(math.atan2(goal[1], goal[0]) - state.yaw
                                         - self.CANDIDATES + math.pi, 2 * math.pi) - math.pi)
        blocked = np.clip(1.0 - clearance / p.safe_distance, 0.0, 1.0)
        cost = goal_error + 0.25 * np.abs(self.CANDIDATES) + 4.0 * blocked ** 2 \
            + 10.0 * (clearance < p.stop_distance + 0.5) \
            + 0.15 * np.abs(self.CANDIDATES - self._previous)
        best = float(self.CANDIDATES[int(np.argmin(cost))])
        self._previous = best
        steering = float(np.clip(p.steering_gain * best, -1.0, 1.0))
        ahead = float(self.corridor_clearance(ranges, np.zeros(1), p.corridor_half_width)[0])
        speed = p.cruise_speed * float(np.clip((ahead - p.stop_distance) / 3.0, 0.0, 1.0)) \
            * max(0.2, 1.0 - 0.7 * abs(steering))
        label_ahead = float(self.corridor_clearance(
            ranges, np.zeros(1), p.hull_half_width + p.label_margin)[0])
        return ExpertCommand(speed, steering * p.max_yaw_rate, steering,
                             int(label_ahead < p.collision_distance), ahead)
