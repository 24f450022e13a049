"""`dl-perception sim record`: the expert flies a route and every camera frame is written in
the sequence layout (docs/datasets.md) with its pose, depth and DroNet labels, plus a rosbag2
of every simulator topic in OUT/bag. Core only (no ROS); the same arguments give the same
folder.

Perturbations (`perturb` > 0) make the recorded flight leave the expert's path now and then:
for 1-3 s the drone flies at 1.5 m/s with its yaw command replaced (turn towards the nearest
obstacle within 60 degrees, hold straight, or a random turn) while the labels stay the expert's commands, so the data covers states a learned policy
drifts into (close to walls, heading at obstacles) with the expert's correction as the label.
A perturbation ends early when the corridor ahead is shorter than the expert's stop distance.

With `pilot_weights` a DroNet checkpoint flies instead (DAgger): its outputs through the DroNet
control law steer the drone while every frame keeps the expert's labels, so the data shows the
states that policy visits, its mistakes included. The expert takes over for `takeover_s` when the
corridor ahead is shorter than `takeover_clearance` or the policy has stalled, so one flight
keeps going after a mistake.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..datasets.sequence import Camera, SequenceWriter
from ..core.progress import progress
from .expert import ExpertAutopilot, ExpertParams
from .scene import CameraSpec
from .simulator import Simulator
from .world import WorldError

FRAME_IDS = {"camera": "camera_optical_frame", "odom": "odom", "base": "base_link"}


@dataclass
class RecordConfig:
    world_seed: int
    out: str
    preset: str = "day"
    route: str = "loop"
    route_seed: int = 0
    frames: int = 600
    rate_hz: float = 10.0  # camera frames per simulated second
    control_rate_hz: float = 30.0
    physics_rate_hz: float = 60.0
    world_size: float = 64.0
    altitude: float = 1.5
    perturb: float = 0.0  # fraction of the flight spent perturbed
    pilot_weights: str | None = None  # DroNet checkpoint flying the drone (DAgger); None: the expert
    bag: bool = True
    randomize: bool = False  # domain randomisation (sim/randomization.py), seeded by the world
    #                          and route seeds; it replaces the camera's hfov and the altitude
    camera: CameraSpec = field(default_factory=CameraSpec)
    expert: ExpertParams = field(default_factory=ExpertParams)

    def validate(self) -> None:
        if not (isinstance(self.frames, int) and self.frames >= 1):
            raise WorldError(f"frames must be a positive integer, got {self.frames!r}")
        for name in ("rate_hz", "control_rate_hz"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= self.physics_rate_hz):
                raise WorldError(f"{name} must lie in (0, physics rate {self.physics_rate_hz}]")
        if not 0.0 <= self.perturb < 1.0:
            raise WorldError(f"perturb must lie in [0, 1), got {self.perturb}")
        if self.pilot_weights is not None and self.perturb > 0:
            raise WorldError("perturb and a DroNet pilot exclude each other")


class Perturbation:
    """Replaces the flown yaw command for short random intervals (see module doc)."""

    def __init__(self, fraction: float, seed: int, max_yaw_rate: float):
        self.fraction = fraction
        self.rng = np.random.default_rng(seed)
        self.max_yaw_rate = max_yaw_rate
        self.until = -1.0
        self.yaw_rate = 0.0
        self.heading: float | None = None  # world yaw to hold while approaching an obstacle
        self.speed = 1.5  # m/s flown while perturbed: stops within the stop distance

    def apply(self, sim, dt: float, command, stop_distance: float) -> tuple[float, float]:
        """(forward, yaw_rate) to fly instead of the expert's command."""
        now = sim.time
        if now < self.until:
            if command.clearance < stop_distance:
                self.until = now
            elif self.heading is not None:
                error = math.remainder(self.heading - sim.state.yaw, 2 * math.pi)
                return self.speed, float(np.clip(2.0 * error, -1, 1)) * self.max_yaw_rate
            else:
                return self.speed, self.yaw_rate
        mean_duration = 2.0
        start_rate = self.fraction / (1.0 - self.fraction) / mean_duration
        if self.fraction > 0 and self.rng.random() < start_rate * dt:
            self.until = now + self.rng.uniform(1.0, 3.0)
            mode = self.rng.random()
            self.heading = None
            self.yaw_rate = 0.0
            if mode < 0.5:  # approach the nearest obstacle within +-60 degrees
                angles = np.radians(np.arange(-60.0, 60.1, 5.0))
                ranges = sim.ranges(angles, 12.0)
                if ranges.min() < 12.0:
                    self.heading = sim.state.yaw + float(angles[int(np.argmin(ranges))])
            elif mode < 0.75:
                self.yaw_rate = self.rng.uniform(-1.0, 1.0) * self.max_yaw_rate
        return command.forward, command.yaw_rate


class DroNetPilot:
    """DAgger: the network flies through the DroNet control law; the expert takes over for
    `takeover_s` when the corridor ahead is shorter than `takeover_clearance` or the drone has
    flown under `stall_m` in the last `stall_s` (see module doc)."""

    takeover_clearance = 1.0  # m free ahead (the expert's stop distance)
    takeover_s = 2.0
    stall_s, stall_m = 3.0, 0.5

    def __init__(self, weights: str, max_forward_velocity: float, max_yaw_rate: float):
        from ..navigation.control import DroNetControlParams
        from .closed_loop import DroNetPolicy
        self.policy = DroNetPolicy(weights, DroNetControlParams(
            max_forward_velocity=max_forward_velocity, max_yaw_rate=max_yaw_rate))
        self.until = -1.0
        self.progress = (0.0, 0.0)  # (time, distance) when the drone last made progress
        self.takeovers = 0

    def perceive(self, rgb: np.ndarray, stamp: float) -> None:
        self.policy.perceive(rgb, stamp)

    def apply(self, sim, command) -> tuple[float, float]:
        """(forward, yaw_rate) to fly: the network's, or the expert's while it has taken over."""
        now = sim.time
        if sim.distance - self.progress[1] >= self.stall_m:
            self.progress = (now, sim.distance)
        if now >= self.until and (command.clearance < self.takeover_clearance
                                  or now - self.progress[0] > self.stall_s):
            self.until = now + self.takeover_s
            self.progress = (self.until, sim.distance)
            self.takeovers += 1
        network = self.policy.controller.step(now)  # keeps its filters running meanwhile
        if now < self.until:
            return command.forward, command.yaw_rate
        return network.forward_velocity, network.yaw_rate


def _ticks(rate_hz: float, physics_rate_hz: float) -> int:
    return max(1, int(round(physics_rate_hz / rate_hz)))


def randomized_setup(cfg: RecordConfig):
    """(randomization, photos, camera, altitude, image effects) of a recording: the draw for
    its seeds under --randomize, else None and the configured camera and altitude."""
    if not cfg.randomize:
        return None, None, cfg.camera, cfg.altitude, None
    from .randomization import ImageRandomizer, draw_randomization, photo_pool
    randomization = draw_randomization(cfg.world_seed * 1000 + cfg.route_seed, cfg.world_size)
    photos = photo_pool()
    if not photos:
        raise WorldError("--randomize needs real photographs for textures: none found in the "
                         "shared data folder (set DL_PERCEPTION_DATA; see docs/simulator.md)")
    camera = CameraSpec(cfg.camera.width, cfg.camera.height, randomization.hfov_deg)
    return randomization, photos, camera, randomization.altitude, ImageRandomizer(randomization)


def record(cfg: RecordConfig) -> dict:
    cfg.validate()
    randomization, photos, camera_spec, altitude, image_effects = randomized_setup(cfg)
    sim = Simulator(cfg.world_seed, cfg.preset, camera_spec, cfg.world_size, cfg.route,
                    cfg.route_seed, altitude, cfg.physics_rate_hz,
                    randomization=randomization, photos=photos)
    expert = ExpertAutopilot(sim, cfg.expert)
    perturbation = Perturbation(cfg.perturb, cfg.world_seed * 1000 + cfg.route_seed,
                                cfg.expert.max_yaw_rate)
    pilot = None if cfg.pilot_weights is None else DroNetPilot(
        cfg.pilot_weights, cfg.expert.cruise_speed, cfg.expert.max_yaw_rate)
    fx, fy, cx, cy = camera_spec.intrinsics
    camera = Camera(camera_spec.width, camera_spec.height, fx, fy, cx, cy)
    if os.path.isdir(os.path.join(cfg.out, "bag")):
        shutil.rmtree(os.path.join(cfg.out, "bag"))  # rosbags refuses to overwrite a bag
    meta = {"world_seed": cfg.world_seed, "preset": cfg.preset, "route": cfg.route,
            "route_seed": cfg.route_seed, "world_size": cfg.world_size,
            "rate_hz": cfg.rate_hz, "perturb": cfg.perturb, "source": "dl-perception sim record",
            "pilot": "expert" if pilot is None else f"dronet {os.path.basename(cfg.pilot_weights)}",
            "labels": {"steering": "expert yaw-rate command / max_yaw_rate, +left",
                       "collision": f"obstacle inside the corridor of half-width "
                                    f"{cfg.expert.hull_half_width + cfg.expert.label_margin:g} m"
                                    f" ahead closer than {cfg.expert.collision_distance:g} m"},
            "expert": asdict(cfg.expert), "camera": asdict(camera_spec)}
    if randomization is not None:
        meta["randomization"] = randomization.as_meta()
    writer = SequenceWriter(cfg.out, camera, meta)
    bag = None
    if cfg.bag:
        from .bag import SimBagWriter
        bag = SimBagWriter(os.path.join(cfg.out, "bag"), FRAME_IDS)
    frame_every = _ticks(cfg.rate_hz, cfg.physics_rate_hz)
    control_every = _ticks(cfg.control_rate_hz, cfg.physics_rate_hz)
    started = time.monotonic()
    step, collisions, positives = 0, 0, 0
    command = expert.command()
    bar = progress(total=cfg.frames, desc=f"world {cfg.world_seed}", unit="frame")
    try:
        while len(writer.rows) < cfg.frames:
            now = sim.time
            if step % control_every == 0:
                command = expert.command()
                if pilot is None:
                    forward, yaw_rate = perturbation.apply(sim, control_every * sim.dt, command,
                                                           cfg.expert.stop_distance)
                else:
                    forward, yaw_rate = pilot.apply(sim, command)
                climb = 1.0 * (altitude - sim.state.position[2])
                sim.set_command(forward, 0.0, climb, yaw_rate)
                if bag:
                    bag.write_command(now, forward, 0.0, climb, yaw_rate)
            if step % frame_every == 0:
                rgb, depth = sim.render()
                if image_effects is not None:
                    rgb = image_effects(rgb)
                if pilot is not None:
                    pilot.perceive(rgb, now)
                position, quaternion = sim.camera_pose()
                writer.add(now, rgb, depth, position, quaternion, command.steering,
                           float(command.collision))
                positives += command.collision
                if bag:
                    bag.write_camera(now, rgb, depth, camera_spec.intrinsics)
                bar.update()
            touched = sim.step()
            collisions += touched
            step += 1
            if bag:
                state = sim.state
                bag.write_state(sim.time, state.position, state.yaw, state.body_velocity,
                                state.yaw_rate, touched)
    finally:
        bar.close()
        if bag:
            bag.close()
        sim.close()
    summary = {"frames": len(writer.rows), "distance_m": round(sim.distance, 2),
               "duration_s": round(sim.time, 3), "collisions": collisions,
               "collision_label_fraction": round(positives / max(1, len(writer.rows)), 4),
               **({} if pilot is None else {"expert_takeovers": pilot.takeovers})}
    writer.close(summary=summary)  # deterministic: no wall-clock values in meta.json
    return {**summary, "wall_time_s": round(time.monotonic() - started, 1)}
