"""posenet_node's per-frame work: the camera pose in the scene the PoseNet was trained on
(PoseWithCovarianceStamped, stamped with the frame's stamp, in `frame_id`: `map` by default,
empty = the scene frame stored in the checkpoint), and with `publish_tf` the same pose as a TF
message (frame_id -> tf_child_frame)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import rosmsg
from ..core.geometry import canonical_quaternion
from ..models.posenet import pose_covariance
from . import FrameProcessor, Output, Param

POSE_TOPIC = "/dl_perception/posenet/pose"
TF_TOPIC = "/tf"


@dataclass(frozen=True)
class PoseResult:
    position: np.ndarray  # (3,) metres in the scene frame
    quaternion: np.ndarray  # (4,) x, y, z, w, w >= 0
    covariance: np.ndarray  # 6 x 6: x, y, z, rotation about x, y, z


class PoseNetProcessor(FrameProcessor):
    node_name = "posenet_node"
    model_name = "posenet"
    parameters = [
        Param("frame_id", "map", "frame of the published pose and TF parent; empty = the scene "
                                 "frame stored in the checkpoint", read_only=True),
        Param("position_variance", 1.0, "covariance of each position axis (m^2) when the model "
                                        "has no learned uncertainty", low=0.0, high=1e6),
        Param("orientation_variance", 0.01, "covariance of each rotation axis (rad^2) when the "
                                            "model has no learned uncertainty", low=0.0, high=1e3),
        Param("publish_tf", True, "also publish the pose on /tf", read_only=True),
        Param("tf_child_frame", "posenet_camera", "child frame of the broadcast transform",
              read_only=True),
    ]

    def __init__(self, model, device, params=None):
        super().__init__(model, device, params)
        self.frame_id = self.param("frame_id") or self.model.config.frame_id
        self.learned_uncertainty = self.model.config.learned_weighting
        info = getattr(self.model, "checkpoint_info", {})
        self.loss_norm = info.get("train_config", {}).get("norm", "l2")
        self.scene = info.get("scene") or ", ".join(info.get("trained_on", [])) or "unknown"
        self.outputs = {POSE_TOPIC: rosmsg.POSE_WITH_COVARIANCE}
        if self.param("publish_tf"):
            self.outputs[TF_TOPIC] = rosmsg.TF_MESSAGE

    def announce(self) -> None:
        self.info(f"weights for the scene: {self.scene}; poses elsewhere are meaningless")
        self.info(f"publishing {POSE_TOPIC} in frame '{self.frame_id}', covariance "
                  + ("from the learned uncertainty" if self.learned_uncertainty else "configured")
                  + (", TF" if TF_TOPIC in self.outputs else ""))

    def covariance(self, out: dict) -> np.ndarray:
        if self.learned_uncertainty:
            return pose_covariance(float(out["log_variance_position"][0].detach()),
                                   float(out["log_variance_orientation"][0].detach()),
                                   self.loss_norm)
        return np.diag([self.param("position_variance")] * 3
                       + [self.param("orientation_variance")] * 3)

    def run(self, image) -> PoseResult:
        out = self.infer(image)
        return PoseResult(out["position"][0].double().cpu().numpy(),
                          canonical_quaternion(out["quaternion"][0].double().cpu().numpy()),
                          self.covariance(out).astype(np.float64))

    def messages(self, result: PoseResult, header) -> list[Output]:
        out_header = rosmsg.header(rosmsg.stamp_ns(header.stamp), self.frame_id)
        outputs = [Output(POSE_TOPIC, rosmsg.pose_with_covariance(
            out_header, result.position, result.quaternion, result.covariance))]
        if TF_TOPIC in self.outputs:
            transform = rosmsg.transform_stamped(out_header, self.param("tf_child_frame"),
                                                 result.position, result.quaternion)
            outputs.append(Output(TF_TOPIC, rosmsg.tf_message([transform])))
        return outputs

    def process(self, image, header) -> list[Output]:
        return self.messages(self.run(image), header)

    def diagnostic_values(self) -> dict[str, str]:
        return {"frame_id": self.frame_id, "scene": self.scene,
                "tf": "on" if TF_TOPIC in self.outputs else "off"}


PROCESSOR = PoseNetProcessor
