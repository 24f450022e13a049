"""netvlad_node's per-frame work: the frame's NetVLAD descriptor -> the top-k places of a place
database (matches, PointCloud2), the pose of the best one (PoseWithCovarianceStamped) and, with
`online`, keyframes added as the robot moves (poses from the odometry side input) and revisits
(loop_closures, PointCloud2)."""
from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from ..core import rosmsg
from ..place.database import PlaceDatabase, model_fingerprint
from ..place.online import OnlinePlaces
from ..place.sources import PoseTrack
from . import FrameProcessor, Output, Param, root_name

MATCHES_TOPIC = "/dl_perception/place/matches"
POSE_TOPIC = "/dl_perception/place/pose"
LOOP_TOPIC = "/dl_perception/place/loop_closures"
ODOMETRY = "nav_msgs/msg/Odometry"
UNKNOWN_VARIANCE = 1e6  # covariance of a pose component the database does not know


def stamp_seconds(stamp) -> float:
    """Seconds of a Time, computed as the node computes them (keyframe times must agree)."""
    return stamp.sec + stamp.nanosec * 1e-9


def place_columns(database: PlaceDatabase, scores: np.ndarray, indices: np.ndarray) -> dict:
    """PointCloud2 columns of ranked database places (the matches and loop_closures layout)."""
    positions = database.positions[indices].astype(np.float32)
    quaternions = database.quaternions[indices].astype(np.float32)
    return {"rank": np.arange(len(indices), dtype=np.uint32),
            "db_index": indices.astype(np.uint32), "score": scores.astype(np.float32),
            "x": positions[:, 0], "y": positions[:, 1], "z": positions[:, 2],
            "qx": quaternions[:, 0], "qy": quaternions[:, 1], "qz": quaternions[:, 2],
            "qw": quaternions[:, 3]}


class OdometryHistory:
    """The latest odometry poses; `pose_at(t)` interpolates them (NaN when none is near t)."""

    def __init__(self, length: int = 400, max_gap: float = 0.5):
        self.poses: collections.deque = collections.deque(maxlen=length)
        self.max_gap = max_gap

    def add(self, stamp: float, odometry) -> None:
        pose = odometry.pose.pose
        self.poses.append((stamp, [pose.position.x, pose.position.y, pose.position.z],
                           [pose.orientation.x, pose.orientation.y, pose.orientation.z,
                            pose.orientation.w]))

    def pose_at(self, stamp: float) -> tuple[np.ndarray, np.ndarray]:
        if not self.poses:
            return np.full(3, np.nan), np.full(4, np.nan)
        stamps, positions, quaternions = zip(*self.poses)
        return PoseTrack(stamps, positions, quaternions, self.max_gap).at(stamp)


@dataclass(frozen=True)
class PlaceResult:
    scores: np.ndarray  # best first, found places only
    indices: np.ndarray  # database rows
    revisit: object | None  # place.online.Revisit of an online database


class NetVLADProcessor(FrameProcessor):
    node_name = "netvlad_node"
    model_name = "netvlad"
    outputs = {MATCHES_TOPIC: rosmsg.POINT_CLOUD2, POSE_TOPIC: rosmsg.POSE_WITH_COVARIANCE,
               LOOP_TOPIC: rosmsg.POINT_CLOUD2}
    parameters = [
        Param("database", "", "place database file (dl-perception place build-db); empty = none",
              read_only=True),
        Param("top_k", 5, "matches published per frame", low=1, high=1000),
        Param("online", False, "add keyframes as the robot moves and report revisits",
              read_only=True),
        Param("keyframe_distance", 2.0, "online: metres moved between keyframes (0 = off)",
              low=0.0, high=1e6),
        Param("keyframe_period", 1.0, "online: seconds between keyframes (0 = off)",
              low=0.0, high=1e6),
        Param("ignore_recent", 30.0, "online: keyframes younger than this (s) are not searched",
              low=0.0, high=1e6),
        Param("revisit_min_score", 0.8, "cosine similarity a revisit needs", low=-1.0, high=1.0),
        Param("odometry_topic", "odom", "online: nav_msgs/Odometry giving keyframe poses",
              read_only=True),
        Param("frame_id", "map", "frame of an online database started without a file",
              read_only=True),
        Param("position_sigma", 5.0, "m; standard deviation reported with the place pose",
              low=0.0, high=1e6),
        Param("orientation_sigma", 0.5, "rad; standard deviation reported with the place pose",
              low=0.0, high=1e6),
    ]

    def __init__(self, model, device, params=None):
        super().__init__(model, device, params)
        fingerprint = model_fingerprint(self.model)
        path = self.param("database")
        if path:
            self.database = PlaceDatabase.load(path, expected_model=fingerprint)
        else:
            self.database = PlaceDatabase(dim=self.model.descriptor_dim, model=fingerprint,
                                          frame_id=self.param("frame_id"))
        self.online = OnlinePlaces(
            self.database, ignore_recent=self.param("ignore_recent"),
            keyframe_distance=self.param("keyframe_distance"),
            keyframe_period=self.param("keyframe_period"),
            revisit_min_score=self.param("revisit_min_score")) if self.param("online") else None
        self.odometry = OdometryHistory()
        self.no_match_frames = 0

    def announce(self) -> None:
        if len(self.database) == 0 and self.online is None:
            self.warn("the place database is empty: every frame gets no match")
        self.info(f"place database: {len(self.database)} places, frame "
                  f"'{self.database.frame_id}'" + (", online" if self.online is not None else ""))

    def side_inputs(self) -> dict[str, str]:
        if self.online is None:
            return {}
        return {root_name(self.param("odometry_topic")): ODOMETRY}

    def observe(self, topic: str, message) -> None:
        if topic not in self.side_inputs():
            super().observe(topic, message)
        self.odometry.add(stamp_seconds(message.header.stamp), message)
        if len(self.database) == 0 and message.header.frame_id:
            self.database.frame_id = message.header.frame_id

    def run(self, image, stamp: float) -> PlaceResult:
        """`stamp`: the frame's time in seconds (keyframe times, odometry lookup)."""
        descriptor = self.infer(image)["descriptor"].float().cpu().numpy()
        k = self.param("top_k")
        revisit = None
        if self.online is not None:
            position, quaternion = self.odometry.pose_at(stamp)
            scores, indices, revisit, _ = self.online.observe(descriptor[0], stamp, k, position,
                                                              quaternion)
        else:
            scores, indices = (a[0] for a in self.database.search(descriptor, k))
        found = indices >= 0
        if not found.any():
            self.no_match_frames += 1
        if revisit is not None:
            self.info(f"revisit: frame at {stamp:.2f} s matches place {revisit.db_index} of "
                      f"{revisit.db_stamp:.2f} s (score {revisit.score:.3f})")
        return PlaceResult(scores[found], indices[found], revisit)

    def place_pose(self, index: int, out_header):
        """The pose of database place `index`, with the configured uncertainty (a large one
        for an orientation the database does not know)."""
        position = self.database.positions[index]
        quaternion = self.database.quaternions[index]
        known = bool(np.isfinite(quaternion).all())
        orientation = quaternion / np.linalg.norm(quaternion) if known else (0.0, 0.0, 0.0, 1.0)
        orientation_var = self.param("orientation_sigma") ** 2 if known else UNKNOWN_VARIANCE
        covariance = np.diag([self.param("position_sigma") ** 2] * 3 + [orientation_var] * 3)
        return rosmsg.pose_with_covariance(out_header, position, orientation, covariance)

    def messages(self, result: PlaceResult, header) -> list[Output]:
        out_header = rosmsg.header(rosmsg.stamp_ns(header.stamp), self.database.frame_id)
        outputs = [Output(MATCHES_TOPIC, rosmsg.pointcloud2(
            place_columns(self.database, result.scores, result.indices), out_header))]
        best = result.indices[0] if len(result.indices) else None
        if best is not None and np.isfinite(self.database.positions[best]).all():
            outputs.append(Output(POSE_TOPIC, self.place_pose(best, out_header)))
        if result.revisit is not None:
            revisit = result.revisit
            columns = place_columns(self.database, np.array([revisit.score]), np.array([revisit.db_index]))
            columns["db_stamp"] = np.array([revisit.db_stamp], np.float64)
            outputs.append(Output(LOOP_TOPIC, rosmsg.pointcloud2(columns, out_header)))
        return outputs

    def process(self, image, header) -> list[Output]:
        return self.messages(self.run(image, stamp_seconds(header.stamp)), header)

    def diagnostic_values(self) -> dict[str, str]:
        values = {"database": self.param("database") or "-",
                  "database_places": str(len(self.database)),
                  "no_match_frames": str(self.no_match_frames)}
        if self.online is not None:
            values.update(keyframes=str(self.online.keyframes), revisits=str(self.online.revisits))
        return values


PROCESSOR = NetVLADProcessor
