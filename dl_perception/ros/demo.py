"""`dl-perception demo` (what `make demo` runs): the built-in simulator, DroNet and its controller
flying the simulated drone, in one process for a bounded time; then a summary table, annotated
frames, a video, a metric map of the flown path and an MCAP bag of the topics (camera, depth and
its point cloud, cmd_vel, odometry, TF, DroNet's outputs) that Foxglove opens, in --out."""
from __future__ import annotations

import json
import os
import shutil
import time

import cv2
import numpy as np

from ..core.paths import shared_data_dir, shipped_weights


def annotate(rgb: np.ndarray, steering: float, collision: float, forward: float,
             yaw_rate: float) -> np.ndarray:
    """The frame with DroNet's outputs and the command drawn on it (BGR, for writing)."""
    frame = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    height, width = frame.shape[:2]
    bar = int(collision * (width - 20))
    cv2.rectangle(frame, (10, height - 18), (10 + bar, height - 8),
                  (0, int(255 * (1 - collision)), int(255 * collision)), -1)
    centre = (width // 2, height - 40)
    tip = (int(centre[0] - 60 * np.sin(steering)), int(centre[1] - 60 * np.cos(steering)))
    cv2.arrowedLine(frame, centre, tip, (255, 255, 0), 2, tipLength=0.2)
    for row, text in enumerate((f"steer {steering:+.2f}  p(coll) {collision:.2f}",
                                f"cmd v {forward:.2f} m/s  yaw {yaw_rate:+.2f} rad/s")):
        cv2.putText(frame, text, (8, 18 + 18 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return frame


def _default_weights(out_dir: str) -> str:
    """The shipped simulator DroNet checkpoint, else the official release converted from the
    shared data."""
    shipped = shipped_weights("dronet", "sim")
    if os.path.isfile(shipped):
        return shipped
    official = os.path.join(shared_data_dir(), "dronet")
    if not os.path.isfile(os.path.join(official, "model_weights.h5")):
        raise FileNotFoundError(
            f"no DroNet weights: none shipped at {shipped} and no official release under "
            f"{official}; pass --weights CHECKPOINT")
    from ..models.dronet_convert import dronet_keras
    converted = os.path.join(out_dir, "dronet_official.safetensors")
    model, info = dronet_keras(os.path.join(official, "model_struct.json"),
                               os.path.join(official, "model_weights.h5"))
    model.save(converted, info=info)
    print(f"converted the official DroNet release to {converted}")
    return converted


def world_map(world, path: np.ndarray, collisions: list, pixels: int = 600) -> np.ndarray:
    """Top-down plot (BGR) of the world's obstacles and streets with the flown path."""
    span = world.size + 4.0
    scale = pixels / span

    def px(x: float, y: float) -> tuple[int, int]:
        return int(round((x + span / 2) * scale)), int(round((span / 2 - y) * scale))

    image = np.full((pixels, pixels, 3), 235, np.uint8)
    for centre, width in zip(world.street_x, world.width_x):
        cv2.rectangle(image, px(centre - width / 2, span / 2), px(centre + width / 2, -span / 2),
                      (200, 200, 200), -1)
    for centre, width in zip(world.street_y, world.width_y):
        cv2.rectangle(image, px(-span / 2, centre + width / 2), px(span / 2, centre - width / 2),
                      (200, 200, 200), -1)
    colours = {"tree": (60, 140, 60), "pillar": (90, 90, 90), "column": (90, 90, 90)}
    for o in world.obstacles:
        colour = colours.get(o.kind, (70, 90, 130))
        if o.shape == "box":
            c, s = np.cos(o.yaw), np.sin(o.yaw)
            corners = [(o.x + c * dx - s * dy, o.y + s * dx + c * dy) for dx, dy in
                       ((-o.size[0] / 2, -o.size[1] / 2), (o.size[0] / 2, -o.size[1] / 2),
                        (o.size[0] / 2, o.size[1] / 2), (-o.size[0] / 2, o.size[1] / 2))]
            cv2.fillPoly(image, [np.array([px(*p) for p in corners], np.int32)], colour)
        else:
            cv2.circle(image, px(o.x, o.y), max(1, int(o.footprint_radius() * scale)), colour, -1)
    if len(path) > 1:
        cv2.polylines(image, [np.array([px(x, y) for x, y in path], np.int32)], False,
                      (200, 60, 20), 2, cv2.LINE_AA)
    if len(path):
        cv2.circle(image, px(*path[0]), 6, (0, 160, 0), -1)
        cv2.circle(image, px(*path[-1]), 6, (200, 60, 20), -1)
    for x, y in collisions:
        cv2.drawMarker(image, px(x, y), (0, 0, 230), cv2.MARKER_TILTED_CROSS, 14, 3)
    return image


def save_world_map(path_png: str, world, path: np.ndarray, collisions: list) -> None:
    """The map with metric axes (odom = world frame, metres) and a title saying what is drawn."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    half = (world.size + 4.0) / 2
    figure, axes = pyplot.subplots(figsize=(7, 7), dpi=100)
    axes.imshow(cv2.cvtColor(world_map(world, path, collisions), cv2.COLOR_BGR2RGB),
                extent=(-half, half, -half, half))
    axes.set_xlabel("x (m), odom frame")
    axes.set_ylabel("y (m)")
    axes.set_title(f"world {world.seed}: start (green), path (blue), collisions (red)")
    axes.grid(color="white", alpha=0.4, linewidth=0.5)
    figure.tight_layout()
    figure.savefig(path_png)
    pyplot.close(figure)


# recorded as published (the camera as JPEG: raw frames would make the bag 20x larger)
BAG_TOPICS = ["/camera/image_raw/compressed", "/camera/camera_info", "/cmd_vel",
              "/ground_truth/odometry", "/tf", "/tf_static", "/sim/collision",
              "/dl_perception/dronet/steering_angle", "/dl_perception/dronet/collision_probability"]
DEPTH_PERIOD_S = 1.0  # depth image and its point cloud, once per simulated second
POINTS_STRIDE = 4


def run_demo(out_dir: str, duration: float, weights: str | None, world_seed: int = 0) -> int:
    import rclpy
    from geometry_msgs.msg import Twist
    from nav_msgs.msg import Odometry
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Bool, Float32

    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CameraInfo

    from ..bags import BagWriter
    from ..core.geometry import backproject
    from ..core.imaging import image_to_numpy
    from .dronet_control_node import DroNetControlNode
    from .nodes import DroNetNode
    from .messages import pointcloud2_msg, stamp_to_seconds
    from .record import Recorder as BagRecorder
    from .sim_node import SimNode

    os.makedirs(out_dir, exist_ok=True)
    weights = weights or _default_weights(out_dir)
    sim_time = Parameter("use_sim_time", value=True)
    bag_path = os.path.join(out_dir, "demo_bag")
    if os.path.isdir(bag_path):
        shutil.rmtree(bag_path)  # rosbags refuses to overwrite a bag

    class Recorder(Node):
        def __init__(self):
            super().__init__("demo_recorder", parameter_overrides=[sim_time])
            self.latest = {"steering": 0.0, "collision": 0.0, "v": 0.0, "yaw": 0.0}
            self.log: list[dict] = []
            self.frames: list[np.ndarray] = []
            self.path: list[tuple[float, float]] = []
            self.collisions: list[tuple[float, float]] = []
            self.commands = 0
            self.create_subscription(Image, "/camera/image_raw", self._on_image,
                                     qos_profile_sensor_data)
            self.create_subscription(Float32, "/dl_perception/dronet/steering_angle",
                                     lambda m: self.latest.__setitem__("steering", m.data), 10)
            self.create_subscription(Float32, "/dl_perception/dronet/collision_probability",
                                     lambda m: self.latest.__setitem__("collision", m.data), 10)
            self.create_subscription(Twist, "/cmd_vel", self._on_cmd, 10)
            self.create_subscription(Odometry, "/ground_truth/odometry", self._on_odometry, 100)
            self.create_subscription(Bool, "/sim/collision", self._on_collision, 100)
            self.create_subscription(CameraInfo, "/camera/camera_info", self._on_info, 10)
            self.create_subscription(Image, "/camera/depth/image_raw", self._on_depth,
                                     qos_profile_sensor_data)
            self.camera_info = None
            self.last_depth = -float("inf")
            self.bag = None  # BagWriter, set once it exists

        def _on_info(self, msg) -> None:
            self.camera_info = msg

        def _on_depth(self, msg: Image) -> None:
            """Depth (32FC1) and its point cloud in camera_optical_frame, once a second."""
            stamp = stamp_to_seconds(msg.header.stamp)
            if self.bag is None or self.camera_info is None or \
                    stamp - self.last_depth < DEPTH_PERIOD_S:
                return
            self.last_depth = stamp
            depth = image_to_numpy(msg).pixels
            K = np.asarray(self.camera_info.k, np.float64).reshape(3, 3)
            points = backproject(depth, K)[::POINTS_STRIDE, ::POINTS_STRIDE].reshape(-1, 3)
            points = points[np.isfinite(points).all(axis=1)].astype(np.float32)
            cloud = pointcloud2_msg({"x": points[:, 0], "y": points[:, 1], "z": points[:, 2]},
                                    msg.header)
            log_time = self.get_clock().now().nanoseconds
            self.bag.write("/camera/depth/image_raw", log_time, serialize_message(msg))
            self.bag.write("/camera/depth/points", log_time, serialize_message(cloud))

        def _on_cmd(self, msg: Twist) -> None:
            self.commands += 1
            self.latest["v"], self.latest["yaw"] = msg.linear.x, msg.angular.z

        def _on_odometry(self, msg: Odometry) -> None:
            self.path.append((msg.pose.pose.position.x, msg.pose.pose.position.y))

        def _on_collision(self, msg: Bool) -> None:
            if msg.data and self.path:
                self.collisions.append(self.path[-1])

        def _on_image(self, msg: Image) -> None:
            rgb = np.array(image_to_numpy(msg).pixels)
            self.log.append({"t": time.monotonic(), **self.latest})
            self.frames.append(annotate(rgb, self.latest["steering"], self.latest["collision"],
                                        self.latest["v"], self.latest["yaw"]))

    rclpy.init(args=["demo"])
    try:
        sim = SimNode(parameter_overrides=[Parameter("world_seed", value=world_seed),
                                           Parameter("camera_rate_hz", value=10.0)])
        dronet = DroNetNode(parameter_overrides=[Parameter("weights", value=weights), sim_time])
        # the speeds the shipped weights were trained and evaluated with (docs/simulator.md)
        control = DroNetControlNode(parameter_overrides=[
            Parameter("enabled_at_start", value=True), Parameter("max_forward_velocity", value=2.0),
            Parameter("max_yaw_rate", value=1.0), sim_time])
        recorder = Recorder()
        bag = BagWriter(bag_path)
        bag.add_connection("/camera/depth/image_raw", "sensor_msgs/msg/Image")
        bag.add_connection("/camera/depth/points", "sensor_msgs/msg/PointCloud2")
        recorder.bag = bag
        # the bag's log times are simulated time, like the messages' stamps
        bag_node = rclpy.create_node("demo_bag", parameter_overrides=[sim_time])
        bag_recorder = BagRecorder(bag_node, bag, BAG_TOPICS, log=lambda text: None,
                                   show_progress=False)
        executor = SingleThreadedExecutor()
        for node in (sim, dronet, control, recorder, bag_node):
            executor.add_node(node)
        print(f"demo: sim_node (world {world_seed}) -> dronet_node -> dronet_control_node -> "
              f"/cmd_vel -> sim_node, for {duration:.0f} s")
        deadline = time.monotonic() + duration
        while rclpy.ok() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        stats = dronet.stats.summary()
        flight = {"distance_m": round(sim.sim.distance, 2), "simulated_s": round(sim.sim.time, 2),
                  "collisions": sim.collisions}
        world = sim.sim.world
        bag_recorder.bar.close()
        for node in (sim, dronet, control, recorder, bag_node):
            node.destroy_node()
        bag.close()
        bag_summary = {topic: bag.counts[topic] for topic in sorted(bag.topics)}
    finally:
        rclpy.try_shutdown()
    save_world_map(os.path.join(out_dir, "flight_path.png"), world, np.array(recorder.path),
                   recorder.collisions)
    return _report(out_dir, recorder.log, recorder.frames, stats, recorder.commands, duration,
                   weights, flight, bag_summary)


def _report(out_dir, log, frames, stats, commands, duration, weights, flight, bag_topics) -> int:
    if not frames:
        print("demo: no frames were received")
        return 1
    video = os.path.join(out_dir, "dronet_demo.avi")
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 10, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    for index in np.linspace(0, len(frames) - 1, 4).astype(int):
        cv2.imwrite(os.path.join(out_dir, f"frame_{index:04d}.png"), frames[index])
    steering = np.array([row["steering"] for row in log])
    collision = np.array([row["collision"] for row in log])
    speed = np.array([row["v"] for row in log])
    summary = {
        "duration_s": duration, "weights": weights, "flight": flight,
        "camera_frames": len(frames), "dronet": stats, "cmd_vel_messages": commands,
        "steering": {"min": float(steering.min()), "mean": float(steering.mean()),
                     "max": float(steering.max())},
        "collision_probability": {"min": float(collision.min()), "mean": float(collision.mean()),
                                  "max": float(collision.max())},
        "forward_velocity": {"min": float(speed.min()), "mean": float(speed.mean()),
                             "max": float(speed.max())},
        "bag_messages": bag_topics,
    }
    with open(os.path.join(out_dir, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    print(f"\n{'flight':28s} {flight['distance_m']:.1f} m in {flight['simulated_s']:.1f} s "
          f"simulated, {flight['collisions']} collision steps")
    print(f"{'camera frames':28s} {len(frames)}")
    print(f"{'dronet_node frames':28s} {stats['frames_processed']} at {stats['rate_hz']:.1f} Hz, "
          f"processing p50 {stats['processing_ms']['p50']:.1f} ms, drops {stats['drops_total']}")
    print(f"{'/cmd_vel messages':28s} {commands}")
    for name in ("steering", "collision_probability", "forward_velocity"):
        s = summary[name]
        print(f"{name:28s} min {s['min']:+.3f}  mean {s['mean']:+.3f}  max {s['max']:+.3f}")
    print(f"{'bag messages':28s} {sum(bag_topics.values())} on {len(bag_topics)} topics")
    print(f"\nwrote {video}, {out_dir}/flight_path.png, {out_dir}/frame_*.png, "
          f"{out_dir}/summary.json and {out_dir}/demo_bag (MCAP: open "
          f"{out_dir}/demo_bag/demo_bag.mcap in Foxglove)")
    return 0
