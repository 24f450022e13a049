"""The ROS path of `dl-perception bench --ros`: the stack's nodes, configured by a parameters
file (config/perception.yaml: one node per network; config/stack.yaml: stack_node hosting them
on the engine), in one process with one single-threaded executor; a driver publishes frames on
/camera/image_raw at a fixed rate for a while, and each network node's own counters say what it
received, processed and dropped (stale frames, decode errors) and with what latency."""
from __future__ import annotations

import os
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from ...core.stats import FrameStats
from ..launcher import configured_nodes
from ..nodes import node_class
from ..messages import header, image_msg

STACK_NODES = ("dronet_node", "lift_node", "netvlad_node", "posenet_node", "depth_node",
               "stack_node")


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
        hosted = [h for node in started_nodes for h in getattr(node, "hosted_nodes", [])]
        executor = SingleThreadedExecutor()
        for node in [*started_nodes, *hosted, driver]:
            executor.add_node(node)
        deadline = time.monotonic() + 5.0  # discovery
        while publisher.get_subscription_count() < len(started_nodes) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        network_nodes = [n for n in started_nodes + hosted if n.get_name() != "stack_node"]

        def feed(seconds: float, until=None) -> int:
            sent, started = 0, time.monotonic()
            while time.monotonic() - started < seconds and not (until and until()):
                due = started + sent / rate
                if time.monotonic() >= due:
                    msg = messages[sent % len(messages)]
                    msg.header.stamp = driver.get_clock().now().to_msg()
                    publisher.publish(msg)
                    sent += 1
                executor.spin_once(timeout_sec=max(0.0, min(0.01, due - time.monotonic())))
            return sent

        # warm-up: until every node has processed a frame (transport connections, first
        # inference, stack_node's calibration), then the counters start from zero
        feed(60.0, until=lambda: all(n.stats.processed for n in network_nodes))
        for node in network_nodes:
            node.stats = FrameStats()
        sent = feed(duration)
        drain_until = time.monotonic() + 2.0
        while time.monotonic() < drain_until:
            executor.spin_once(timeout_sec=0.05)
        per_node = {node.get_name(): node.stats.summary() for node in network_nodes}
        executor.shutdown()
        for node in [*hosted, *started_nodes, driver]:
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
