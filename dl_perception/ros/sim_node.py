"""sim_node: the built-in simulator as a ROS 2 node (topics as docs/interfaces.md, "Built-in
simulator"). /cmd_vel (body-frame Twist) in; camera RGB + metric depth + camera_info, ground-
truth odometry, collision flag and /clock out, all stamped with simulated time, so nodes
started with use_sim_time follow it.

Each timer tick submits one camera frame to the render thread (sim/render_thread.py), then
advances the physics steps of one frame period (`physics_rate_hz / camera_rate_hz`) while it
rasterises, publishing /clock, odometry and the collision flag after each, and publishes the
frame; /cmd_vel is applied from the next tick. With real_time_factor 1 the timer runs at the
camera rate (wall clock); 0 runs as fast as the CPU allows, pipelined: a tick publishes the
oldest of the two frames in flight and queues a new one, so the renderer always has the next
frame waiting (stamps stay those of the rendered state; frames reach subscribers two ticks, a
few milliseconds, later in wall time). When a step takes longer than its period the
simulated clock simply runs slower than the wall clock (as Gazebo's real-time factor).
"""
from __future__ import annotations

import math
import time

import numpy as np

from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Bool

from ..sim.expert import ExpertAutopilot
from ..sim.render_thread import SLOTS
from ..sim.scene import CAMERA_OFFSET, CameraSpec
from ..sim.simulator import DroneLimits, Simulator
from .messages import camera_info_msg, compressed_msg, header, image_msg, seconds_to_stamp
from .node_base import sensor_qos
from .params import Param, ParameterSet
from .tf import OPTICAL_QUATERNION, TransformPublisher, transform

IMAGE_TOPIC = "camera/image_raw"

_LIMITS = DroneLimits()
FREE_RUN_SLICE_S = 0.01  # real_time_factor 0: wall time between executor visits
PARAMS = [
    Param("world_seed", 0, "procedural world seed (1000-1099 are evaluation worlds)", low=0,
          high=2**31 - 1, read_only=True),
    Param("world_size", 64.0, "side of the square world (m)", low=30.0, high=500.0,
          read_only=True),
    Param("preset", "day", "appearance: day, dusk, changed (repainted textures)",
          choices=("day", "dusk", "changed"), read_only=True),
    Param("route", "loop", "route of the start pose and the autopilot",
          choices=("loop", "figure8", "random"), read_only=True),
    Param("route_seed", 0, "seed of the random route", low=0, high=2**31 - 1, read_only=True),
    Param("altitude", 1.5, "start altitude (m)", low=0.3, high=4.0, read_only=True),
    Param("width", 320, "camera image width (px)", low=16, high=4096, read_only=True),
    Param("height", 240, "camera image height (px)", low=16, high=4096, read_only=True),
    Param("hfov_deg", 90.0, "camera horizontal field of view (deg)", low=10.0, high=170.0,
          read_only=True),
    Param("camera_rate_hz", 20.0, "camera frames per simulated second", low=0.1, high=1000.0,
          read_only=True),
    Param("physics_rate_hz", 60.0, "physics steps (and odometry, clock) per simulated second",
          low=10.0, high=1000.0, read_only=True),
    Param("real_time_factor", 1.0, "simulated seconds per wall second; 0 = as fast as possible",
          low=0.0, high=100.0, read_only=True),
    Param("max_speed", _LIMITS.max_speed, "horizontal speed limit (m/s)", low=0.01, high=50.0,
          read_only=True),
    Param("max_climb", _LIMITS.max_climb, "vertical speed limit (m/s)", low=0.01, high=20.0,
          read_only=True),
    Param("max_yaw_rate", _LIMITS.max_yaw_rate, "yaw rate limit (rad/s)", low=0.01, high=20.0,
          read_only=True),
    Param("max_acceleration", _LIMITS.max_acceleration, "horizontal acceleration limit (m/s^2)",
          low=0.01, high=100.0, read_only=True),
    Param("command_timeout", _LIMITS.command_timeout,
          "hover when no /cmd_vel arrived for this long (s)", low=0.01, high=60.0,
          read_only=True),
    Param("autopilot", False, "the expert autopilot flies (and /cmd_vel is ignored)",
          read_only=True),
    Param("qos.reliability", "reliable", "reliability of the camera publishers (reliable serves "
          "reliable and best-effort subscribers)", choices=("reliable", "best_effort"),
          read_only=True),
    Param("qos.depth", 5, "camera publishers' queue depth (keep last)", low=1, high=1000,
          read_only=True),
    Param("jpeg_quality", 90, "quality of camera/image_raw/compressed (encoded only while "
          "someone subscribes)", low=1, high=100, read_only=True),
    Param("publish_tf", True, "odom -> base_link on /tf with every odometry message, "
          "base_link -> camera_link -> camera_optical_frame on /tf_static", read_only=True),
    Param("odom_frame", "odom", "frame of the ground-truth odometry (its origin: the world's)",
          read_only=True),
    Param("base_frame", "base_link", "the drone's body frame", read_only=True),
    Param("camera_frame", "camera_link", "the camera's body-axes frame", read_only=True),
    Param("optical_frame", "camera_optical_frame", "frame of the images and depth",
          read_only=True),
]


class SimNode(Node):
    @classmethod
    def declared_params(cls) -> list[Param]:
        return PARAMS

    def __init__(self, node_name: str = "sim_node", **kwargs):
        super().__init__(node_name, **kwargs)
        if self.get_parameter("use_sim_time").value:
            raise ValueError("sim_node publishes /clock itself: do not set use_sim_time on it")
        self.params = ParameterSet(self, PARAMS)
        p = self.params
        if p["camera_rate_hz"] > p["physics_rate_hz"]:
            raise ValueError("sim_node: camera_rate_hz must not exceed physics_rate_hz")
        limits = DroneLimits(max_speed=p["max_speed"], max_climb=p["max_climb"],
                             max_yaw_rate=p["max_yaw_rate"],
                             max_acceleration=p["max_acceleration"],
                             command_timeout=p["command_timeout"])
        self.camera = CameraSpec(p["width"], p["height"], p["hfov_deg"])
        self.sim = Simulator(p["world_seed"], p["preset"], self.camera, p["world_size"],
                             p["route"], p["route_seed"], p["altitude"], p["physics_rate_hz"],
                             limits)
        # the render thread creates the GL context now: a rendering fault stops the start-up
        self.render = self.sim.render_thread()
        self.autopilot = ExpertAutopilot(self.sim) if p["autopilot"] else None
        self.frame_every = max(1, int(round(p["physics_rate_hz"] / p["camera_rate_hz"])))
        self.steps = 0
        self.frames_published = 0
        self.commands_received = 0
        self.collisions = 0
        self.publish_errors = 0
        camera_qos = sensor_qos(p["qos.reliability"], p["qos.depth"])
        self.image_pub = self.create_publisher(Image, IMAGE_TOPIC, camera_qos)
        # image_transport's naming: the compressed topic follows the base topic's remapping
        self.compressed_pub = self.create_publisher(
            CompressedImage, self.resolve_topic_name(IMAGE_TOPIC) + "/compressed", camera_qos)
        self.depth_pub = self.create_publisher(Image, "camera/depth/image_raw", camera_qos)
        self.info_pub = self.create_publisher(CameraInfo, "camera/camera_info", camera_qos)
        self.odom_pub = self.create_publisher(Odometry, "ground_truth/odometry", 10)
        self.collision_pub = self.create_publisher(Bool, "sim/collision", 10)
        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.create_subscription(Twist, "cmd_vel", self._on_cmd_vel, 10)
        self.tf = TransformPublisher(self) if p["publish_tf"] else None
        if self.tf is not None:
            self.tf.send_static(self.camera_transforms(seconds_to_stamp(0.0)))
        # messages built once and refilled every frame / step
        frame = header(seconds_to_stamp(0.0), p["optical_frame"])
        shape = (self.camera.height, self.camera.width)
        self._msg_rgb = image_msg(np.zeros((*shape, 3), np.uint8), "rgb8", frame)
        self._msg_depth = image_msg(np.zeros(shape, np.float32), "32FC1",
                                    header(frame.stamp, frame.frame_id))
        fx, fy, cx, cy = self.camera.intrinsics
        self._msg_info = camera_info_msg(self.camera.width, self.camera.height, fx, fy, cx, cy,
                                     header(frame.stamp, frame.frame_id))
        self._msg_odometry = Odometry()
        self._msg_odometry.header.frame_id = p["odom_frame"]
        self._msg_odometry.child_frame_id = p["base_frame"]
        self._msg_clock = Clock()
        self._msg_collision = Bool()
        rtf = p["real_time_factor"]
        self.pipelined = rtf == 0  # free run: frames published while later ones render
        if rtf > 0:
            self.create_timer(self.frame_every * self.sim.dt / rtf, self.tick)
        else:
            self.create_timer(1e-4, self.free_run)
        self.get_logger().info(
            f"world {p['world_seed']} ({p['preset']}), {self.camera.width}x{self.camera.height} "
            f"camera at {p['camera_rate_hz']:g} Hz, physics {p['physics_rate_hz']:g} Hz, "
            f"real-time factor {rtf:g}" + (", expert autopilot" if self.autopilot else ""))

    def camera_transforms(self, stamp) -> list:
        """base_link -> camera_link (the camera's mount) -> camera_optical_frame."""
        p = self.params
        return [transform(stamp, p["base_frame"], p["camera_frame"], (CAMERA_OFFSET, 0.0, 0.0)),
                transform(stamp, p["camera_frame"], p["optical_frame"],
                          quaternion=OPTICAL_QUATERNION)]

    def _on_cmd_vel(self, msg: Twist) -> None:
        if self.autopilot is not None:
            return
        try:
            self.sim.set_command(msg.linear.x, msg.linear.y, msg.linear.z, msg.angular.z)
            self.commands_received += 1
        except ValueError as error:  # NaN/inf commands are dropped, the last good one stays
            self.get_logger().warning(f"dropped /cmd_vel: {error}", throttle_duration_sec=2.0)

    def _publish(self, publisher, msg) -> None:
        try:
            publisher.publish(msg)
        except Exception as error:  # a saturated middleware must not stop the simulation
            self.publish_errors += 1
            self.get_logger().warning(f"publish failed: {error}", throttle_duration_sec=2.0)

    def free_run(self) -> None:
        """Frames back to back for FREE_RUN_SLICE_S of wall time, then back to the executor
        (for /cmd_vel, parameter requests): its own cost, about a fifth of a frame's per
        callback, is paid once per slice."""
        deadline = time.perf_counter() + FREE_RUN_SLICE_S
        self.tick()
        while time.perf_counter() < deadline:
            self.tick()

    def tick(self) -> None:
        """A camera frame, then the physics steps of one frame period, computed while the
        render thread draws it. Pipelined, the oldest frame in flight is published first and
        this one stays queued behind the one rendering, so the renderer never waits for us."""
        sim = self.sim
        if self.pipelined and self.render.in_flight == SLOTS:
            self.publish_camera()
        self.render.submit(sim.data, seconds_to_stamp(sim.time))
        for _ in range(self.frame_every):
            if self.autopilot is not None and self.steps % 2 == 0:
                command = self.autopilot.command()
                sim.set_command(command.forward, 0.0, sim.start[2] - sim.state.position[2],
                                command.yaw_rate)
            touched = sim.step()
            self.collisions += touched
            self.steps += 1
            self.publish_state(touched)
        if not self.pipelined:
            self.publish_camera()

    def publish_state(self, touched: bool) -> None:
        """/clock, odometry and the collision flag (messages reused: publish serialises)."""
        state, stamp = self.sim.state, seconds_to_stamp(self.sim.time)
        self._msg_clock.clock = stamp
        odometry = self._msg_odometry
        odometry.header.stamp = stamp
        pose = odometry.pose.pose
        pose.position.x, pose.position.y, pose.position.z = (float(v) for v in state.position)
        pose.orientation.z, pose.orientation.w = math.sin(state.yaw / 2), math.cos(state.yaw / 2)
        twist = odometry.twist.twist
        twist.linear.x, twist.linear.y, twist.linear.z = (float(v) for v in state.body_velocity)
        twist.angular.z = float(state.yaw_rate)
        self._msg_collision.data = bool(touched)
        self._publish(self.clock_pub, self._msg_clock)
        self._publish(self.odom_pub, odometry)
        if self.tf is not None:
            self.tf.send([transform(stamp, odometry.header.frame_id, odometry.child_frame_id,
                                    (pose.position.x, pose.position.y, pose.position.z),
                                    (0.0, 0.0, pose.orientation.z, pose.orientation.w))])
        self._publish(self.collision_pub, self._msg_collision)

    def publish_camera(self) -> None:
        """The oldest frame in flight, with the stamp of the state it shows."""
        rgb, depth, stamp = self.render.result()
        for msg, pixels in ((self._msg_rgb, rgb), (self._msg_depth, depth)):
            msg.header.stamp = stamp
            msg.data = pixels.tobytes()
        self._msg_info.header.stamp = stamp
        self._publish(self.image_pub, self._msg_rgb)
        if self.compressed_pub.get_subscription_count():
            self._publish(self.compressed_pub, compressed_msg(
                rgb, "rgb8", header(stamp, self._msg_rgb.header.frame_id),
                quality=self.params["jpeg_quality"]))
        self._publish(self.depth_pub, self._msg_depth)
        self._publish(self.info_pub, self._msg_info)
        self.frames_published += 1

    def destroy_node(self) -> None:
        if getattr(self, "sim", None) is not None:  # absent when the start-up failed
            self.sim.close()
        super().destroy_node()

