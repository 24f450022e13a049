"""`dl-perception record TOPIC... --out BAG`: record topics to a rosbag2 bag (mcap by default,
with metadata.yaml), as `ros2 bag record` does, from dl_perception.bags (no rosbag2_py).

Subscriptions take the serialized messages as they arrive (no deserialisation) and log them at
their receive time. Topics are subscribed as soon as they are discovered, with the QoS their
publishers offer (reliable only when all of them are, transient local likewise); their
publishers' QoS is stored for replay. Topics never seen, or whose type is not installed here,
are reported at the end. SIGINT/SIGTERM or --duration ends recording; the bag is always closed.
"""
from __future__ import annotations

import sys

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                QosTime)

from ..core import rosmsg
from ..bags import BagError, BagWriter
from ..core.progress import progress
from .signals import mark_running
from .messages import message_class
from .spinning import spin_until_stopped

DEPTH = 100


def _qos_time(duration) -> QosTime:
    return QosTime(*divmod(int(duration.nanoseconds), 1_000_000_000))


def recorded_qos(profile) -> Qos:
    """An rclpy QoSProfile as rosbags stores it in metadata (the enums share their values)."""
    return Qos(QosHistory(int(profile.history)), int(profile.depth),
               QosReliability(int(profile.reliability)), QosDurability(int(profile.durability)),
               _qos_time(profile.deadline), _qos_time(profile.lifespan),
               QosLiveliness(int(profile.liveliness)),
               _qos_time(profile.liveliness_lease_duration),
               bool(profile.avoid_ros_namespace_conventions))


def subscription_qos(offered: list) -> QoSProfile:
    profile = QoSProfile(depth=DEPTH)
    if not offered or any(p.reliability != ReliabilityPolicy.RELIABLE for p in offered):
        profile.reliability = ReliabilityPolicy.BEST_EFFORT
    if offered and all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offered):
        profile.durability = DurabilityPolicy.TRANSIENT_LOCAL
    return profile


class Recorder:
    def __init__(self, node: Node, writer: BagWriter, topics: list[str], all_topics: bool = False,
                 log=print, show_progress: bool = True):
        self.node, self.writer, self.log = node, writer, log
        self.all_topics = all_topics
        self.pending = set(topics)
        self.recording: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self._subscriptions = []
        # messages written, and their rate
        self.bar = progress(desc="record", unit="msg", enabled=show_progress)
        node.create_timer(0.1, self.discover)
        self.discover()

    def discover(self) -> None:
        available = dict(self.node.get_topic_names_and_types())
        candidates = set(available) - set(self.recording) - set(self.skipped) \
            if self.all_topics else set(self.pending)
        for topic in sorted(candidates):
            types = available.get(topic)
            if types:
                self._subscribe(topic, types[0])

    def _subscribe(self, topic: str, msgtype: str) -> None:
        self.pending.discard(topic)
        try:
            cls = message_class(msgtype)
            if msgtype not in rosmsg.TYPESTORE.fielddefs:
                raise BagError(f"no message definition for {msgtype} to store")
        except (ImportError, BagError) as error:
            self.skipped[topic] = str(error)
            self.log(f"warning: not recording {topic}: {error}")
            return
        offered = [info.qos_profile for info in self.node.get_publishers_info_by_topic(topic)]
        self.writer.add_connection(topic, msgtype, qos=[recorded_qos(p) for p in offered])
        self._subscriptions.append(self.node.create_subscription(
            cls, topic, lambda data, topic=topic: self._on_message(topic, data),
            subscription_qos(offered), raw=True))
        self.recording[topic] = msgtype
        self.log(f"recording {topic} ({msgtype})")

    def _on_message(self, topic: str, data: bytes) -> None:
        self.writer.write(topic, self.node.get_clock().now().nanoseconds, data)
        self.bar.update()


def run_record(topics: list[str], out: str, storage: str = "mcap", all_topics: bool = False,
               duration: float | None = None, ros_args=None) -> int:
    if not topics and not all_topics:
        raise ValueError("name the topics to record, or --all")
    log = lambda text: print(text, file=sys.stderr)  # noqa: E731
    writer = BagWriter(out, storage=storage)
    mark_running()
    rclpy.init(args=["dl-perception", "--ros-args", *(ros_args or [])])
    node = recorder = None
    try:
        node = rclpy.create_node("dl_perception_recorder")
        recorder = Recorder(node, writer, topics, all_topics, log)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spin_until_stopped(executor, duration, period=0.05)
    finally:
        if recorder is not None:
            recorder.bar.close()
        writer.close()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    for topic in sorted(recorder.pending):
        log(f"warning: {topic} was never published; not in the bag")
    for topic in sorted(writer.topics):
        print(f"{topic:40s} {writer.counts[topic]:8d} messages")
    print(f"wrote {out} ({storage}, {sum(writer.counts.values())} messages)")
    return 0
