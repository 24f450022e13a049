"""Where places come from: a folder of images with positions (a sequence folder or places.csv, see
datasets/places.py) or a ROS bag with an image topic and a pose topic, each image given the pose
interpolated at its stamp."""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..datasets.places import read_place_folder
from ..core.imaging import ImageDecodeError, decode, to_rgb8

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
POSE_TYPES = ("nav_msgs/msg/Odometry", "geometry_msgs/msg/PoseStamped",
              "geometry_msgs/msg/PoseWithCovarianceStamped")
NAN3, NAN4 = np.full(3, np.nan), np.full(4, np.nan)


@dataclass
class PlaceFrame:
    rgb: np.ndarray  # H x W x 3 uint8
    position: np.ndarray  # (3,) NaN when unknown
    quaternion: np.ndarray  # (4,) x, y, z, w; NaN when unknown
    stamp: float
    name: str


class FolderSource:
    """Every image of a sequence folder or a places.csv folder, in file order."""

    def __init__(self, root: str, frame_id: str = "map"):
        self.places = read_place_folder(root)
        self.frame_id = frame_id
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.places)

    def __iter__(self) -> Iterator[PlaceFrame]:
        places = self.places
        for index in range(len(places)):
            yield PlaceFrame(places.load_rgb(index), places.positions[index],
                             places.quaternions[index], float(places.stamps[index]),
                             os.path.relpath(places.images[index], places.root))


def _stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def _pose_of(msg) -> tuple[np.ndarray, np.ndarray]:
    pose = msg.pose.pose if hasattr(msg.pose, "pose") else msg.pose
    return (np.array([pose.position.x, pose.position.y, pose.position.z]),
            np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z,
                      pose.orientation.w]))


def slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation between unit quaternions (x, y, z, w) along the shorter arc."""
    q0, q1 = q0 / np.linalg.norm(q0), q1 / np.linalg.norm(q1)
    dot = float(np.dot(q0, q1))
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: linear is exact enough and stable
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    angle = np.arccos(dot)
    return (np.sin((1 - t) * angle) * q0 + np.sin(t * angle) * q1) / np.sin(angle)


class PoseTrack:
    """Stamped poses; `at(t)` interpolates between the two poses around t when both lie within
    `max_gap` seconds of it (positions linearly, orientations by slerp)."""

    def __init__(self, stamps, positions, quaternions, max_gap: float):
        order = np.argsort(stamps, kind="stable")
        self.stamps = np.asarray(stamps, dtype=np.float64)[order]
        self.positions = np.asarray(positions, dtype=np.float64)[order]
        self.quaternions = np.asarray(quaternions, dtype=np.float64)[order]
        self.max_gap = max_gap

    def at(self, stamp: float) -> tuple[np.ndarray, np.ndarray]:
        if len(self.stamps) == 0:
            return NAN3, NAN4
        right = bisect.bisect_left(self.stamps, stamp)
        if right < len(self.stamps) and self.stamps[right] == stamp:
            return self.positions[right], self.quaternions[right]
        left = right - 1
        if left < 0 or right >= len(self.stamps):  # outside the track: nearest, if close
            nearest = 0 if left < 0 else len(self.stamps) - 1
            if abs(self.stamps[nearest] - stamp) <= self.max_gap:
                return self.positions[nearest], self.quaternions[nearest]
            return NAN3, NAN4
        if stamp - self.stamps[left] > self.max_gap or self.stamps[right] - stamp > self.max_gap:
            return NAN3, NAN4
        t = (stamp - self.stamps[left]) / (self.stamps[right] - self.stamps[left])
        position = (1 - t) * self.positions[left] + t * self.positions[right]
        return position, slerp(self.quaternions[left], self.quaternions[right], t)


class BagSource:
    """Images of one topic of a ROS 1 or ROS 2 bag (sqlite3 or MCAP), each with the pose of a
    nav_msgs/Odometry, PoseStamped or PoseWithCovarianceStamped topic at its header stamp.
    The database frame is the pose messages' frame_id. Images that cannot be decoded are
    skipped and counted (`skipped`); a bag that breaks off (truncated) ends the iteration with
    what was read so far and the reason in `truncated`."""

    def __init__(self, path: str, image_topic: str, pose_topic: str | None,
                 max_pose_gap: float = 0.5):
        from rosbags.typesys import Stores, get_typestore

        self.path, self.image_topic, self.pose_topic = path, image_topic, pose_topic
        self.skipped = 0
        self.truncated: str | None = None
        self.frame_id = "map"
        if not os.path.exists(path):
            raise ValueError(f"bag not found: {path}")
        self._typestore = get_typestore(Stores.ROS2_KILTED)  # for bags without definitions
        stamps, positions, quaternions = [], [], []
        reader = self._open()
        try:
            topics = {c.topic: c.msgtype for c in reader.connections}
            if image_topic not in topics or topics[image_topic] not in IMAGE_TYPES:
                raise ValueError(f"{path} has no image topic '{image_topic}' (image topics: "
                                 f"{sorted(t for t, m in topics.items() if m in IMAGE_TYPES)})")
            if pose_topic is not None:
                if pose_topic not in topics or topics[pose_topic] not in POSE_TYPES:
                    raise ValueError(
                        f"{path} has no pose topic '{pose_topic}' (pose topics: "
                        f"{sorted(t for t, m in topics.items() if m in POSE_TYPES)})")
                connections = [c for c in reader.connections if c.topic == pose_topic]
                for connection, _, raw in reader.messages(connections=connections):
                    msg = reader.deserialize(raw, connection.msgtype)
                    position, quaternion = _pose_of(msg)
                    stamps.append(_stamp(msg))
                    positions.append(position)
                    quaternions.append(quaternion)
                    self.frame_id = msg.header.frame_id or self.frame_id
            self.count = sum(c.msgcount for c in reader.connections if c.topic == image_topic)
        finally:
            reader.close()
        self.poses = PoseTrack(stamps, np.reshape(positions, (-1, 3)),
                               np.reshape(quaternions, (-1, 4)), max_pose_gap)

    def _open(self):
        from rosbags.highlevel import AnyReader

        reader = AnyReader([Path(self.path)], default_typestore=self._typestore)
        try:
            reader.open()
        except Exception as error:  # rosbags raises its own error types for broken bags
            raise ValueError(f"cannot read bag {self.path}: {error}") from None
        return reader

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[PlaceFrame]:
        reader = self._open()
        try:
            connections = [c for c in reader.connections if c.topic == self.image_topic]
            for number, (connection, _, raw) in enumerate(reader.messages(connections=connections)):
                try:
                    msg = reader.deserialize(raw, connection.msgtype)
                    image = decode(msg)
                    rgb = to_rgb8(image.pixels, image.encoding)
                except (ImageDecodeError, ValueError, KeyError, IndexError):
                    self.skipped += 1
                    continue
                stamp = _stamp(msg)
                position, quaternion = self.poses.at(stamp)
                yield PlaceFrame(rgb, position, quaternion, stamp, f"{self.image_topic}#{number}")
        except Exception as error:  # a truncated bag ends with whatever rosbags raises
            self.truncated = f"{type(error).__name__}: {error}"
        finally:
            reader.close()

