"""depth_node's per-frame work: the depth image (32FC1, metres) on the camera's grid, its
camera_info, and optionally the back-projected points, from a frame and the latest
/camera/camera_info (a side input)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import rosmsg
from ..core.geometry import backproject
from . import FrameProcessor, Output, Param

DEPTH_TOPIC = "/dl_perception/depth/image"
INFO_TOPIC = "/dl_perception/depth/camera_info"
POINTS_TOPIC = "/dl_perception/depth/points"
CAMERA_INFO_TOPIC = "/camera/camera_info"


@dataclass(frozen=True)
class DepthResult:
    depth: np.ndarray  # H x W float32 metres, NaN outside the network's view
    intrinsics: object | None  # the camera's CameraInfo when it fits the frame, else None
    points: np.ndarray | None  # N x 3 float32 in the camera optical frame, when published


class DepthProcessor(FrameProcessor):
    node_name = "depth_node"
    model_name = "depth"
    outputs = {DEPTH_TOPIC: rosmsg.IMAGE, INFO_TOPIC: rosmsg.CAMERA_INFO,
               POINTS_TOPIC: rosmsg.POINT_CLOUD2}
    parameters = [
        Param("publish_points", False, "also publish /dl_perception/depth/points"),
        Param("points_stride", 2, "back-project every n-th pixel along x and y", low=1, high=64),
    ]

    def __init__(self, model, device, params=None):
        super().__init__(model, device, params)
        self.camera_info = None
        self.camera_info_status = "missing"
        self.counters = {"camera_info_mismatch": 0, "frames_without_intrinsics": 0,
                         "points_published": 0}

    def side_inputs(self) -> dict[str, str]:
        return {CAMERA_INFO_TOPIC: rosmsg.CAMERA_INFO}

    def side_input_qos(self, topic: str) -> tuple[str, int]:
        return "best_effort", 1  # matches reliable and best-effort camera_info publishers alike

    def observe(self, topic: str, message) -> None:
        if topic != CAMERA_INFO_TOPIC:
            super().observe(topic, message)
        self.camera_info = message

    def intrinsics_for(self, width: int, height: int):
        """The latest camera_info when it describes a width x height image, else None (counted,
        warned about and reported)."""
        info = self.camera_info
        if info is not None and (info.width, info.height) != (width, height):
            self.counters["camera_info_mismatch"] += 1
            self.warn(f"{CAMERA_INFO_TOPIC} is for {info.width}x{info.height} images but the "
                      f"images are {width}x{height}: not used (no intrinsics on the depth "
                      "camera_info, no points)")
            self.camera_info_status = (f"mismatch: camera_info {info.width}x{info.height}, "
                                       f"images {width}x{height}")
            return None
        if info is not None and info.k[0] > 0 and info.k[4] > 0:
            self.camera_info_status = "ok"
            return info
        self.counters["frames_without_intrinsics"] += 1
        self.camera_info_status = "missing" if info is None else "uncalibrated (K is zero)"
        return None

    def run(self, image) -> DepthResult:
        log_depth = self.infer(image)["log_depth"][0, 0].float().cpu().numpy()
        depth = self.model.depth_on_image(log_depth, image.width, image.height)
        info = self.intrinsics_for(image.width, image.height)
        points = None
        if info is not None and self.param("publish_points"):
            stride = int(self.param("points_stride"))
            xyz = backproject(depth, np.asarray(info.k, dtype=np.float64).reshape(3, 3))
            xyz = xyz[::stride, ::stride].reshape(-1, 3)
            points = xyz[np.isfinite(xyz).all(axis=1)].astype(np.float32)
            self.counters["points_published"] += 1
        return DepthResult(depth, info, points)

    def messages(self, result: DepthResult, header) -> list[Output]:
        height, width = result.depth.shape
        info = rosmsg.empty_camera_info(header, width, height)
        if result.intrinsics is not None:
            source = result.intrinsics
            info.distortion_model = source.distortion_model
            info.d, info.k, info.r, info.p = (np.asarray(v, dtype=np.float64)
                                              for v in (source.d, source.k, source.r, source.p))
        outputs = [Output(DEPTH_TOPIC, rosmsg.image(result.depth, "32FC1", header)),
                   Output(INFO_TOPIC, info)]
        if result.points is not None:
            columns = {axis: result.points[:, i] for i, axis in enumerate("xyz")}
            outputs.append(Output(POINTS_TOPIC, rosmsg.pointcloud2(columns, header)))
        return outputs

    def process(self, image, header) -> list[Output]:
        return self.messages(self.run(image), header)

    def diagnostic_values(self) -> dict[str, str]:
        return {"camera_info": self.camera_info_status,
                **{key: str(value) for key, value in self.counters.items()}}


PROCESSOR = DepthProcessor
