"""The simulator core (no ROS): a seeded world in MuJoCo, a quadrotor body driven by body-frame
velocity commands under velocity and acceleration limits, engine collision detection, range
rays for the expert, and the forward camera (RGB + metric depth).

The body is attitude-stabilised (level, as a quadrotor's inner loop keeps it at these speeds):
its state is position, yaw and their rates. Each step moves the commanded velocity towards the
command within the acceleration limits, integrates the pose, and asks MuJoCo for contacts of
the hull; a step that would penetrate an obstacle is undone and the body stops (a blocked
drone stays where it touched, so it can turn away).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..core.geometry import OPTICAL_TO_BODY, matrix_to_quat, yaw_to_quat
from .scene import CAMERA_OFFSET, CameraSpec, build_mjcf
from .world import World, WorldError, generate_world


@dataclass
class DroneLimits:
    max_speed: float = 3.0  # horizontal (m/s)
    max_climb: float = 1.0  # vertical (m/s)
    max_yaw_rate: float = 2.0  # rad/s
    max_acceleration: float = 3.0  # horizontal (m/s^2)
    max_vertical_acceleration: float = 2.0
    max_yaw_acceleration: float = 6.0  # rad/s^2
    ceiling: float = 4.0  # m; the body never climbs above
    command_timeout: float = 0.5  # s without a command -> hover (zero velocity target)

    def validate(self) -> None:
        for name, value in vars(self).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise WorldError(f"drone limit '{name}' must be a positive number, got {value!r}")


@dataclass
class DroneState:
    position: np.ndarray  # (3,) world
    yaw: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))  # world frame
    yaw_rate: float = 0.0

    @property
    def body_velocity(self) -> np.ndarray:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        v = self.velocity
        return np.array([c * v[0] + s * v[1], -s * v[0] + c * v[1], v[2]])


def _limit(x: float, y: float, maximum: float) -> tuple[float, float]:
    """(x, y) scaled down to length `maximum` if longer."""
    norm = math.sqrt(x * x + y * y)
    return (x, y) if norm <= maximum else (x * (maximum / norm), y * (maximum / norm))


def _clip(value: float, maximum: float) -> float:
    return min(max(value, -maximum), maximum)


class Simulator:
    """One world, one drone. `step(command)` advances `dt`; `render()` gives RGB + depth."""

    def __init__(self, world_seed: int, preset: str = "day", camera: CameraSpec | None = None,
                 world_size: float = 64.0, route: str = "loop", route_seed: int = 0,
                 altitude: float = 1.5, physics_rate_hz: float = 60.0,
                 limits: DroneLimits | None = None, cache_dir: str | None = None,
                 world: World | None = None, randomization=None,
                 photos: list[str] | None = None):
        """`randomization` (sim.randomization.Randomization): clutter objects, lighting, sky,
        camera pitch and photo textures from `photos` (docs/simulator.md, domain
        randomisation); None keeps the world exactly as its seed and preset make it."""
        from .renderer import load_mujoco
        mujoco = load_mujoco()

        if not (math.isfinite(physics_rate_hz) and 10.0 <= physics_rate_hz <= 1000.0):
            raise WorldError(f"physics rate must lie in [10, 1000] Hz, got {physics_rate_hz}")
        self.limits = limits or DroneLimits()
        self.limits.validate()
        if not (math.isfinite(altitude) and 0.3 <= altitude <= self.limits.ceiling):
            raise WorldError(f"altitude must lie in [0.3, ceiling {self.limits.ceiling}] m, "
                             f"got {altitude}")
        self.camera = camera or CameraSpec()
        self.camera.validate()
        self.world = world or generate_world(world_seed, world_size)
        self.randomization = randomization
        self.camera_pitch = 0.0
        if randomization is not None:
            from .randomization import add_clutter
            add_clutter(self.world, randomization)
            self.camera_pitch = math.radians(randomization.pitch_deg)
        self.preset = preset
        self.route = self.world.route(route, route_seed)
        start = self.route[0]
        heading = self.route[1] - self.route[0]
        self.start = (float(start[0]), float(start[1]), float(altitude),
                      math.atan2(heading[1], heading[0]))
        xml = build_mjcf(self.world, preset, self.camera, self.start, cache_dir=cache_dir,
                         randomization=randomization, photos=photos)
        try:
            self.model = mujoco.MjModel.from_xml_string(xml)
        except ValueError as error:
            raise WorldError(f"MuJoCo rejected the world model: {error}") from error
        self.data = mujoco.MjData(self.model)
        self._mujoco = mujoco
        self.dt = 1.0 / physics_rate_hz
        self.drone_body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "drone")
        self.hull_geom = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, "drone_hull")
        self._renderer = None
        self._render_thread = None
        self.reset()

    # --- state -------------------------------------------------------------------------------
    def reset(self, pose: tuple[float, float, float, float] | None = None) -> None:
        x, y, z, yaw = pose or self.start
        self.state = DroneState(np.array([x, y, z], float), yaw)
        self.time = 0.0
        self.distance = 0.0  # flown (m), horizontal and vertical
        self.collisions = 0
        self.in_collision = False
        self._command = (0.0, 0.0, 0.0, 0.0)
        self._command_time = -math.inf
        self._sync()
        if self._touching():
            raise WorldError(f"start pose {pose or self.start} is inside an obstacle")

    def set_command(self, forward: float, left: float, up: float, yaw_rate: float) -> None:
        """A body-frame velocity command (geometry_msgs/Twist: linear.x/y/z, angular.z);
        non-finite values are refused."""
        command = (float(forward), float(left), float(up), float(yaw_rate))
        if not all(math.isfinite(value) for value in command):
            raise ValueError(f"non-finite velocity command {list(command)}")
        self._command = command
        self._command_time = self.time

    def step(self) -> bool:
        """Advance one physics step; True when the hull touched something during it."""
        # plain floats: numpy's per-call cost on 3-vectors would be most of the step
        limits, state, dt = self.limits, self.state, self.dt
        forward, left, up, yaw_rate = self._command \
            if self.time - self._command_time <= limits.command_timeout else (0.0,) * 4
        c, s = math.cos(state.yaw), math.sin(state.yaw)
        target_x, target_y = _limit(c * forward - s * left, s * forward + c * left,
                                    limits.max_speed)
        climb = _clip(up, limits.max_climb)
        yaw_rate = _clip(yaw_rate, limits.max_yaw_rate)
        previous = (state.position, state.yaw)
        x0, y0, z0 = state.position.tolist()
        vx, vy, vz = state.velocity.tolist()
        ax, ay = _limit(target_x - vx, target_y - vy, limits.max_acceleration * dt)
        vx, vy = vx + ax, vy + ay
        vz += _clip(climb - vz, limits.max_vertical_acceleration * dt)
        state.yaw_rate += _clip(yaw_rate - state.yaw_rate, limits.max_yaw_acceleration * dt)
        px, py, pz = x0 + vx * dt, y0 + vy * dt, z0 + vz * dt
        if pz > limits.ceiling:
            pz, vz = limits.ceiling, 0.0
        state.position = np.array((px, py, pz))
        state.yaw = math.remainder(state.yaw + state.yaw_rate * dt, 2 * math.pi)
        state.velocity = np.array((vx, vy, vz))
        self.time += dt
        self._sync()
        touched = self._touching()
        if touched:  # undo the penetrating step and stop
            state.position, state.yaw = previous
            state.velocity = np.zeros(3)
            state.yaw_rate = 0.0
            self._sync()
            self.collisions += 1
        else:
            self.distance += math.sqrt((px - x0) ** 2 + (py - y0) ** 2 + (pz - z0) ** 2)
        self.in_collision = touched
        return touched

    def _sync(self) -> None:
        """Body pose -> MuJoCo kinematics (the renderer updates the camera itself)."""
        data, state = self.data, self.state
        data.qpos[:3] = state.position
        half = state.yaw / 2
        data.qpos[3:7] = (math.cos(half), 0.0, 0.0, math.sin(half))  # w, x, y, z
        self._mujoco.mj_kinematics(self.model, data)

    def _touching(self) -> bool:
        self._mujoco.mj_collision(self.model, self.data)
        contacts = self.data.contact
        hull = self.hull_geom
        return any((contacts.geom1[k] == hull or contacts.geom2[k] == hull)
                   for k in range(self.data.ncon))

    # --- sensing -----------------------------------------------------------------------------
    def ranges(self, angles: np.ndarray, max_range: float) -> np.ndarray:
        """Horizontal distances from the body centre along yaw + angles (capped at
        max_range): the ground truth the expert plans with."""
        count = len(angles)
        headings = self.state.yaw + np.asarray(angles, float)
        vectors = np.zeros((count, 3))
        vectors[:, 0], vectors[:, 1] = np.cos(headings), np.sin(headings)
        geom = np.zeros(count, np.int32)
        distance = np.zeros(count)
        self._mujoco.mj_multiRay(self.model, self.data, self.state.position.astype(float),
                                 vectors.ravel(), None, 1, self.drone_body, geom, distance,
                                 None, count, max_range)
        distance[(distance < 0) | (distance > max_range)] = max_range
        return distance

    def body_pose(self) -> tuple[np.ndarray, np.ndarray]:
        return self.state.position.copy(), yaw_to_quat(self.state.yaw)

    def camera_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """T_world_camera of the optical frame (x right, y down, z forward)."""
        c, s = math.cos(self.state.yaw), math.sin(self.state.yaw)
        rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        position = self.state.position + rotation @ np.array([CAMERA_OFFSET, 0.0, 0.0])
        if self.camera_pitch:  # pitched down about the body's y axis
            cp, sp = math.cos(self.camera_pitch), math.sin(self.camera_pitch)
            rotation = rotation @ np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
        return position, matrix_to_quat(rotation @ OPTICAL_TO_BODY)

    @property
    def fog(self) -> bool:
        if self.randomization is not None:
            return self.randomization.fog is not None
        return self.preset == "dusk"

    @property
    def renderer(self):
        if self._renderer is None:
            from .renderer import Renderer
            self._renderer = Renderer(self.model, self.camera.width, self.camera.height,
                                      fog=self.fog)
        return self._renderer

    def render_thread(self):
        """A RenderThread of the drone's camera (one per simulator, closed with it)."""
        if self._render_thread is None:
            from .render_thread import RenderThread
            self._render_thread = RenderThread(self.model, self.camera.width,
                                               self.camera.height, fog=self.fog)
        return self._render_thread

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """(rgb, depth) of the current pose; arrays are reused by the next call."""
        return self.renderer.render(self.data)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if self._render_thread is not None:
            self._render_thread.close()
            self._render_thread = None
