"""posenet_node: camera frames -> the camera pose in the scene the PoseNet was trained on
(geometry_msgs/PoseWithCovarianceStamped on dl_perception/posenet/pose, stamped with the image's
stamp, in frame `frame_id`: `map` by default, as REP-105 names the fixed frame a relocaliser
reports in). The pose is also published on /tf, frame_id -> `tf_child_frame`."""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped

from ..geometry import canonical_quaternion
from ..models.posenet import pose_covariance
from .messages import header as make_header
from .node_base import ModelNode
from .params import Param
from .tf import TransformPublisher

POSE_TOPIC = "dl_perception/posenet/pose"


class PoseNetNode(ModelNode):
    model_name = "posenet"
    extra_params = [
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

    def __init__(self, node_name: str = "posenet_node", **kwargs):
        super().__init__(node_name, **kwargs)
        self.frame_id = self.params["frame_id"] or self.model.config.frame_id
        self.learned_uncertainty = self.model.config.learned_weighting
        info = getattr(self.model, "checkpoint_info", {})
        self.loss_norm = info.get("train_config", {}).get("norm", "l2")
        self.scene = info.get("scene") or ", ".join(info.get("trained_on", [])) or "unknown"
        self.pose_pub = self.create_publisher(PoseWithCovarianceStamped, POSE_TOPIC, 10)
        self.tf_broadcaster = TransformPublisher(self) if self.params["publish_tf"] else None
        if self.tf_broadcaster is not None and not self.tf_broadcaster.available:
            self.tf_broadcaster = None
        self.get_logger().info(
            f"weights for the scene: {self.scene}; poses elsewhere are meaningless")
        self.get_logger().info(
            f"publishing {POSE_TOPIC} in frame '{self.frame_id}', covariance "
            + ("from the learned uncertainty" if self.learned_uncertainty else "configured")
            + (", TF" if self.tf_broadcaster else ""))

    def covariance(self, out: dict) -> np.ndarray:
        if self.learned_uncertainty:
            return pose_covariance(float(out["log_variance_position"][0].detach()),
                                   float(out["log_variance_orientation"][0].detach()),
                                   self.loss_norm)
        return np.diag([self.params["position_variance"]] * 3
                       + [self.params["orientation_variance"]] * 3)

    def process(self, image, header) -> None:
        out = self.infer(image)
        position = out["position"][0].double().cpu().numpy()
        quaternion = canonical_quaternion(out["quaternion"][0].double().cpu().numpy())
        out_header = make_header(header.stamp, self.frame_id)
        msg = PoseWithCovarianceStamped(header=out_header)
        pose = msg.pose.pose
        pose.position.x, pose.position.y, pose.position.z = (float(v) for v in position)
        (pose.orientation.x, pose.orientation.y, pose.orientation.z,
         pose.orientation.w) = (float(v) for v in quaternion)
        msg.pose.covariance = self.covariance(out).astype(np.float64).ravel()
        self.publish(self.pose_pub, msg)
        if self.tf_broadcaster is not None:
            transform = TransformStamped(header=out_header,
                                         child_frame_id=self.params["tf_child_frame"])
            transform.transform.translation.x = pose.position.x
            transform.transform.translation.y = pose.position.y
            transform.transform.translation.z = pose.position.z
            transform.transform.rotation = pose.orientation
            self.tf_broadcaster.send([transform])

    def diagnostic_values(self) -> dict[str, str]:
        return {**super().diagnostic_values(), "frame_id": self.frame_id, "scene": self.scene,
                "tf": "on" if self.tf_broadcaster else "off"}

