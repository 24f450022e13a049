"""vo_node: LIFT features (/dl_perception/features, from lift_node) -> monocular visual odometry
on /dl_perception/vo/odometry (nav_msgs/Odometry, frame odom, child camera_link). Intrinsics come
from /camera/camera_info; when depth_node runs, its /dl_perception/depth/image (32FC1, metres,
grid described by /dl_perception/depth/camera_info) gives metric scale, otherwise the odometry is
up to scale. Tracking loss is reported and counted; no pose is published until the odometry has
re-initialised. Each pose is also published on /tf (odom -> camera_link), and, for frames with
depth, the keypoints that have a depth reading on /dl_perception/features/points (x, y, z in the
camera optical frame, u, v, score), so 3D views show LIFT's features."""
from __future__ import annotations

import collections
import math
import time

import cv2
import numpy as np
from nav_msgs.msg import Odometry
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from ..core.geometry import matrix_to_quat
from ..core.imaging import ImageDecodeError, image_to_numpy
from ..core.pointcloud import unpack
from ..navigation.vo import DepthImage, Features, MonocularVO, VOConfig, body_pose, depth_at
from .messages import pointcloud2_msg, stamp_to_seconds
from .node_base import FrameNode, sensor_qos
from .params import Param
from .tf import TransformPublisher, transform

FEATURES_TOPIC = "dl_perception/features"
ODOMETRY_TOPIC = "dl_perception/vo/odometry"
FEATURE_POINTS_TOPIC = "dl_perception/features/points"
DEPTH_TOPIC = "dl_perception/depth/image"
DEPTH_INFO_TOPIC = "dl_perception/depth/camera_info"


class VONode(FrameNode):
    subscribes_camera = False
    extra_params = [
        Param("use_depth", True, "use depth_node's depth for metric scale when it publishes"),
        Param("depth_wait", 0.3, "seconds a feature frame waits for the depth image of its stamp "
              "while depth_node is running", low=0.0, high=5.0),
        Param("ratio", 0.9, "Lowe's ratio test on mutual nearest neighbours", low=0.1, high=1.0),
        Param("ransac_threshold", 1.0, "essential-matrix RANSAC threshold (px)", low=0.1,
              high=20.0, read_only=True),
        Param("min_inliers", 10, "fewer inliers than this is a tracking loss", low=5, high=10000,
              read_only=True),
        Param("odom_frame", "odom", "frame_id of the odometry", read_only=True),
        Param("child_frame", "camera_link", "child_frame_id of the odometry", read_only=True),
        Param("publish_tf", True, "odom_frame -> child_frame on /tf with every odometry message "
              "(turn off where another source, e.g. sim_node, owns that frame)", read_only=True),
    ]

    def __init__(self, node_name: str = "vo_node", **kwargs):
        super().__init__(node_name, **kwargs)
        self.config = VOConfig(ratio=self.params["ratio"],
                               ransac_threshold_px=self.params["ransac_threshold"],
                               min_inliers=self.params["min_inliers"])
        self.vo: MonocularVO | None = None
        self.K: np.ndarray | None = None
        self.depth_K: np.ndarray | None = None
        self.depths: collections.OrderedDict[float, np.ndarray] = collections.OrderedDict()
        self.last_depth_at = -math.inf
        self.pending: collections.deque = collections.deque()
        self.last_pose = None  # (stamp, T_odom_body) for the twist
        self.status = "waiting for camera_info"
        self.tracking_losses = 0
        qos = sensor_qos(self.params["qos.reliability"], self.params["qos.depth"])
        self.create_subscription(PointCloud2, FEATURES_TOPIC, self._on_features,
                                 max(qos.depth, 10))
        self.create_subscription(CameraInfo, "camera/camera_info", self._on_camera_info, 10)
        self.create_subscription(Image, DEPTH_TOPIC, self._on_depth, qos_profile_sensor_data)
        self.create_subscription(CameraInfo, DEPTH_INFO_TOPIC, self._on_depth_info, 10)
        self.odometry_pub = self.create_publisher(Odometry, ODOMETRY_TOPIC, 10)
        self.points_pub = self.create_publisher(PointCloud2, FEATURE_POINTS_TOPIC, 10)
        self.tf = TransformPublisher(self) if self.params["publish_tf"] else None
        self.create_timer(0.05, self._flush_pending)

    # --- inputs -------------------------------------------------------------------------------
    def _on_camera_info(self, msg: CameraInfo) -> None:
        K = np.array(msg.k, dtype=np.float64).reshape(3, 3)
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            self.get_logger().warning("camera_info without intrinsics ignored",
                                      throttle_duration_sec=5.0)
            return
        if self.K is None or not np.allclose(K, self.K):
            self.K = K
            self.vo = MonocularVO(K, self.config)
            self.status = "initialising"

    def _on_depth_info(self, msg: CameraInfo) -> None:
        K = np.array(msg.k, dtype=np.float64).reshape(3, 3)
        if K[0, 0] > 0 and K[1, 1] > 0:
            self.depth_K = K

    def _on_depth(self, msg: Image) -> None:
        if not self.params["use_depth"]:
            return
        try:
            decoded = image_to_numpy(msg)
        except ImageDecodeError as error:
            self.stats.drop("depth_" + error.reason)
            return
        if decoded.encoding not in ("32FC1", "16UC1", "mono16"):
            self.stats.drop("depth_encoding")
            self.get_logger().warning(f"depth image in {decoded.encoding} ignored (want 32FC1)",
                                      throttle_duration_sec=5.0)
            return
        depth = decoded.pixels.astype(np.float32)
        if decoded.encoding != "32FC1":  # 16-bit depth is millimetres (REP-118)
            depth = depth / 1000.0
        self.depths[stamp_to_seconds(msg.header.stamp)] = depth
        while len(self.depths) > 30:
            self.depths.popitem(last=False)
        self.last_depth_at = time.monotonic()

    def _depth_for(self, stamp: float) -> DepthImage | None:
        if not self.depths or self.K is None:
            return None
        nearest = min(self.depths, key=lambda s: abs(s - stamp))
        if abs(nearest - stamp) > 1e-3:
            return None
        depth = self.depths[nearest]
        K = self.depth_K
        if K is None:  # same camera on another grid: scale the colour intrinsics
            width = 2 * self.K[0, 2]
            scale = depth.shape[1] / width if width > 0 else 1.0
            K = self.K.copy()
            K[:2] *= scale
        return DepthImage(depth, K)

    def _on_features(self, msg: PointCloud2, info=None) -> None:
        self.stats.frame_received()
        if self.K is None or self.vo is None:
            self.stats.drop("no_camera_info")
            self.get_logger().warning("features dropped: no /camera/camera_info yet",
                                      throttle_duration_sec=5.0)
            return
        self.pending.append((time.monotonic(), msg))
        self._flush_pending()

    def _flush_pending(self) -> None:
        depth_running = (self.params["use_depth"]
                         and time.monotonic() - self.last_depth_at < 2.0)
        while self.pending:
            arrived, msg = self.pending[0]
            stamp = stamp_to_seconds(msg.header.stamp)
            depth = self._depth_for(stamp) if depth_running else None
            waited = time.monotonic() - arrived
            if depth is None and depth_running and waited < self.params["depth_wait"]:
                return  # give depth_node a moment for this frame
            self.pending.popleft()
            self._process(msg, depth, arrived)

    # --- the odometry ---------------------------------------------------------------------------
    def _process(self, msg: PointCloud2, depth: DepthImage | None, arrived: float) -> None:
        started = time.perf_counter()
        try:
            cloud = unpack(msg)
            names = cloud.dtype.names or ()
            if "u" not in names or "v" not in names or "descriptor" not in names:
                raise ValueError(f"feature cloud lacks u, v or descriptor fields (has {names})")
            keypoints = np.stack([cloud["u"], cloud["v"]], axis=1).astype(np.float64)
            descriptors = np.asarray(cloud["descriptor"], dtype=np.float32)
            descriptors = descriptors.reshape(len(cloud), -1) if len(cloud) else \
                np.zeros((0, max(1, descriptors.size)), np.float32)
            finite = np.isfinite(keypoints).all(1) & np.isfinite(descriptors).all(1)
            result = self.vo.process(Features(keypoints[finite], descriptors[finite]), depth)
            if depth is not None:
                self.publish(self.points_pub, self._feature_points(msg.header, cloud, depth))
        except Exception as error:  # one bad message never stops the node
            self.stats.drop("error")
            self.get_logger().error(f"features failed: {error!r}", throttle_duration_sec=5.0)
            return
        self.status = result.status
        if result.pose is None:
            if result.status in ("lost", "reinitialised"):
                self.tracking_losses += 1
                self.get_logger().warning(
                    f"tracking {result.status}: {self.vo.last_reason} "
                    f"({self.tracking_losses} lost frames, {self.vo.reinitialisations} "
                    "re-initialisations so far)", throttle_duration_sec=1.0)
        else:
            odometry = self._odometry(msg.header, result)
            self.publish(self.odometry_pub, odometry)
            if self.tf is not None:
                pose = odometry.pose.pose
                self.tf.send([transform(odometry.header.stamp, odometry.header.frame_id,
                                        odometry.child_frame_id,
                                        (pose.position.x, pose.position.y, pose.position.z),
                                        (pose.orientation.x, pose.orientation.y,
                                         pose.orientation.z, pose.orientation.w))])
        stamp = stamp_to_seconds(msg.header.stamp)
        now = self.get_clock().now().nanoseconds * 1e-9
        processing = time.perf_counter() - started
        self.stats.frame_done(processing, now - stamp if stamp > 0 else None)

    def _feature_points(self, header, cloud, depth: DepthImage) -> PointCloud2:
        """The keypoints that have a depth reading, placed in 3-D (x, y, z in the camera optical
        frame of the feature image, metres) with their u, v and score: LIFT's cloud as RViz's
        and Foxglove's 3D views can show it."""
        keypoints = np.stack([cloud["u"], cloud["v"]], axis=1).astype(np.float64)
        finite = np.isfinite(keypoints).all(axis=1)
        z = np.full(len(keypoints), np.nan)
        z[finite] = depth_at(depth, keypoints[finite], self.K, self.config.max_depth_m)
        known = np.isfinite(z)
        x = (keypoints[known, 0] - self.K[0, 2]) / self.K[0, 0] * z[known]
        y = (keypoints[known, 1] - self.K[1, 2]) / self.K[1, 1] * z[known]
        columns = {"x": x, "y": y, "z": z[known], "u": cloud["u"][known],
                   "v": cloud["v"][known]}
        if "score" in (cloud.dtype.names or ()):
            columns["score"] = cloud["score"][known]
        return pointcloud2_msg({k: np.asarray(v, np.float32) for k, v in columns.items()},
                               header)

    def _odometry(self, header, result) -> Odometry:
        pose = body_pose(result.pose)
        msg = Odometry()
        msg.header.stamp = header.stamp
        msg.header.frame_id = self.params["odom_frame"]
        msg.child_frame_id = self.params["child_frame"]
        t = pose[:3, 3]
        q = matrix_to_quat(pose[:3, :3])
        msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z = map(float, t)
        (msg.pose.pose.orientation.x, msg.pose.pose.orientation.y, msg.pose.pose.orientation.z,
         msg.pose.pose.orientation.w) = map(float, q)
        # up-to-scale positions carry no metric meaning: say so through a large covariance
        position_variance = 0.01 if result.metric else 1e6
        msg.pose.covariance = [0.0] * 36
        for i in range(3):
            msg.pose.covariance[i * 7] = position_variance
            msg.pose.covariance[(i + 3) * 7] = 1e-3
        stamp = stamp_to_seconds(header.stamp)
        if self.last_pose is not None and stamp > self.last_pose[0]:
            dt = stamp - self.last_pose[0]
            step = np.linalg.inv(self.last_pose[1]) @ pose  # in the child frame
            msg.twist.twist.linear.x, msg.twist.twist.linear.y, msg.twist.twist.linear.z = map(
                float, step[:3, 3] / dt)
            angle_axis = cv2.Rodrigues(step[:3, :3])[0].ravel() / dt
            (msg.twist.twist.angular.x, msg.twist.twist.angular.y,
             msg.twist.twist.angular.z) = map(float, angle_axis)
        self.last_pose = (stamp, pose)
        return msg

    def diagnostic_values(self) -> dict[str, str]:
        vo = self.vo
        return {"status": self.status, "metric_scale": str(bool(vo and vo.metric)),
                "tracking_losses": str(self.tracking_losses),
                "reinitialisations": str(vo.reinitialisations if vo else 0),
                "keyframes": str(vo.keyframes if vo else 0)}

