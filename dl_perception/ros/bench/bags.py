"""`dl-perception bench replay`: how closely `replay` keeps the bag's timing at rate 1, measured
by a subscriber in the same run (receive time against the bag's own timestamps), and what
publishing the stored CDR bytes saves over deserialising every message first."""
from __future__ import annotations

import multiprocessing
import os
import tempfile
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message

from ...bags import BagReader
from ...bench.bags import synthetic_bag
from ..messages import message_class
from ..replay import BagPlayer, ReplayOptions

IMAGE_TOPIC, VALUE_TOPIC = "/camera/image_raw", "/bench/value"


def _percentiles(errors_s) -> dict:
    errors = np.abs(np.asarray(errors_s)) * 1e3
    if errors.size == 0:
        return {"error_ms_p50": None, "error_ms_p95": None, "error_ms_max": None}
    return {"error_ms_p50": float(np.percentile(errors, 50)),
            "error_ms_p95": float(np.percentile(errors, 95)), "error_ms_max": float(errors.max())}


def _play(bag: str, duration: float, results) -> None:
    """The player process: `replay` as it runs on its own, reporting where its schedule began."""
    rclpy.init(args=["dl-perception", "--ros-args"])
    try:
        node = rclpy.create_node("bench_player")
        with BagReader(bag) as reader:
            player = BagPlayer(node, reader, ReplayOptions(bag, duration=duration, delay=0.5,
                                                           clock_rate=0))
            # start only once the benchmark's subscriber has matched every publisher
            unmatched = player.wait_for_subscribers(60.0)
            if unmatched:
                raise RuntimeError(f"no subscriber matched {' '.join(unmatched)} within 60 s")
            report = player.play()
        results.put((player.origin_wall, player.origin_bag,
                     None if report.fault is None else str(report.fault)))
    except Exception as error:  # reported in the benchmark's process
        results.put((None, None, repr(error)))
    finally:
        rclpy.try_shutdown()


def _timing(node, reader: BagReader, duration: float) -> list[dict]:
    """Play at rate 1 in a player process of its own, as `replay` runs; the subscriber (this
    process) notes each receive time. The error of a message is its receive time minus the time
    the bag schedules it for: the player's start plus its log time's offset from the bag's start
    (transport latency included; both processes read the same monotonic clock)."""
    received = []  # (topic, receive time)
    topics = list(reader.topics)
    for topic in topics:
        node.create_subscription(
            message_class(reader.topics[topic].msgtype), topic,
            lambda data, topic=topic: received.append((topic, time.monotonic())),
            QoSProfile(depth=1000), raw=True)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, no inherited rclpy
    results = context.Queue()
    process = context.Process(target=_play, args=(str(reader.path), duration, results))
    process.start()
    while process.is_alive() and results.empty():
        executor.spin_once(timeout_sec=0.01)
    origin_wall, origin_bag, problem = results.get(timeout=60)
    process.join(10)
    if origin_wall is None or problem:
        raise RuntimeError(f"player failed: {problem}")
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.01)
    executor.remove_node(node)
    sent = [(m.topic, m.log_time) for m in reader.messages(
        topics, reader.start_ns, reader.start_ns + int(duration * 1e9))]
    # reliable and in order per topic: the k-th message received on a topic is its k-th sent
    logs = {t: [log for topic, log in sent if topic == t] for t in topics}
    errors = {}
    for topic in topics:
        receive_times = [at for name, at in received if name == topic]
        errors[topic] = [at - origin_wall - (log - origin_bag) / 1e9
                         for log, at in zip(logs[topic], receive_times)]
    rows = [{"topic": t, "messages": len(logs[t]), "received": len(errors[t]),
             **_percentiles(errors[t])} for t in topics]
    rows.append({"topic": "all", "messages": len(sent),
                 "received": sum(len(e) for e in errors.values()),
                 **_percentiles([e for values in errors.values() for e in values])})
    return rows


def _throughput(node, reader: BagReader, count: int = 300) -> list[dict]:
    """Publish the bag's images as fast as possible: stored bytes vs deserialise-then-publish."""
    messages = [m.data for m in reader.messages([IMAGE_TOPIC])][:count]
    cls = message_class(reader.topics[IMAGE_TOPIC].msgtype)
    profile = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    publisher = node.create_publisher(cls, "/bench/throughput", profile)
    node.create_subscription(cls, "/bench/throughput", lambda _: None, profile, raw=True)
    rows = []
    for path, publish in (
            ("raw CDR bytes (replay)", lambda data: publisher.publish(data)),
            ("deserialise, then publish", lambda data: publisher.publish(
                deserialize_message(data, cls)))):
        started = time.perf_counter()
        for index in range(count):
            publish(messages[index % len(messages)])
        elapsed = time.perf_counter() - started
        rows.append({"path": path, "messages": count, "msgs_per_s": count / elapsed})
    for row in rows:
        row["ratio_to_raw"] = row["msgs_per_s"] / rows[0]["msgs_per_s"]
    return rows


def bench_replay(duration: float = 5.0, bag: str | None = None, ros_args=None) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        if bag is None:
            bag = os.path.join(folder, "bench_bag")
            synthetic_bag(bag, int(duration * 30), image_hz=30.0, value_hz=200.0,
                          value_topic=VALUE_TOPIC)
            source = "a synthetic bag (320x240 images at 30 Hz, Float32 at 200 Hz)"
        else:
            source = bag
        rclpy.init(args=["dl-perception", "--ros-args", *(ros_args or [])])
        try:
            with BagReader(bag) as reader:
                node = rclpy.create_node("bench_replay")
                timing = _timing(node, reader, duration)
                throughput = _throughput(node, reader) if IMAGE_TOPIC in reader.topics else []
                node.destroy_node()
        finally:
            rclpy.try_shutdown()
    return {"source": source, "duration_s": duration, "timing": timing,
            "throughput": throughput}
