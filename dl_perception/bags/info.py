"""`dl-perception bag info`: what `ros2 bag info` prints, from BagReader."""
from __future__ import annotations

import datetime
import os

from .reader import BagReader


def _size(files) -> str:
    size = float(sum(os.path.getsize(f) for f in files))
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}"
        size /= 1024


def _when(nanoseconds: int) -> str:
    seconds, nanosec = divmod(nanoseconds, 1_000_000_000)
    utc = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return f"{utc:%b %d %Y %H:%M:%S}.{nanosec:09d} UTC ({seconds}.{nanosec:09d})"


def describe_ros1(path) -> str:
    """The same summary for a ROS 1 .bag (read by rosbags; the place and pose readers accept
    such bags too)."""
    from rosbags.rosbag1 import Reader

    with Reader(path) as reader:
        start, end = reader.start_time, reader.end_time
        duration = max(0, end - start) if reader.message_count else 0
        counts = {}
        for connection in reader.connections:
            counts.setdefault(connection.topic, [connection.msgtype, 0])
            counts[connection.topic][1] += connection.msgcount
        lines = [
            ("Files", os.path.basename(str(path))),
            ("Bag size", _size([path])),
            ("Storage id", "rosbag1 (ROS 1)"),
            ("Duration", f"{duration // 1_000_000_000}.{duration % 1_000_000_000:09d}s"),
            ("Start", _when(start if reader.message_count else 0)),
            ("End", _when(end - 1 if reader.message_count else 0)),
            ("Messages", str(reader.message_count)),
        ]
    text = [f"{key + ':':<19}{value}" for key, value in lines]
    label = "Topic information: "
    for topic, (msgtype, count) in counts.items():
        text.append(f"{label:<19}Topic: {topic} | Type: {msgtype} | Count: {count} | "
                    "Serialization Format: ros1")
        label = ""
    return "\n".join(text)


def describe(reader: BagReader) -> str:
    duration = reader.end_ns - reader.start_ns
    lines = [
        ("Files", ", ".join(f.name for f in reader.files)),
        ("Bag size", _size(reader.files)),
        ("Storage id", reader.storage),
        ("ROS Distro", reader.ros_distro or "-"),
        ("Duration", f"{duration // 1_000_000_000}.{duration % 1_000_000_000:09d}s"),
        ("Start", _when(reader.start_ns)),
        ("End", _when(reader.end_ns)),
        ("Messages", str(reader.message_count)),
    ]
    text = [f"{key + ':':<19}{value}" for key, value in lines]
    label = "Topic information: "
    for topic in reader.topics.values():
        note = "" if topic.known else " (no definition: cannot be decoded)"
        text.append(f"{label:<19}Topic: {topic.name} | Type: {topic.msgtype}{note} | "
                    f"Count: {topic.count} | Serialization Format: {topic.serialization_format}")
        label = ""
    if not reader.topics:
        text.append(f"{label:<19}-")
    for problem in reader.problems:
        text.append(f"warning: {problem}")
    if reader.fault is not None:
        text.append(f"warning: damaged, {reader.message_count} messages readable before the "
                    f"damage: {reader.fault}")
    return "\n".join(text)
