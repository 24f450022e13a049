"""`dl-perception eval closed-loop`: fly policies in evaluation worlds and report the distance
flown before the first collision (capped), without ROS, as fast as the CPU allows.

Policies, all from the same start pose (the route's first crossing, facing along the street):
- expert: the ground-truth autopilot (the upper baseline).
- dronet: the network on the rendered camera frame (camera_rate_hz), its outputs through the
  real DroNet control law (dl_perception/navigation/control.py) at control_rate_hz, as dronet_node and
  dronet_control_node do in ROS.
- straight: fly forward at the DroNet controller's top speed, never turn (the lower baseline).
A flight ends at the first collision, at `cap_m` metres, after `max_time_s` simulated seconds,
or when it stalls (less than `stall_m` flown in the last `stall_s` simulated seconds: a policy
that hovers in place gets no further, and the evaluation need not wait for the time limit).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..core.paths import shipped_weights
from ..navigation.control import DroNetController, DroNetControlParams
from .expert import ExpertAutopilot
from .simulator import Simulator

POLICIES = ("expert", "dronet", "straight")


@dataclass
class ClosedLoopConfig:
    seeds: list[int]
    cap_m: float = 300.0
    max_time_s: float = 300.0
    stall_s: float = 30.0
    stall_m: float = 1.0
    preset: str = "day"
    route: str = "loop"
    weights: str | None = None
    policies: list[str] = field(default_factory=lambda: list(POLICIES))
    camera_rate_hz: float = 10.0
    control_rate_hz: float = 30.0
    physics_rate_hz: float = 60.0
    altitude: float = 1.5
    control: DroNetControlParams = field(default_factory=lambda: DroNetControlParams(
        max_forward_velocity=2.0, max_yaw_rate=1.0))

    def validate(self) -> None:
        unknown = [p for p in self.policies if p not in POLICIES]
        if unknown:
            raise ValueError(f"unknown policies {unknown} (known: {', '.join(POLICIES)})")
        if not self.seeds:
            raise ValueError("no world seeds given")
        if not (self.cap_m > 0 and self.max_time_s > 0):
            raise ValueError("cap and max time must be positive")
        self.control.validate()


class DroNetPolicy:
    def __init__(self, weights: str, control: DroNetControlParams):
        import torch

        from .. import models
        self.torch = torch
        self.model = models.load(weights, expected="dronet").eval()
        self.controller = DroNetController(control)
        self.frames = 0

    def perceive(self, rgb: np.ndarray, stamp: float) -> None:
        from ..core.imaging import DecodedImage
        with self.torch.inference_mode():
            out = self.model(self.model.preprocess(DecodedImage(rgb, "rgb8")))
        self.controller.update_perception(float(out["steering"][0]),
                                          float(out["collision_probability"][0]), stamp)
        self.frames += 1


def fly(sim: Simulator, policy: str, cfg: ClosedLoopConfig, dronet: DroNetPolicy | None) -> dict:
    """One flight; returns distance (capped), whether it ended in a collision, and its time."""
    frame_every = max(1, int(round(cfg.physics_rate_hz / cfg.camera_rate_hz)))
    control_every = max(1, int(round(cfg.physics_rate_hz / cfg.control_rate_hz)))
    expert = ExpertAutopilot(sim) if policy == "expert" else None
    if dronet is not None:
        dronet.controller.reset()
    step, collided, stalled = 0, False, False
    history: list[tuple[float, float]] = []  # (time, distance) once per simulated second
    while sim.distance < cfg.cap_m and sim.time < cfg.max_time_s:
        if step % int(round(cfg.physics_rate_hz)) == 0:
            history.append((sim.time, sim.distance))
            past = [d for t, d in history if t <= sim.time - cfg.stall_s]
            if past and sim.distance - past[-1] < cfg.stall_m:
                stalled = True
                break
        if dronet is not None and step % frame_every == 0:
            rgb, _ = sim.render()
            dronet.perceive(rgb, sim.time)
        if step % control_every == 0:
            climb = 1.0 * (cfg.altitude - sim.state.position[2])
            if expert is not None:
                command = expert.command()
                sim.set_command(command.forward, 0.0, climb, command.yaw_rate)
            elif dronet is not None:
                command = dronet.controller.step(sim.time)
                sim.set_command(command.forward_velocity, 0.0, climb, command.yaw_rate)
            else:
                sim.set_command(cfg.control.max_forward_velocity, 0.0, climb, 0.0)
        if sim.step():
            collided = True
            break
        step += 1
    return {"distance_m": min(sim.distance, cfg.cap_m), "collided": collided,
            "stalled": stalled, "time_s": round(sim.time, 2)}


def evaluate_closed_loop(cfg: ClosedLoopConfig, log=print) -> dict:
    cfg.validate()
    dronet = None
    if "dronet" in cfg.policies:
        weights = cfg.weights or shipped_weights("dronet", "sim")
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"DroNet weights not found: {weights} (pass --weights)")
        dronet = DroNetPolicy(weights, cfg.control)
        cfg.weights = weights
    flights: dict[str, list[dict]] = {p: [] for p in cfg.policies}
    for seed in cfg.seeds:
        sim = Simulator(seed, cfg.preset, route=cfg.route, altitude=cfg.altitude,
                        physics_rate_hz=cfg.physics_rate_hz)
        try:
            for policy in cfg.policies:
                started = time.monotonic()
                sim.reset()
                flight = fly(sim, policy, cfg, dronet if policy == "dronet" else None)
                flights[policy].append({"seed": seed, **flight})
                log(f"world {seed} {policy:8s} {flight['distance_m']:6.1f} m in "
                    f"{flight['time_s']:5.1f} s, {'collided' if flight['collided'] else 'stalled' if flight['stalled'] else 'no collision'}"
                    f" ({time.monotonic() - started:.0f} s)")
        finally:
            sim.close()
    rows = []
    for policy in cfg.policies:
        distances = [f["distance_m"] for f in flights[policy]]
        rows.append({"policy": policy, "mean_m": float(np.mean(distances)),
                     "collided": f"{sum(f['collided'] for f in flights[policy])}/{len(distances)}",
                     **{f"seed_{f['seed']}": f["distance_m"] for f in flights[policy]}})
    if "straight" in cfg.policies:
        straight = next(r["mean_m"] for r in rows if r["policy"] == "straight")
        for row in rows:
            row["ratio_to_straight"] = row["mean_m"] / straight if straight > 0 else None
    return {"seeds": cfg.seeds, "cap_m": cfg.cap_m, "max_time_s": cfg.max_time_s,
            "preset": cfg.preset, "weights": cfg.weights, "rows": rows, "flights": flights}
