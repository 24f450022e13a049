"""lift_node: camera frames -> LIFT keypoints and descriptors as a PointCloud2 on
/dl_perception/features (one row per keypoint: u, v, scale, orientation, score, descriptor[128]),
optionally an overlay image. Frames without texture (black, saturated, flat) give an empty cloud
and a counted warning."""
from __future__ import annotations

import math

from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, PointCloud2

from ..imaging import to_rgb8
from ..models.lift import LIFT, DetectionSettings
from ..processors.lift import draw_overlay, feature_columns
from .messages import image_msg, pointcloud2_msg
from .node_base import ModelNode
from .params import Param

FEATURES_TOPIC = "dl_perception/features"
OVERLAY_TOPIC = "dl_perception/features/overlay"


def _patch_batch(value) -> str | None:
    allowed = LIFT.EXECUTION_CHOICES["patch_batch"]
    return None if value in allowed else f"must be one of {allowed}, got {value}"


def _positive_list(value) -> str | None:
    values = list(value)
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        return f"needs one or more positive factors, got {values}"
    return None


class LIFTNode(ModelNode):
    model_name = "lift"
    extra_params = [
        Param("max_keypoints", 500, "keypoints per frame (strongest first)", low=1, high=100000),
        Param("score_threshold", 0.0, "minimum detector score", low=-1e6, high=1e6),
        Param("nms_radius", 3, "non-maximum suppression radius (pixels of each scale level)",
              low=1, high=64),
        Param("scales", [2 ** (i / 2) for i in range(-2, 7)],
              "image downsampling factors the detector runs at (keypoint sigma = 2 px x factor)",
              validator=_positive_list),
        Param("patch_batch", 64, "keypoint patches per pass of the orientation and descriptor "
              "networks (0, 32, 64 or 256), 0 = all at once (GPU); 64 keeps a CPU's caches "
              "warm: 1.8x faster, same results; hosted by stack_node, its engine chooses",
              validator=_patch_batch),
        Param("publish_overlay", False, "also publish the frame with keypoints drawn on "
              + OVERLAY_TOPIC),
    ]

    def __init__(self, node_name: str = "lift_node", **kwargs):
        super().__init__(node_name, **kwargs)
        self.features_pub = self.create_publisher(PointCloud2, FEATURES_TOPIC, 10)
        self.overlay_pub = self.create_publisher(Image, OVERLAY_TOPIC, qos_profile_sensor_data)
        self.frames_without_keypoints = 0
        self.keypoints_last = 0

    def settings(self) -> DetectionSettings:
        return DetectionSettings(
            max_keypoints=self.params["max_keypoints"],
            score_threshold=self.params["score_threshold"],
            nms_radius=self.params["nms_radius"], scales=list(self.params["scales"]),
            min_contrast=self.model.config.min_contrast, border=self.model.config.border)

    def process(self, image, header) -> None:
        self.model.settings = self.settings()
        if not self.hosted:  # a stack_node's engine sets the execution choices it measured
            self.model.set_execution(patch_batch=self.params["patch_batch"])
        out = self.infer(image)
        columns = feature_columns(out)
        self.keypoints_last = len(columns["u"])
        if self.keypoints_last == 0:
            self.frames_without_keypoints += 1
            self.get_logger().warning(
                "no keypoints in this frame (black, saturated or textureless?); "
                f"{self.frames_without_keypoints} such frames so far", throttle_duration_sec=2.0)
        self.publish(self.features_pub, pointcloud2_msg(columns, header))
        if self.params["publish_overlay"]:
            rgb = to_rgb8(image.pixels, image.encoding)
            self.publish(self.overlay_pub, image_msg(draw_overlay(rgb, columns), "rgb8", header))

    def diagnostic_values(self) -> dict[str, str]:
        return {**super().diagnostic_values(), "keypoints_last": str(self.keypoints_last),
                "frames_without_keypoints": str(self.frames_without_keypoints)}

