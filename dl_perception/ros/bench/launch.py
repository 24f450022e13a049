"""`dl-perception bench launch`: does a slow node hold a fast one back? The synthetic camera,
DroNet (milliseconds per frame) and LIFT (about a second per frame on a CPU) started by
`dl-perception launch`, a process each or all in one (`--single-process`); an observer node
counts every camera frame and output over the same LIFT frames. The result is ratios of counts,
which a loaded machine scales alike, not times."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import yaml

CONFIG = {
    "camera_node": {"ros__parameters": {"rate_hz": 20.0, "width": 160, "height": 120}},
    "dronet_node": {"ros__parameters": {"device": "cpu", "max_frame_age": 0.0}},
    "lift_node": {"ros__parameters": {"device": "cpu", "max_frame_age": 0.0}},
}


def _spin_until(node, done, timeout: float) -> None:
    import rclpy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done():
        rclpy.spin_once(node, timeout_sec=0.05)


def measure(node, single_process: bool, lift_frames: int = 5, timeout: float = 240.0) -> dict:
    """Counts of camera frames, DroNet and LIFT outputs over `lift_frames` LIFT outputs (after
    one that warms LIFT up), seen by `node`; the launch's exit status under 'status'."""
    from sensor_msgs.msg import Image, PointCloud2
    from std_msgs.msg import Float32

    seen = {"camera": [], "dronet": [], "lift": []}
    subscriptions = [
        node.create_subscription(Image, "/camera/image_raw", seen["camera"].append, 10),
        node.create_subscription(Float32, "/dl_perception/dronet/steering_angle",
                                 seen["dronet"].append, 100),
        node.create_subscription(PointCloud2, "/dl_perception/features", seen["lift"].append, 10)]
    with tempfile.TemporaryDirectory(prefix="dl_perception_bench_") as folder:
        config = os.path.join(folder, "slow_and_fast.yaml")
        with open(config, "w") as handle:
            yaml.safe_dump(CONFIG, handle)
        command = [sys.executable, "-m", "dl_perception.cli", "launch", config]
        # one thread per network: the processes share the CPU instead of oversubscribing it
        process = subprocess.Popen(command + (["--single-process"] if single_process else []),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            _spin_until(node, lambda: seen["dronet"] and seen["lift"], timeout)
            started = bool(seen["dronet"] and seen["lift"])
            for messages in seen.values():
                messages.clear()
            if started:
                _spin_until(node, lambda: len(seen["lift"]) >= lift_frames, timeout)
        finally:
            process.send_signal(signal.SIGINT)
            status = process.wait(timeout=60)
            for subscription in subscriptions:
                node.destroy_subscription(subscription)
    return {**{name: len(messages) for name, messages in seen.items()}, "status": status}


def run(lift_frames: int = 5) -> list[dict]:
    import rclpy

    from ...bench import models as bench
    from .. import LARGE_DATA_TRANSPORTS
    # a graph of its own unless told otherwise: other traffic on the default domain (measured:
    # a busy domain 0 hid every message for 4 minutes) must not mix in
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", LARGE_DATA_TRANSPORTS)
    rclpy.init()
    try:
        node = rclpy.create_node("bench_launch_observer")
        rows = []
        for single_process in (False, True):
            counts = measure(node, single_process, lift_frames)
            camera = max(1, counts["camera"])
            rows.append({"launcher": "--single-process" if single_process else "process each",
                         **counts, "dronet_per_camera_frame": round(counts["dronet"] / camera, 2),
                         "dronet_per_lift_frame": round(counts["dronet"] / max(1, counts["lift"]),
                                                        1)})
        bench.print_table(rows, ["launcher", "camera", "dronet", "lift",
                                 "dronet_per_camera_frame", "dronet_per_lift_frame", "status"])
        return rows
    finally:
        rclpy.try_shutdown()
