"""`dl-perception replay BAG`: publish a rosbag2 bag's topics with their recorded types and
timing, as `ros2 bag play` does, from dl_perception.bags (no rosbag2_py).

Messages go out as the CDR bytes stored in the bag (rclpy publishes serialized messages without
converting them), unless the bag's definition of a type differs from the one installed here
(a bag from another ROS distribution): those are decoded with the bag's definition and
re-encoded with the local one. Topics whose message package is not installed are reported and
skipped. Bag time is published on /clock, so nodes with use_sim_time follow the bag.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import rclpy
import yaml
from builtin_interfaces.msg import Time
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import QosDurability, QosReliability
from rosgraph_msgs.msg import Clock

from ..core import rosmsg
from ..bags import BagError, BagReader, BagReadError
from ..bags.translate import same_layout, translate
from ..core.progress import progress
from .signals import mark_running, stop_requested
from .messages import message_class

QOS_KEYS = {
    "reliability": {"reliable": ReliabilityPolicy.RELIABLE,
                    "best_effort": ReliabilityPolicy.BEST_EFFORT},
    "durability": {"volatile": DurabilityPolicy.VOLATILE,
                   "transient_local": DurabilityPolicy.TRANSIENT_LOCAL},
    "history": {"keep_last": HistoryPolicy.KEEP_LAST, "keep_all": HistoryPolicy.KEEP_ALL},
}
DEFAULT_DEPTH = 10
ACK_TIMEOUT_S = 5.0  # at the end, how long reliable subscribers get to acknowledge


@dataclass
class ReplayOptions:
    bag: str
    rate: float = 1.0
    start_offset: float = 0.0
    duration: float | None = None
    loop: bool = False
    topics: list[str] | None = None
    remap: dict[str, str] = field(default_factory=dict)
    qos_overrides: dict[str, dict] = field(default_factory=dict)
    delay: float = 0.0
    clock_rate: float = 40.0
    wait_for_subscribers: float = 0.0  # seconds to wait for every topic's first subscriber

    @classmethod
    def from_args(cls, args) -> "ReplayOptions":
        remap = {}
        for rule in args.remap:
            source, sep, target = rule.partition(":=")
            if not sep or not source or not target:
                raise ValueError(f"--remap expects FROM:=TO, got '{rule}'")
            remap[source] = target
        overrides = {}
        if args.qos_profile_overrides_path:
            with open(args.qos_profile_overrides_path) as handle:
                overrides = yaml.safe_load(handle) or {}
        return cls(args.bag, args.rate, args.start_offset, args.duration, args.loop, args.topics,
                   remap, overrides, args.delay, args.clock_rate, args.wait_for_subscribers)

    def check(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"--rate must be positive, got {self.rate}")
        if min(self.start_offset, self.delay, self.clock_rate, self.wait_for_subscribers) < 0:
            raise ValueError("--start-offset, --delay, --clock-rate and --wait-for-subscribers "
                             "must not be negative")
        if not isinstance(self.qos_overrides, dict):
            raise ValueError("QoS overrides must map topic names to policies")


def profile_from_override(topic: str, policies: dict) -> QoSProfile:
    profile = QoSProfile(depth=DEFAULT_DEPTH)
    for key, value in (policies or {}).items():
        if key == "depth":
            profile.depth = int(value)
        elif key in QOS_KEYS and str(value).lower() in QOS_KEYS[key]:
            setattr(profile, key, QOS_KEYS[key][str(value).lower()])
        else:
            raise ValueError(f"QoS override for {topic}: unsupported '{key}: {value}' "
                             f"(reliability, durability, history, depth)")
    return profile


def adapted_profile(recorded: list) -> QoSProfile:
    """What to offer for a topic recorded with these publisher profiles: reliable only when every
    recorded publisher was, transient local only when every one was (as rosbag2's player)."""
    profile = QoSProfile(depth=max([DEFAULT_DEPTH] + [q.depth for q in recorded]))
    if recorded and all(q.reliability == QosReliability.BEST_EFFORT for q in recorded):
        profile.reliability = ReliabilityPolicy.BEST_EFFORT
    elif recorded and not all(q.reliability == QosReliability.RELIABLE for q in recorded):
        profile.reliability = ReliabilityPolicy.BEST_EFFORT
    if recorded and all(q.durability == QosDurability.TRANSIENT_LOCAL for q in recorded):
        profile.durability = DurabilityPolicy.TRANSIENT_LOCAL
    return profile


@dataclass
class PlayedTopic:
    name: str  # in the bag
    published_as: str
    msgtype: str
    publisher: object
    translate: bool  # bag definition differs from the local one
    published: int = 0
    failed: int = 0


@dataclass
class PlayReport:
    topics: list[PlayedTopic]
    skipped: list[str]
    elapsed_s: float = 0.0
    lateness_s: list = field(default_factory=list)  # publish time - scheduled time
    fault: BagReadError | None = None


class BagPlayer:
    """Publishes a bag on `node`. Call play() from the thread that should do the timing (it
    needs no executor: the player only publishes)."""

    def __init__(self, node: Node, reader: BagReader, options: ReplayOptions, log=print):
        options.check()
        self.node, self.reader, self.options, self.log = node, reader, options, log
        self.stop_event = threading.Event()
        self.skipped: list[str] = []
        wanted = options.topics if options.topics else list(reader.topics)
        for topic in wanted:
            if topic not in reader.topics:
                self.skipped.append(f"{topic}: not in the bag")
        self.topics: dict[str, PlayedTopic] = {}
        for topic in (t for t in wanted if t in reader.topics):
            self._add_topic(reader.topics[topic])
        self.clock = None
        if options.clock_rate > 0:
            if any(t.published_as == "/clock" for t in self.topics.values()):
                self.skipped.append("own /clock: the bag's /clock topic is played instead")
            else:
                self.clock = node.create_publisher(Clock, "/clock", QoSProfile(depth=1))

    def _add_topic(self, info) -> None:
        try:
            cls = message_class(info.msgtype)
        except ImportError as error:
            self.skipped.append(f"{info.name} ({info.count} messages): {error}")
            return
        local = info.msgtype in rosmsg.TYPESTORE.fielddefs
        converts = local and info.known and not same_layout(
            self.reader.typestore, rosmsg.TYPESTORE, info.msgtype)
        overrides = self.options.qos_overrides
        profile = profile_from_override(info.name, overrides[info.name]) \
            if info.name in overrides else adapted_profile(info.qos)
        name = self.options.remap.get(info.name, info.name)
        self.topics[info.name] = PlayedTopic(
            info.name, name, info.msgtype, self.node.create_publisher(cls, name, profile),
            converts)

    # --- timing ---------------------------------------------------------------------------------
    def _bag_time(self, now: float) -> int:
        """Bag time at monotonic time `now` (the start time during --delay)."""
        elapsed = max(0.0, now - self.origin_wall)
        return self.origin_bag + int(elapsed * self.options.rate * 1e9)

    def _publish_clock(self, bag_ns: int) -> None:
        sec, nanosec = divmod(bag_ns, 1_000_000_000)
        self.clock.publish(Clock(clock=Time(sec=sec, nanosec=nanosec)))

    def _stopping(self) -> bool:
        return self.stop_event.is_set() or stop_requested() or \
            not rclpy.ok(context=self.node.context)

    def _wait_until(self, target: float, bag_limit: int) -> bool:
        """Sleep until `target` (monotonic s), keeping /clock going but never past `bag_limit`
        (the next message's log time: late wake-ups must not put the clock ahead of messages
        still to come). False when stopped."""
        while True:
            now = time.monotonic()
            if self._stopping():
                return False
            if self.clock is not None and now >= self._next_clock:
                self._publish_clock(min(self._bag_time(now), bag_limit))
                self._next_clock = max(self._next_clock + self._clock_period, now)
            if target <= now:
                return True
            # short naps keep a stop request (SIGINT) responsive
            time.sleep(min(target, self._next_clock, now + 0.05) - now)

    def unmatched_topics(self) -> list[str]:
        return [t.published_as for t in self.topics.values()
                if t.publisher.get_subscription_count() < 1]

    def wait_for_subscribers(self, timeout_s: float) -> list[str]:
        """Wait until every topic has a matched subscriber (discovery between processes can
        take longer than any fixed --delay on a loaded machine, and a volatile subscriber loses
        what was published before it matched). Returns the topics still unmatched."""
        deadline = time.monotonic() + timeout_s
        while (unmatched := self.unmatched_topics()) and time.monotonic() < deadline:
            if self.stop_event.is_set() or stop_requested() or \
                    not rclpy.ok(context=self.node.context):
                break
            time.sleep(0.05)
        return unmatched

    def play(self) -> PlayReport:
        report = PlayReport(list(self.topics.values()), self.skipped)
        if not self.topics:
            return report
        if self.options.wait_for_subscribers > 0:
            unmatched = self.wait_for_subscribers(self.options.wait_for_subscribers)
            if unmatched and not (self.stop_event.is_set() or stop_requested()):
                self.log(f"warning: no subscriber after {self.options.wait_for_subscribers:g} s "
                         f"on {' '.join(unmatched)}; playing anyway")
        start = self.reader.start_ns + int(self.options.start_offset * 1e9)
        stop = None if self.options.duration is None else \
            start + int(self.options.duration * 1e9)
        self._clock_period = 1.0 / self.options.clock_rate if self.clock else float("inf")
        begun = time.monotonic()
        try:
            while True:
                self.origin_bag, self.origin_wall = start, time.monotonic() + self.options.delay
                self._next_clock = time.monotonic() if self.clock else float("inf")
                if not self._wait_until(self.origin_wall, start) or not self._play_once(
                        start, stop, report):
                    break
                if not self.options.loop:
                    break
        except BagReadError as fault:
            report.fault = fault
        except Exception:
            # a stop signal shuts the ROS context down at any moment, also between the check
            # above and a /clock publish or an acknowledgement wait: what was played is still
            # reported; any other error is a real one
            if not self._stopping():
                raise
        finally:
            try:
                self._flush()
            except Exception:
                if not self._stopping():
                    raise
        report.elapsed_s = time.monotonic() - begun
        return report

    def _flush(self) -> None:
        """Let reliable subscribers acknowledge the last messages before the publishers go
        (a large image still in flight would otherwise be lost when the player exits)."""
        if not rclpy.ok(context=self.node.context):  # stopped by a signal: nothing to wait for
            return
        deadline = time.monotonic() + ACK_TIMEOUT_S
        for topic in self.topics.values():
            remaining = max(0.0, deadline - time.monotonic())
            topic.publisher.wait_for_all_acked(Duration(nanoseconds=int(remaining * 1e9)))

    def _play_once(self, start: int, stop: int | None, report: PlayReport) -> bool:
        with progress(total=sum(self.reader.topics[t].count for t in self.topics),
                      desc="replay", unit="msg") as bar:
            return self._play_messages(start, stop, report, bar)

    def _play_messages(self, start: int, stop: int | None, report: PlayReport, bar) -> bool:
        for message in self.reader.messages(self.topics, start, stop):
            target = self.origin_wall + (message.log_time - start) / 1e9 / self.options.rate
            if not self._wait_until(target, message.log_time):
                return False
            topic = self.topics[message.topic]
            try:
                data = message.data
                if topic.translate:
                    data = rosmsg.serialize(translate(self.reader.deserialize(message),
                                                      self.reader.typestore, rosmsg.TYPESTORE,
                                                      message.msgtype))
                topic.publisher.publish(data)
                topic.published += 1
            except Exception as error:  # undecodable message or a saturated DDS queue
                topic.failed += 1
                self.log(f"warning: {message.topic} at {message.log_time} ns not published: "
                         f"{error}")
            report.lateness_s.append(time.monotonic() - target)
            bar.update()
        return True


def print_report(report: PlayReport, rate: float) -> None:
    from ..bench.models import print_table
    rows = [{"topic": t.published_as, "type": t.msgtype, "published": t.published,
             "failed": t.failed, "converted": "yes" if t.translate else "-"}
            for t in report.topics]
    print_table(rows, ["topic", "type", "published", "failed", "converted"])
    late = np.asarray(report.lateness_s or [0.0]) * 1e3
    print(f"published {sum(t.published for t in report.topics)} messages in "
          f"{report.elapsed_s:.2f} s at rate {rate:g}; publish lateness p50 "
          f"{np.percentile(late, 50):.2f} ms, p95 {np.percentile(late, 95):.2f} ms")


def run_replay(options: ReplayOptions, ros_args=None) -> int:
    options.check()
    reader = BagReader(options.bag)
    mark_running()
    rclpy.init(args=["dl-perception", "--ros-args", *(ros_args or [])])
    node = None
    try:
        for problem in reader.problems:
            print(f"warning: {problem}", file=sys.stderr)
        if reader.fault is not None:
            print(f"warning: {reader.fault}; playing the {reader.message_count} messages "
                  f"before it", file=sys.stderr)
        node = rclpy.create_node("dl_perception_player")
        player = BagPlayer(node, reader, options,
                           log=lambda text: print(text, file=sys.stderr))
        for skipped in player.skipped:
            print(f"skipped {skipped}", file=sys.stderr)
        if not player.topics:
            raise BagError(f"nothing to play from {options.bag}")
        report = player.play()
        print_report(report, options.rate)
        if report.fault is not None:
            print(f"error: {report.fault}", file=sys.stderr)
            return 1
        return 0
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        reader.close()
