"""The node path of `dl-perception bench`: a driver publishes a frame, the perception node
processes it, the driver waits for the node's last output and publishes the next one. All nodes
share one process and one executor, so the number is what rclpy + the model deliver."""
from __future__ import annotations

import time

import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from ..messages import header, image_msg, message_class
from ..nodes import node_class


class _Driver(Node):
    def __init__(self, frames, output_type, output_topic):
        super().__init__("bench_driver")
        self.messages = [image_msg(f.pixels, f.encoding, header(self.get_clock().now().to_msg(), "cam"))
                         for f in frames]
        self.publisher = self.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        self.create_subscription(output_type, output_topic, self._on_output, 10)
        self.sent = 0
        self.received = 0
        self.sent_at: list[float] = []
        self.latencies: list[float] = []

    def send(self) -> None:
        msg = self.messages[self.sent % len(self.messages)]
        msg.header.stamp = self.get_clock().now().to_msg()
        self.sent_at.append(time.perf_counter())
        self.sent += 1
        self.publisher.publish(msg)

    def _on_output(self, _msg) -> None:
        self.latencies.append(time.perf_counter() - self.sent_at[-1])
        self.received += 1


def bench_node_path(node_name: str, parameters: dict, output_type: str, output_topic: str,
                    frames, count: int, executor_kind: str = "single",
                    timeout_per_frame: float = 2.0) -> dict:
    """Closed-loop frames/s through node `node_name` (started with `parameters`, plain values)
    to its `output_type` ('pkg/msg/Type') output topic."""
    rclpy.init(args=["bench", "--ros-args", "-p", "max_frame_age:=0.0"])
    try:
        node = node_class(node_name)(parameter_overrides=[
            Parameter(name, value=value) for name, value in parameters.items()])
        driver = _Driver(frames, message_class(output_type), output_topic)
        executor = MultiThreadedExecutor(2) if executor_kind == "multi" else SingleThreadedExecutor()
        executor.add_node(node)
        executor.add_node(driver)
        deadline = time.monotonic() + 5.0  # discovery
        while driver.publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        lost = 0
        started = None
        warmup = 3
        while driver.received < count + warmup:
            if driver.received == warmup and started is None:
                started = time.perf_counter()
                driver.latencies.clear()
            expected = driver.received + 1
            driver.send()
            wait_until = time.monotonic() + timeout_per_frame
            while driver.received < expected and time.monotonic() < wait_until:
                executor.spin_once(timeout_sec=0.01)
            if driver.received < expected:
                lost += 1  # best effort may drop a frame: resend, count it
                if lost > count:
                    raise RuntimeError(f"node path delivered no output on {output_topic}")
        elapsed = time.perf_counter() - started
        latencies = np.asarray(driver.latencies) * 1e3
        executor.shutdown()
        node.destroy_node()
        driver.destroy_node()
        return {"frames": count, "fps": count / elapsed, "lost": lost,
                "latency_ms_p50": float(np.percentile(latencies, 50)),
                "latency_ms_p99": float(np.percentile(latencies, 99))}
    finally:
        rclpy.try_shutdown()

