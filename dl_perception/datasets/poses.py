"""Images with camera poses, from any source a pose regressor trains or is evaluated on:

- sequence folders (docs/datasets.md; what `dl-perception sim record` writes),
- the Cambridge Landmarks layout (Kendall et al. 2015): `dataset_train.txt` / `dataset_test.txt`,
  three header lines, then `image x y z w p q r`,
- the 7-Scenes layout (Shotton et al. 2013): `seq-XX/frame-XXXXXX.color.png` with
  `frame-XXXXXX.pose.txt` (4x4 camera-to-world), `TrainSplit.txt` / `TestSplit.txt`,
- rosbag2 recordings (sqlite3 or MCAP) with an image topic and a pose topic
  (geometry_msgs/PoseStamped, PoseWithCovarianceStamped, TransformStamped or nav_msgs/Odometry),
  associated by time: an image gets the pose interpolated between the two pose messages around
  its stamp when both lie within `max_pose_gap` seconds of it.

Every source gives `records` (name, stamp, position, quaternion (x, y, z, w) of T_scene_camera,
NaN where unknown) and `images(indices)`, which yields RGB uint8 frames in index order and counts
the frames it could not read in `drops` rather than stopping.
"""
from __future__ import annotations

import collections
import glob
import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import cv2
import numpy as np
import torch

from ..core.geometry import canonical_quaternion, matrix_to_quat, quat_conjugate, slerp
from ..core.imaging import ImageDecodeError, decode, to_rgb8
from ..core.progress import progress

log = logging.getLogger(__name__)

DEFAULT_FRAME_ID = "world"
POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped",
              "geometry_msgs/msg/TransformStamped", "nav_msgs/msg/Odometry")
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
NAN_POSE = (np.full(3, np.nan), np.full(4, np.nan))


@dataclass
class PoseRecord:
    name: str  # image path, or topic@stamp for bags
    stamp: float  # seconds; NaN when the layout has none
    position: np.ndarray  # (3,) metres in the scene frame
    quaternion: np.ndarray  # (4,) x, y, z, w: orientation of the camera in the scene frame

    @property
    def has_pose(self) -> bool:
        return bool(np.isfinite(self.position).all() and np.isfinite(self.quaternion).all()
                    and np.linalg.norm(self.quaternion) > 1e-9)


@dataclass
class PosedImages:
    """A source of posed images. Subclasses implement `_load`."""

    path: str
    kind: str
    frame_id: str
    records: list[PoseRecord] = field(default_factory=list)
    drops: collections.Counter = field(default_factory=collections.Counter)

    def __len__(self) -> int:
        return len(self.records)

    def images(self, indices: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
        """(index, HxWx3 uint8 RGB) for each readable frame of `indices`, in index order."""
        for index in sorted(set(int(i) for i in indices)):
            rgb = self._load(index)
            if rgb is not None:
                yield index, rgb

    def _load(self, index: int) -> np.ndarray | None:
        raise NotImplementedError


class ImageFiles(PosedImages):
    """Posed images stored as files: `records[i].name` is the image path."""

    def _load(self, index: int) -> np.ndarray | None:
        path = self.records[index].name
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None or bgr.size == 0:
            self.drops["unreadable_image"] += 1
            log.warning("cannot read image %s: skipped", path)
            return None
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --- sequence folders ---------------------------------------------------------------------------
def read_sequence_poses(root: str) -> ImageFiles:
    from .sequence import read_sequence

    sequence = read_sequence(root)
    records = [PoseRecord(f.image, f.stamp, f.position, f.quaternion) for f in sequence.frames]
    return ImageFiles(root, "sequence", sequence.meta.get("frame_id", DEFAULT_FRAME_ID), records)


# --- Cambridge Landmarks ------------------------------------------------------------------------
def read_cambridge(root: str, split: str = "train") -> ImageFiles:
    """`dataset_{split}.txt`: camera centre x y z and quaternion w p q r of the world-to-camera
    rotation (as the scene's VisualSFM reconstruction stores it); converted here to the camera
    orientation in the scene frame (x, y, z, w)."""
    list_path = os.path.join(root, f"dataset_{split}.txt")
    if not os.path.isfile(list_path):
        raise ValueError(f"{root}: no dataset_{split}.txt (Cambridge Landmarks layout)")
    records = []
    with open(list_path) as handle:
        lines = handle.read().splitlines()[3:]  # title, blank line, column names
    for number, line in enumerate(lines, start=4):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 8:
            raise ValueError(f"{list_path}:{number}: expected 'image x y z w p q r', got {line!r}")
        values = [_number(v) for v in parts[1:]]
        w, p, q, r = values[3:]
        records.append(PoseRecord(os.path.join(root, parts[0]), math.nan, np.array(values[:3]),
                                  quat_conjugate(np.array([p, q, r, w]))))
    return ImageFiles(root, "cambridge", DEFAULT_FRAME_ID, records)


# --- 7-Scenes ---------------------------------------------------------------------------------
def read_seven_scenes(root: str, split: str | None = "train") -> ImageFiles:
    """Sequences named by `TrainSplit.txt` / `TestSplit.txt` ("sequence1" -> seq-01); all seq-*
    folders when the split file is absent or `split` is None."""
    split_file = os.path.join(root, {"train": "TrainSplit.txt", "test": "TestSplit.txt"}.get(
        split or "", ""))
    if split and os.path.isfile(split_file):
        with open(split_file) as handle:
            numbers = [int(m.group(1)) for m in re.finditer(r"sequence\s*(\d+)", handle.read())]
        folders = [os.path.join(root, f"seq-{n:02d}") for n in numbers]
    else:
        folders = sorted(glob.glob(os.path.join(root, "seq-*")))
    if not folders:
        raise ValueError(f"{root}: no seq-XX folders (7-Scenes layout)")
    records = []
    for folder in folders:
        images = sorted(glob.glob(os.path.join(folder, "frame-*.color.png")))
        if not images:
            raise ValueError(f"{folder}: no frame-XXXXXX.color.png images")
        for image in images:
            pose_path = image.replace(".color.png", ".pose.txt")
            records.append(PoseRecord(image, math.nan, *_seven_scenes_pose(pose_path)))
    return ImageFiles(root, "7scenes", DEFAULT_FRAME_ID, records)


def _seven_scenes_pose(path: str) -> tuple[np.ndarray, np.ndarray]:
    """4x4 camera-to-world matrix -> position, quaternion; NaN when missing or not finite."""
    try:
        with open(path) as handle:
            matrix = np.array([_number(v) for v in handle.read().split()]).reshape(4, 4)
    except (OSError, ValueError):
        return NAN_POSE
    if not np.isfinite(matrix).all():
        return NAN_POSE
    # the poses come from KinectFusion: re-orthonormalise before taking the quaternion
    u, _, vt = np.linalg.svd(matrix[:3, :3])
    return matrix[:3, 3].copy(), matrix_to_quat(u @ vt)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan  # e.g. "-1.#INF" written by Windows tools


# --- rosbag2 ----------------------------------------------------------------------------------
def is_bag(path: str) -> bool:
    return (os.path.isfile(path) and path.endswith((".mcap", ".db3"))) or os.path.isfile(
        os.path.join(path, "metadata.yaml"))


def _open_bag(path: str):
    from pathlib import Path

    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    reader = AnyReader([Path(path)], default_typestore=get_typestore(Stores.ROS2_KILTED))
    try:
        reader.open()
    except Exception as error:  # rosbags raises several types for unreadable files
        raise ValueError(f"cannot open bag {path}: {error}") from None
    return reader


def _stamp(msg, fallback_ns: int) -> float:
    header = getattr(msg, "header", None)
    if header is not None and (header.stamp.sec or header.stamp.nanosec):
        return header.stamp.sec + header.stamp.nanosec * 1e-9
    return fallback_ns * 1e-9


def _pose_of(msg) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(msg, "transform"):  # TransformStamped
        t, r = msg.transform.translation, msg.transform.rotation
        return np.array([t.x, t.y, t.z]), np.array([r.x, r.y, r.z, r.w])
    pose = msg.pose
    if hasattr(pose, "covariance"):  # PoseWithCovariance (also inside Odometry)
        pose = pose.pose
    p, q = pose.position, pose.orientation
    return np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])


def _connections(reader, topic: str, types: tuple[str, ...], path: str):
    found = [c for c in reader.connections if c.topic == topic]
    if not found:
        topics = sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections})
        raise ValueError(f"{path}: no topic {topic} (has {', '.join(topics) or 'none'})")
    bad = [c.msgtype for c in found if c.msgtype not in types]
    if bad:
        raise ValueError(f"{path}: {topic} is {bad[0]}, expected one of {', '.join(types)}")
    return found


def _messages(reader, connections, path: str, drops: collections.Counter):
    """Deserialised messages; a truncated or corrupt bag ends the stream with a logged drop
    instead of losing what was read."""
    iterator = reader.messages(connections=connections)
    while True:
        try:
            connection, timestamp, raw = next(iterator)
        except StopIteration:
            return
        except Exception as error:
            drops["truncated_bag"] += 1
            log.warning("%s ends early (%s); keeping the messages read so far", path, error)
            return
        try:
            yield timestamp, reader.deserialize(raw, connection.msgtype)
        except Exception as error:
            drops["corrupt_message"] += 1
            log.warning("%s: undecodable %s message: %s", path, connection.topic, error)


def read_bag_poses(path: str, pose_topic: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Stamps (N,), positions (N, 3), quaternions (N, 4) of a pose topic, sorted by stamp, and
    the frame they are expressed in (the messages' header frame_id)."""
    reader = _open_bag(path)
    drops: collections.Counter = collections.Counter()
    try:
        connections = _connections(reader, pose_topic, POSE_TYPES, path)
        stamps, positions, quaternions, frame_id = [], [], [], ""
        for timestamp, msg in _messages(reader, connections, path, drops):
            stamps.append(_stamp(msg, timestamp))
            position, quaternion = _pose_of(msg)
            positions.append(position)
            quaternions.append(quaternion)
            frame_id = frame_id or msg.header.frame_id
    finally:
        reader.close()
    order = np.argsort(stamps, kind="stable")
    return (np.asarray(stamps, dtype=np.float64)[order],
            np.asarray(positions, dtype=np.float64).reshape(-1, 3)[order],
            np.asarray(quaternions, dtype=np.float64).reshape(-1, 4)[order],
            frame_id or DEFAULT_FRAME_ID)


def pose_at(stamp: float, stamps: np.ndarray, positions: np.ndarray, quaternions: np.ndarray,
            max_gap: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The pose at `stamp`, interpolated (linear position, slerp orientation) between the pose
    messages just before and just after it when both lie within `max_gap` seconds; None when
    there is no such pair (an exact stamp match needs no partner)."""
    after = int(np.searchsorted(stamps, stamp))
    if after < len(stamps) and abs(stamps[after] - stamp) < 1e-9:
        return positions[after], quaternions[after]
    if after == 0 or after == len(stamps):
        return None
    before = after - 1
    if stamp - stamps[before] > max_gap or stamps[after] - stamp > max_gap:
        return None
    fraction = (stamp - stamps[before]) / (stamps[after] - stamps[before])
    position = positions[before] + fraction * (positions[after] - positions[before])
    return position, slerp(quaternions[before], quaternions[after], fraction)


class BagImages(PosedImages):
    """Images of one topic in a rosbag2, labelled with the time-associated pose topic. Images are
    decoded while streaming, so a bag larger than memory can be used."""

    def __init__(self, path: str, image_topic: str, pose_topic: str, max_pose_gap: float):
        stamps, positions, quaternions, frame_id = read_bag_poses(path, pose_topic)
        super().__init__(path, "bag", frame_id)
        self.image_topic = image_topic
        reader = _open_bag(path)
        try:
            connections = _connections(reader, image_topic, IMAGE_TYPES, path)
            # one pass over the stamps only: the image payloads are read again in images()
            for timestamp, msg in _messages(reader, connections, path, self.drops):
                stamp = _stamp(msg, timestamp)
                pose = pose_at(stamp, stamps, positions, quaternions, max_pose_gap)
                self.records.append(PoseRecord(f"{image_topic}@{stamp:.6f}", stamp,
                                               *(pose if pose is not None else NAN_POSE)))
        finally:
            reader.close()

    def images(self, indices: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
        wanted = set(int(i) for i in indices)
        reader = _open_bag(self.path)
        try:
            connections = _connections(reader, self.image_topic, IMAGE_TYPES, self.path)
            stream = _messages(reader, connections, self.path, collections.Counter())
            for index, (_, msg) in enumerate(stream):
                if index not in wanted:
                    continue
                try:
                    image = decode(msg)
                    yield index, to_rgb8(image.pixels, image.encoding)
                except ImageDecodeError as error:
                    self.drops[f"image_{error.reason}"] += 1
                    log.warning("%s: %s skipped: %s", self.path, self.records[index].name, error)
        finally:
            reader.close()


# --- any source -------------------------------------------------------------------------------
def detect_layout(path: str) -> str:
    if is_bag(path):
        return "bag"
    if os.path.isfile(os.path.join(path, "frames.csv")):
        return "sequence"
    if glob.glob(os.path.join(path, "dataset_*.txt")):
        return "cambridge"
    if glob.glob(os.path.join(path, "seq-*")):
        return "7scenes"
    raise ValueError(f"{path}: not a sequence folder, Cambridge Landmarks or 7-Scenes folder, "
                     "or rosbag2 (see docs/posenet.md)")


def open_posed_images(path: str, split: str = "train", image_topic: str = "/camera/image_raw",
                      pose_topic: str = "/ground_truth/odometry", max_pose_gap: float = 0.1,
                      frame_id: str | None = None) -> PosedImages:
    """Open any supported source; `split` picks the Cambridge / 7-Scenes list, `frame_id`
    overrides the scene frame the source declares."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such dataset: {path}")
    layout = detect_layout(path)
    if layout == "bag":
        source: PosedImages = BagImages(path, image_topic, pose_topic, max_pose_gap)
    elif layout == "sequence":
        source = read_sequence_poses(path)
    elif layout == "cambridge":
        source = read_cambridge(path, split)
    else:
        source = read_seven_scenes(path, split)
    if frame_id:
        source.frame_id = frame_id
    return source


class PoseData:
    """Resized uint8 frames with their poses, in memory; batches are random (training) or centre
    (evaluation) crops."""

    def __init__(self, model, sources: list[PosedImages], log=print):
        """`model`: the PoseNet whose `resize` and `to_tensor` the frames go through."""
        self.images: list[np.ndarray] = []
        self.to_tensor = model.to_tensor
        positions, quaternions, self.names = [], [], []
        self.skipped_no_pose = 0
        for source in sources:
            valid = [i for i, r in enumerate(source.records) if r.has_pose]
            skipped = len(source.records) - len(valid)
            self.skipped_no_pose += skipped
            before = sum(source.drops.values())
            for index, rgb in progress(source.images(valid), total=len(valid),
                                       desc=f"reading {os.path.basename(source.path)}",
                                       unit="img"):
                record = source.records[index]
                self.images.append(model.resize(rgb))
                positions.append(record.position)
                quaternions.append(record.quaternion)
                self.names.append(record.name)
            lost = sum(source.drops.values()) - before
            log(f"{source.path}: {source.kind}, {len(source.records)} frames, "
                f"{len(valid) - lost} used, {skipped} skipped without a finite pose"
                + (f", {lost} unreadable" if lost else "")
                + "".join(f", {n} {k}" for k, n in source.drops.items() if k == "truncated_bag"))
        self.positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        self.quaternions = (canonical_quaternion(np.asarray(quaternions)) if quaternions
                            else np.zeros((0, 4)))

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: np.ndarray, crop: list, rng: np.random.Generator | None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        crop_w, crop_h = crop
        crops = []
        for index in indices:
            image = self.images[index]
            spare_h, spare_w = image.shape[0] - crop_h, image.shape[1] - crop_w
            if rng is None:
                top, left = spare_h // 2, spare_w // 2
            else:
                top, left = int(rng.integers(0, spare_h + 1)), int(rng.integers(0, spare_w + 1))
            crops.append(image[top:top + crop_h, left:left + crop_w])
        return (self.to_tensor(np.stack(crops)),
                torch.from_numpy(self.positions[indices]).float(),
                torch.from_numpy(self.quaternions[indices]).float())
