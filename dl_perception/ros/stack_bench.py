"""The ROS path of `dl-perception bench --ros`: the stack's nodes, configured by the deployment
parameters file, in one process with one single-threaded executor; a driver publishes frames on
/camera/image_raw at a fixed rate for a while, and each node's own counters say what it
received, processed and dropped (stale frames, decode errors) and with what latency."""
from __future__ import annotations

import os
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from .launcher import configured_nodes, node_class
from .messages import header, image_msg

STACK_NODES = ("dronet_node", "lift_node", "netvlad_node", "posenet_node", "depth_node")


def bench_ros_stack(frames, rate: float, duration: float, config: str,
                    nodes=STACK_NODES) -> dict:
    wanted = [name for name in configured_nodes(config) if name in nodes]
    rclpy.init(args=["bench", "--ros-args", "--params-file", config])
    try:
        started_nodes, skipped = [], {}
        for name in wanted:
            try:
                started_nodes.append(node_class(name)(name))
            except Exception as error:  # e.g. no weights shipped for it: say so, bench the rest
                skipped[name] = str(error)
        driver = Node("stack_bench_driver")
        publisher = driver.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        messages = [image_msg(pixels, "rgb8", header(driver.get_clock().now().to_msg(), "camera"))
                    for pixels in frames]
        executor = SingleThreadedExecutor()
        for node in [*started_nodes, driver]:
            executor.add_node(node)
        deadline = time.monotonic() + 5.0  # discovery
        while publisher.get_subscription_count() < len(started_nodes) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        sent, started = 0, time.monotonic()
        while time.monotonic() - started < duration:
            due = started + sent / rate
            if time.monotonic() >= due:
                msg = messages[sent % len(messages)]
                msg.header.stamp = driver.get_clock().now().to_msg()
                publisher.publish(msg)
                sent += 1
            executor.spin_once(timeout_sec=max(0.0, min(0.01, due - time.monotonic())))
        drain_until = time.monotonic() + 2.0
        while time.monotonic() < drain_until:
            executor.spin_once(timeout_sec=0.05)
        per_node = {node.get_name(): node.stats.summary() for node in started_nodes}
        executor.shutdown()
        for node in [*started_nodes, driver]:
            node.destroy_node()
    finally:
        rclpy.try_shutdown()
    processed = [row["frames_processed"] for row in per_node.values()]
    complete = min(processed) if processed else 0
    latencies = [row["latency_ms"]["p50"] for row in per_node.values()]
    return {"config": os.path.abspath(config), "nodes": list(per_node), "skipped": skipped,
            "rate_hz": rate, "duration_s": duration, "sent": sent, "complete": complete,
            "complete_share": complete / max(sent, 1),
            "latency_ms_p50": round(max(latencies), 1) if latencies else None,
            "per_node": per_node}
