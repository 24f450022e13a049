"""netvlad_node: camera frames -> NetVLAD descriptor -> the top-k places of a place database
(`/dl_perception/place/matches`, PointCloud2) and the pose of the best one
(`/dl_perception/place/pose`). With `online: true` keyframes join the database as the robot moves
(poses from `odometry_topic`) and a good match with a keyframe older than `ignore_recent` s is a
revisit, published on `/dl_perception/place/loop_closures`."""
from __future__ import annotations


import numpy as np
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import PointCloud2

from ..place.database import PlaceDatabase, model_fingerprint
from ..place.online import OnlinePlaces
from ..processors.netvlad import OdometryHistory, place_columns
from .messages import header as make_header
from .messages import pointcloud2_msg, stamp_to_seconds
from .node_base import ModelNode
from .params import Param

UNKNOWN_VARIANCE = 1e6  # covariance of a pose component the database does not know


class NetVLADNode(ModelNode):
    model_name = "netvlad"
    extra_params = [
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

    def __init__(self, node_name: str = "netvlad_node", **kwargs):
        super().__init__(node_name, **kwargs)
        fingerprint = model_fingerprint(self.model)
        path = self.params["database"]
        if path:
            self.database = PlaceDatabase.load(path, expected_model=fingerprint)
        else:
            self.database = PlaceDatabase(dim=self.model.descriptor_dim, model=fingerprint,
                                          frame_id=self.params["frame_id"])
        self.online = OnlinePlaces(
            self.database, ignore_recent=self.params["ignore_recent"],
            keyframe_distance=self.params["keyframe_distance"],
            keyframe_period=self.params["keyframe_period"],
            revisit_min_score=self.params["revisit_min_score"]) if self.params["online"] else None
        self.odometry = OdometryHistory()
        if self.online is not None:
            self.create_subscription(Odometry, self.params["odometry_topic"],
                                     self._on_odometry, 50)
        self.matches_pub = self.create_publisher(PointCloud2, "dl_perception/place/matches", 10)
        self.pose_pub = self.create_publisher(PoseWithCovarianceStamped,
                                              "dl_perception/place/pose", 10)
        self.loop_pub = self.create_publisher(PointCloud2, "dl_perception/place/loop_closures", 10)
        self.no_match_frames = 0
        if len(self.database) == 0 and self.online is None:
            self.get_logger().warning("the place database is empty: every frame gets no match")
        self.get_logger().info(f"place database: {len(self.database)} places, "
                               f"frame '{self.database.frame_id}'"
                               + (", online" if self.online is not None else ""))

    def _on_odometry(self, msg: Odometry) -> None:
        self.odometry.add(stamp_to_seconds(msg.header.stamp), msg)
        if len(self.database) == 0 and msg.header.frame_id:
            self.database.frame_id = msg.header.frame_id

    def process(self, image, header) -> None:
        descriptor = self.infer(image)["descriptor"].float().cpu().numpy()
        stamp = stamp_to_seconds(header.stamp)
        k = self.params["top_k"]
        revisit = None
        if self.online is not None:
            position, quaternion = self.odometry.pose_at(stamp)
            scores, indices, revisit, _ = self.online.observe(descriptor[0], stamp, k, position,
                                                              quaternion)
        else:
            scores, indices = (a[0] for a in self.database.search(descriptor, k))
        found = indices >= 0
        scores, indices = scores[found], indices[found]
        if len(indices) == 0:
            self.no_match_frames += 1
        out_header = make_header(header.stamp, self.database.frame_id)
        self.publish(self.matches_pub, pointcloud2_msg(place_columns(self.database, scores, indices), out_header))
        if len(indices) and np.isfinite(self.database.positions[indices[0]]).all():
            self.publish(self.pose_pub, self._pose(indices[0], out_header))
        if revisit is not None:
            columns = place_columns(self.database, np.array([revisit.score]), np.array([revisit.db_index]))
            columns["db_stamp"] = np.array([revisit.db_stamp], np.float64)
            self.publish(self.loop_pub, pointcloud2_msg(columns, out_header))
            self.get_logger().info(f"revisit: frame at {stamp:.2f} s matches place "
                                   f"{revisit.db_index} of {revisit.db_stamp:.2f} s "
                                   f"(score {revisit.score:.3f})", throttle_duration_sec=1.0)

    def _pose(self, index: int, out_header) -> PoseWithCovarianceStamped:
        msg = PoseWithCovarianceStamped(header=out_header)
        x, y, z = self.database.positions[index]
        msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z = \
            float(x), float(y), float(z)
        quaternion = self.database.quaternions[index]
        known = bool(np.isfinite(quaternion).all())
        if known:
            o = msg.pose.pose.orientation
            o.x, o.y, o.z, o.w = (float(v) for v in quaternion / np.linalg.norm(quaternion))
        position_var = self.params["position_sigma"] ** 2
        orientation_var = self.params["orientation_sigma"] ** 2 if known else UNKNOWN_VARIANCE
        msg.pose.covariance = np.diag([position_var] * 3 + [orientation_var] * 3).flatten().tolist()
        return msg

    def diagnostic_values(self) -> dict[str, str]:
        values = {**super().diagnostic_values(), "database": self.params["database"] or "-",
                  "database_places": str(len(self.database)),
                  "no_match_frames": str(self.no_match_frames)}
        if self.online is not None:
            values.update(keyframes=str(self.online.keyframes), revisits=str(self.online.revisits))
        return values

