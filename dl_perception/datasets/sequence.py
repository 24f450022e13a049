"""Recorded image sequences with ground truth: what `dl-perception sim record` writes and every
training command reads (docs/datasets.md, "Sequence layout").

    SEQ/meta.json     {"format": "dl_perception.sequence/1", "world_seed": ..., ...}
    SEQ/camera.yaml   intrinsics, camera_calibration (ROS) format
    SEQ/frames.csv    index,stamp,image,depth,x,y,z,qx,qy,qz,qw,steering,collision
    SEQ/images/       8-bit RGB PNG frames
    SEQ/depth/        16-bit PNG depth in millimetres along the optical axis, 0 = no return

Pose columns give the camera optical frame in the world frame (T_world_camera). Empty cells
are missing values (NaN).
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field

import cv2
import numpy as np
import yaml

from ..core.geometry import intrinsics_matrix, pose_matrix

FORMAT = "dl_perception.sequence/1"
COLUMNS = ["index", "stamp", "image", "depth", "x", "y", "z", "qx", "qy", "qz", "qw",
           "steering", "collision"]
DEPTH_SCALE = 1000.0  # PNG value per metre


@dataclass
class Frame:
    index: int
    stamp: float
    image: str  # absolute path
    depth: str | None  # absolute path or None
    position: np.ndarray  # (3,) NaN when unknown
    quaternion: np.ndarray  # (4,) x, y, z, w
    steering: float = math.nan
    collision: float = math.nan

    @property
    def pose(self) -> np.ndarray:
        """4x4 T_world_camera."""
        return pose_matrix(self.position, self.quaternion)

    def load_rgb(self) -> np.ndarray:
        bgr = cv2.imread(self.image, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read image {self.image}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def load_depth(self) -> np.ndarray:
        """Metric depth (float32, metres), NaN where the renderer saw nothing."""
        if self.depth is None:
            raise ValueError(f"frame {self.index} has no depth")
        raw = cv2.imread(self.depth, cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise ValueError(f"cannot read depth {self.depth}")
        depth = raw.astype(np.float32) / DEPTH_SCALE
        depth[raw == 0] = np.nan
        return depth


@dataclass
class Camera:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @property
    def K(self) -> np.ndarray:
        return intrinsics_matrix(self.fx, self.fy, self.cx, self.cy)

    def to_calibration_yaml(self, name: str = "camera") -> dict:
        return {
            "image_width": self.width, "image_height": self.height, "camera_name": name,
            "camera_matrix": {"rows": 3, "cols": 3, "data": self.K.flatten().tolist()},
            "distortion_model": "plumb_bob",
            "distortion_coefficients": {"rows": 1, "cols": 5, "data": [0.0] * 5},
            "rectification_matrix": {"rows": 3, "cols": 3, "data": np.eye(3).flatten().tolist()},
            "projection_matrix": {"rows": 3, "cols": 4, "data": [
                self.fx, 0.0, self.cx, 0.0, 0.0, self.fy, self.cy, 0.0, 0.0, 0.0, 1.0, 0.0]},
        }

    @classmethod
    def from_calibration_yaml(cls, data: dict) -> "Camera":
        k = data["camera_matrix"]["data"]
        return cls(int(data["image_width"]), int(data["image_height"]), float(k[0]), float(k[4]),
                   float(k[2]), float(k[5]))


@dataclass
class Sequence:
    root: str
    meta: dict
    camera: Camera
    frames: list[Frame] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def positions(self) -> np.ndarray:
        return np.stack([f.position for f in self.frames])

    @property
    def quaternions(self) -> np.ndarray:
        return np.stack([f.quaternion for f in self.frames])


def _float(text: str) -> float:
    text = (text or "").strip()
    return float(text) if text else math.nan


def read_camera_yaml(path: str) -> Camera:
    with open(path) as handle:
        return Camera.from_calibration_yaml(yaml.safe_load(handle))


def read_sequence(root: str) -> Sequence:
    """Read a sequence folder; raises ValueError naming what is missing or malformed."""
    for name in ("meta.json", "camera.yaml", "frames.csv"):
        if not os.path.isfile(os.path.join(root, name)):
            raise ValueError(f"{root} is not a sequence folder: {name} is missing")
    with open(os.path.join(root, "meta.json")) as handle:
        meta = json.load(handle)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{root}: unknown sequence format {meta.get('format')!r}")
    camera = read_camera_yaml(os.path.join(root, "camera.yaml"))
    frames = []
    with open(os.path.join(root, "frames.csv"), newline="") as handle:
        for row in csv.DictReader(handle):
            frames.append(Frame(
                index=int(row["index"]), stamp=float(row["stamp"]),
                image=os.path.join(root, row["image"]),
                depth=os.path.join(root, row["depth"]) if row.get("depth") else None,
                position=np.array([_float(row[k]) for k in ("x", "y", "z")]),
                quaternion=np.array([_float(row[k]) for k in ("qx", "qy", "qz", "qw")]),
                steering=_float(row.get("steering", "")),
                collision=_float(row.get("collision", ""))))
    if not frames:
        raise ValueError(f"{root}: frames.csv lists no frames")
    return Sequence(root, meta, camera, frames)


class SequenceWriter:
    """Writes a sequence folder frame by frame; `close()` writes frames.csv and meta.json."""

    def __init__(self, root: str, camera: Camera, meta: dict):
        self.root = root
        self.camera = camera
        self.meta = {**meta, "format": FORMAT}
        os.makedirs(os.path.join(root, "images"), exist_ok=True)
        os.makedirs(os.path.join(root, "depth"), exist_ok=True)
        with open(os.path.join(root, "camera.yaml"), "w") as handle:
            yaml.safe_dump(camera.to_calibration_yaml(), handle, sort_keys=False)
        self.rows: list[list] = []

    def add(self, stamp: float, rgb: np.ndarray, depth: np.ndarray | None, position, quaternion,
            steering: float = math.nan, collision: float = math.nan) -> int:
        index = len(self.rows)
        image = f"images/{index:06d}.png"
        cv2.imwrite(os.path.join(self.root, image), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        depth_name = ""
        if depth is not None:
            depth_name = f"depth/{index:06d}.png"
            millimetres = np.nan_to_num(depth * DEPTH_SCALE, nan=0.0, posinf=0.0)
            cv2.imwrite(os.path.join(self.root, depth_name),
                        np.clip(np.round(millimetres), 0, 65535).astype(np.uint16))

        def cell(value):
            return "" if value is None or (isinstance(value, float) and math.isnan(value)) \
                else f"{value:.6f}" if isinstance(value, float) else str(value)
        self.rows.append([index, f"{stamp:.6f}", image, depth_name,
                          *[cell(float(v)) for v in position], *[cell(float(v)) for v in quaternion],
                          cell(float(steering)), cell(float(collision))])
        return index

    def close(self, **extra_meta) -> None:
        with open(os.path.join(self.root, "frames.csv"), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            writer.writerows(self.rows)
        with open(os.path.join(self.root, "meta.json"), "w") as handle:
            json.dump({**self.meta, **extra_meta, "frames": len(self.rows)}, handle, indent=2)
