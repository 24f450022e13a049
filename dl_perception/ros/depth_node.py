"""depth_node: camera frames -> metric depth (Eigen et al. 2014).

Publishes, stamped with the header of the image they came from:
- /dl_perception/depth/image (sensor_msgs/Image, 32FC1, metres along the optical axis) on the
  camera image's grid; NaN where the network did not look (outside its centre crop).
- /dl_perception/depth/camera_info describing that grid: the camera's /camera/camera_info when
  it matches the image size, else width and height only (K all zero = uncalibrated).
- /dl_perception/depth/points (sensor_msgs/PointCloud2, x y z float32 in the camera optical
  frame) when `publish_points` is true and calibrated intrinsics of the image's size are known.

A camera_info whose size differs from the images is not used; it is counted
(`camera_info_mismatch`), warned about and reported in /diagnostics.
"""
from __future__ import annotations

import numpy as np
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from ..geometry import backproject
from ..processors.depth import usable_intrinsics
from .messages import image_msg, pointcloud2_msg
from .node_base import ModelNode
from .params import Param

BEST_EFFORT_LATEST = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                reliability=ReliabilityPolicy.BEST_EFFORT)


class DepthNode(ModelNode):
    model_name = "depth"
    extra_params = [
        Param("publish_points", False, "also publish /dl_perception/depth/points"),
        Param("points_stride", 2, "back-project every n-th pixel along x and y", low=1, high=64),
    ]

    def __init__(self, node_name: str = "depth_node", **kwargs):
        super().__init__(node_name, **kwargs)
        self.depth_pub = self.create_publisher(Image, "dl_perception/depth/image", 5)
        self.info_pub = self.create_publisher(CameraInfo, "dl_perception/depth/camera_info", 5)
        self.points_pub = self.create_publisher(PointCloud2, "dl_perception/depth/points", 5)
        # best effort matches reliable and best-effort camera_info publishers alike
        self.create_subscription(CameraInfo, "camera/camera_info", self._on_camera_info,
                                 BEST_EFFORT_LATEST)
        self.camera_info: CameraInfo | None = None
        self.camera_info_status = "missing"
        self.counters = {"camera_info_mismatch": 0, "frames_without_intrinsics": 0,
                         "points_published": 0}

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info = msg

    def intrinsics_for(self, width: int, height: int) -> CameraInfo | None:
        """The latest camera_info when it describes a width x height image, else None (counted,
        warned about and reported)."""
        info, self.camera_info_status = usable_intrinsics(
            self.camera_info, width, height, self.counters,
            lambda text: self.get_logger().warning(text, throttle_duration_sec=5.0))
        return info

    def process(self, image, header) -> None:
        log_depth = self.infer(image)["log_depth"][0, 0].float().cpu().numpy()
        depth = self.model.depth_on_image(log_depth, image.width, image.height)
        self.publish(self.depth_pub, image_msg(depth, "32FC1", header))
        info = self.intrinsics_for(image.width, image.height)
        out_info = CameraInfo(header=header, width=image.width, height=image.height)
        if info is not None:
            out_info.distortion_model = info.distortion_model
            out_info.d, out_info.k, out_info.r, out_info.p = info.d, info.k, info.r, info.p
        self.publish(self.info_pub, out_info)
        if info is not None and self.params["publish_points"]:
            self.publish(self.points_pub, self.point_cloud(depth, info, header))
            self.counters["points_published"] += 1

    def point_cloud(self, depth: np.ndarray, info: CameraInfo, header) -> PointCloud2:
        stride = self.params["points_stride"]
        points = backproject(depth, np.asarray(info.k, dtype=np.float64).reshape(3, 3))
        points = points[::stride, ::stride].reshape(-1, 3)
        points = points[np.isfinite(points).all(axis=1)].astype(np.float32)
        return pointcloud2_msg({"x": points[:, 0], "y": points[:, 1], "z": points[:, 2]}, header)

    def diagnostic_values(self) -> dict[str, str]:
        return {**super().diagnostic_values(), "camera_info": self.camera_info_status,
                **{key: str(value) for key, value in self.counters.items()}}

