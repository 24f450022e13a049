"""TF (tf2_msgs/TFMessage on /tf and /tf_static) published the way tf2_ros's broadcasters do,
without tf2_ros (not on PyPI): dynamic transforms reliable with depth 100, static ones reliable
and transient local with depth 1, so late subscribers get them. tf2_msgs comes with a ROS install
or is built into the venv by `make` (ros_interfaces/)."""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..core.geometry import OPTICAL_TO_BODY, matrix_to_quat

TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"
TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                    reliability=ReliabilityPolicy.RELIABLE)
TF_STATIC_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
# camera_link (x forward, y left, z up) -> its optical frame (x right, y down, z forward)
OPTICAL_QUATERNION = tuple(float(v) for v in matrix_to_quat(OPTICAL_TO_BODY))


def tf_message_class():
    """tf2_msgs/msg/TFMessage, or None where tf2_msgs is not installed."""
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError:
        return None
    return TFMessage


def transform(stamp, parent: str, child: str, translation=(0.0, 0.0, 0.0),
              quaternion=(0.0, 0.0, 0.0, 1.0)) -> TransformStamped:
    """T_parent_child as a TransformStamped (quaternion x, y, z, w)."""
    msg = TransformStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = parent
    msg.child_frame_id = child
    t, r = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = (float(v) for v in translation)
    r.x, r.y, r.z, r.w = (float(v) for v in quaternion)
    return msg


def transform_from_matrix(stamp, parent: str, child: str, matrix: np.ndarray) -> TransformStamped:
    return transform(stamp, parent, child, matrix[:3, 3], matrix_to_quat(matrix[:3, :3]))


class TransformPublisher:
    """Publishes transforms on /tf and /tf_static for `node`. Without tf2_msgs `available` is
    False and nothing is published (the node says so once)."""

    def __init__(self, node: Node):
        self.node = node
        self._message = tf_message_class()
        self._dynamic = None
        self._static = None
        self._static_transforms: dict[str, TransformStamped] = {}
        self.errors = 0
        if self._message is None:
            node.get_logger().warning("tf2_msgs is not installed: no TF published (`make venv` "
                                      "builds it into the venv; a ROS install has it)")

    @property
    def available(self) -> bool:
        return self._message is not None

    def send(self, transforms: list[TransformStamped]) -> None:
        if self._message is None:
            return
        if self._dynamic is None:
            self._dynamic = self.node.create_publisher(self._message, TF_TOPIC, TF_QOS)
        self._publish(self._dynamic, transforms)

    def send_static(self, transforms: list[TransformStamped]) -> None:
        """Static transforms, latched; later calls add to (or replace by child) earlier ones."""
        if self._message is None:
            return
        if self._static is None:
            self._static = self.node.create_publisher(self._message, TF_STATIC_TOPIC,
                                                      TF_STATIC_QOS)
        for each in transforms:
            self._static_transforms[each.child_frame_id] = each
        self._publish(self._static, list(self._static_transforms.values()))

    def _publish(self, publisher, transforms) -> None:
        try:
            publisher.publish(self._message(transforms=transforms))
        except Exception as error:  # a saturated middleware must not stop the node
            self.errors += 1
            self.node.get_logger().warning(f"TF publish failed: {error}",
                                           throttle_duration_sec=2.0)
