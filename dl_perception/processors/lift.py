"""lift_node's per-frame work: LIFT keypoints and descriptors as a PointCloud2 on
/dl_perception/features (one row per keypoint: u, v, scale, orientation, score,
descriptor[128]) and optionally the frame with the keypoints drawn. Frames without texture give
an empty cloud and a counted warning."""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..core import rosmsg
from ..core.imaging import to_rgb8
from ..models.lift import LIFT, DetectionSettings
from . import FrameProcessor, Output, Param

FEATURES_TOPIC = "/dl_perception/features"
OVERLAY_TOPIC = "/dl_perception/features/overlay"


def feature_columns(out: dict) -> dict[str, np.ndarray]:
    """The model's outputs as the PointCloud2 columns docs/interfaces.md fixes."""
    keypoints = out["keypoints"].cpu().numpy().astype(np.float32).reshape(-1, 2)
    return {
        "u": keypoints[:, 0].copy(),
        "v": keypoints[:, 1].copy(),
        "scale": out["scales"].cpu().numpy().astype(np.float32),
        "orientation": out["orientations"].cpu().numpy().astype(np.float32),
        "score": out["scores"].cpu().numpy().astype(np.float32),
        "descriptor": out["descriptors"].cpu().numpy().astype(np.float32).reshape(-1, 128),
    }


def draw_overlay(rgb: np.ndarray, columns: dict) -> np.ndarray:
    """Circles of radius 2 sigma with a tick along the orientation."""
    canvas = np.ascontiguousarray(rgb.copy())
    for u, v, scale, angle in zip(columns["u"], columns["v"], columns["scale"],
                                  columns["orientation"]):
        radius = max(2.0, 2.0 * float(scale))
        centre = (int(round(u)), int(round(v)))
        tip = (int(round(u + radius * math.cos(angle))), int(round(v + radius * math.sin(angle))))
        cv2.circle(canvas, centre, int(round(radius)), (0, 255, 0), 1, cv2.LINE_AA)
        cv2.line(canvas, centre, tip, (255, 0, 0), 1, cv2.LINE_AA)
    return canvas


def _patch_batch(value) -> str | None:
    allowed = LIFT.EXECUTION_CHOICES["patch_batch"]
    return None if value in allowed else f"must be one of {allowed}, got {value}"


def _positive_list(value) -> str | None:
    values = list(value)
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        return f"needs one or more positive factors, got {values}"
    return None


@dataclass(frozen=True)
class FeaturesResult:
    columns: dict  # name -> numpy column (feature_columns)
    overlay: np.ndarray | None  # H x W x 3 RGB with the keypoints drawn, when asked for


class LIFTProcessor(FrameProcessor):
    node_name = "lift_node"
    model_name = "lift"
    outputs = {FEATURES_TOPIC: rosmsg.POINT_CLOUD2, OVERLAY_TOPIC: rosmsg.IMAGE}
    sensor_data_outputs = (OVERLAY_TOPIC,)
    parameters = [
        Param("max_keypoints", 500, "keypoints per frame (strongest first)", low=1, high=100000),
        Param("score_threshold", 0.0, "minimum detector score", low=-1e6, high=1e6),
        Param("nms_radius", 3, "non-maximum suppression radius (pixels of each scale level)",
              low=1, high=64),
        Param("score_smoothing", 0.0, "Gaussian sigma (pixels of each scale level) applied to the "
              "score map before its maxima are taken, 0 = none", low=0.0, high=10.0),
        Param("edge_ratio", 0.0, "maxima on a ridge of the score (ratio of its principal "
              "curvatures above this) are dropped, 0 = keep all", low=0.0, high=1000.0),
        Param("scales", [2 ** (i / 2) for i in range(-2, 7)],
              "image downsampling factors the detector runs at (keypoint sigma = 2 px x factor)",
              validator=_positive_list),
        Param("patch_batch", 64, "keypoint patches per pass of the orientation and descriptor "
              "networks (0, 32, 64 or 256), 0 = all at once (GPU); 64 keeps a CPU's caches "
              "warm: 1.8x faster, same results; hosted by stack_node, its engine chooses",
              validator=_patch_batch),
        Param("publish_overlay", False, "also publish the frame with keypoints drawn on "
              + OVERLAY_TOPIC.lstrip("/")),
    ]

    def __init__(self, model, device, params=None):
        super().__init__(model, device, params)
        self.frames_without_keypoints = 0
        self.keypoints_last = 0

    def settings(self) -> DetectionSettings:
        """This frame's detection settings, from the parameters."""
        return DetectionSettings(
            max_keypoints=self.param("max_keypoints"), score_threshold=self.param("score_threshold"),
            nms_radius=self.param("nms_radius"), scales=tuple(self.param("scales")),
            min_contrast=self.model.config.min_contrast, border=self.model.config.border,
            score_smoothing=self.param("score_smoothing"), edge_ratio=self.param("edge_ratio"))

    def forward_arguments(self) -> dict:
        arguments = {"settings": self.settings()}
        if self.passes_execution:
            arguments["patch_batch"] = self.param("patch_batch")
        return arguments

    def run(self, image) -> FeaturesResult:
        columns = feature_columns(self.infer(image))
        self.keypoints_last = len(columns["u"])
        if self.keypoints_last == 0:
            self.frames_without_keypoints += 1
            self.warn("no keypoints in this frame (black, saturated or textureless?); "
                      f"{self.frames_without_keypoints} such frames so far")
        overlay = None
        if self.param("publish_overlay"):
            overlay = draw_overlay(to_rgb8(image.pixels, image.encoding), columns)
        return FeaturesResult(columns, overlay)

    def messages(self, result: FeaturesResult, header) -> list[Output]:
        outputs = [Output(FEATURES_TOPIC, rosmsg.pointcloud2(result.columns, header))]
        if result.overlay is not None:
            outputs.append(Output(OVERLAY_TOPIC, rosmsg.image(result.overlay, "rgb8", header)))
        return outputs

    def process(self, image, header) -> list[Output]:
        return self.messages(self.run(image), header)

    def diagnostic_values(self) -> dict[str, str]:
        return {"keypoints_last": str(self.keypoints_last),
                "frames_without_keypoints": str(self.frames_without_keypoints)}


PROCESSOR = LIFTProcessor
