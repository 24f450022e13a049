"""`dl-perception demo` (what `make demo` runs): the camera source, DroNet and its controller in
one process for a bounded time; then a summary table, annotated frames and a video in --out."""
from __future__ import annotations

import json
import os
import time

import cv2
import numpy as np

from .paths import shared_data_dir, shipped_weights


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
    """The shipped DroNet checkpoint, else the official release converted from the shared data."""
    shipped = shipped_weights("dronet")
    if os.path.isfile(shipped):
        return shipped
    official = os.path.join(shared_data_dir(), "dronet")
    if not os.path.isfile(os.path.join(official, "model_weights.h5")):
        raise FileNotFoundError(
            f"no DroNet weights: none shipped at {shipped} and no official release under "
            f"{official}; pass --weights CHECKPOINT")
    from .convert import dronet_keras
    converted = os.path.join(out_dir, "dronet_official.safetensors")
    model, info = dronet_keras(os.path.join(official, "model_struct.json"),
                               os.path.join(official, "model_weights.h5"))
    model.save(converted, info=info)
    print(f"converted the official DroNet release to {converted}")
    return converted


def run_demo(out_dir: str, duration: float, weights: str | None) -> int:
    import rclpy
    from geometry_msgs.msg import Twist
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from std_msgs.msg import Float32

    from .imaging import image_to_numpy
    from .ros.camera_node import CameraNode
    from .ros.dronet_control_node import DroNetControlNode
    from .ros.dronet_node import DroNetNode
    from sensor_msgs.msg import Image

    os.makedirs(out_dir, exist_ok=True)
    weights = weights or _default_weights(out_dir)

    class Recorder(Node):
        def __init__(self):
            super().__init__("demo_recorder")
            self.latest = {"steering": 0.0, "collision": 0.0, "v": 0.0, "yaw": 0.0}
            self.log: list[dict] = []
            self.frames: list[np.ndarray] = []
            self.create_subscription(Image, "/camera/image_raw", self._on_image,
                                     qos_profile_sensor_data)
            self.create_subscription(Float32, "/dl_perception/dronet/steering_angle",
                                     lambda m: self.latest.__setitem__("steering", m.data), 10)
            self.create_subscription(Float32, "/dl_perception/dronet/collision_probability",
                                     lambda m: self.latest.__setitem__("collision", m.data), 10)
            self.create_subscription(Twist, "/cmd_vel", self._on_cmd, 10)
            self.commands = 0

        def _on_cmd(self, msg: Twist) -> None:
            self.commands += 1
            self.latest["v"], self.latest["yaw"] = msg.linear.x, msg.angular.z

        def _on_image(self, msg: Image) -> None:
            rgb = np.array(image_to_numpy(msg).pixels)
            self.log.append({"t": time.monotonic(), **self.latest})
            self.frames.append(annotate(rgb, self.latest["steering"], self.latest["collision"],
                                        self.latest["v"], self.latest["yaw"]))

    rclpy.init(args=["demo"])
    try:
        camera = CameraNode(parameter_overrides=[Parameter("rate_hz", value=10.0)])
        dronet = DroNetNode(parameter_overrides=[Parameter("weights", value=weights)])
        control = DroNetControlNode(parameter_overrides=[Parameter("enabled_at_start", value=True)])
        recorder = Recorder()
        executor = SingleThreadedExecutor()
        for node in (camera, dronet, control, recorder):
            executor.add_node(node)
        print(f"demo: synthetic camera -> dronet_node -> dronet_control_node for {duration:.0f} s")
        deadline = time.monotonic() + duration
        while rclpy.ok() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        stats = dronet.stats.summary()
        commands = recorder.commands
        for node in (camera, dronet, control, recorder):
            node.destroy_node()
    finally:
        rclpy.try_shutdown()
    return _report(out_dir, recorder.log, recorder.frames, stats, commands, duration, weights)


def _report(out_dir, log, frames, stats, commands, duration, weights) -> int:
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
        "duration_s": duration, "weights": weights,
        "camera_frames": len(frames), "dronet": stats, "cmd_vel_messages": commands,
        "steering": {"min": float(steering.min()), "mean": float(steering.mean()),
                     "max": float(steering.max())},
        "collision_probability": {"min": float(collision.min()), "mean": float(collision.mean()),
                                  "max": float(collision.max())},
        "forward_velocity": {"min": float(speed.min()), "mean": float(speed.mean()),
                             "max": float(speed.max())},
    }
    with open(os.path.join(out_dir, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    print(f"\n{'camera frames':28s} {len(frames)}")
    print(f"{'dronet_node frames':28s} {stats['frames_processed']} at {stats['rate_hz']:.1f} Hz, "
          f"processing p50 {stats['processing_ms']['p50']:.1f} ms, drops {stats['drops_total']}")
    print(f"{'/cmd_vel messages':28s} {commands}")
    for name in ("steering", "collision_probability", "forward_velocity"):
        s = summary[name]
        print(f"{name:28s} min {s['min']:+.3f}  mean {s['mean']:+.3f}  max {s['max']:+.3f}")
    print(f"\nwrote {video}, {out_dir}/frame_*.png and {out_dir}/summary.json")
    return 0
