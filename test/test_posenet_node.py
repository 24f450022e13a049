"""posenet_node through ROS: the pose of each frame in the model's scene frame with the image's
stamp, configured or learned covariance, TF where tf2_ros exists, bad frames and bad weights."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import spin_until

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from dl_perception import models  # noqa: E402
from dl_perception.core.geometry import rotation_angle_deg  # noqa: E402
from dl_perception.core.imaging import DecodedImage  # noqa: E402
from dl_perception.models.posenet import pose_covariance  # noqa: E402
from dl_perception.ros.messages import header, image_msg  # noqa: E402
from dl_perception.processors.posenet import POSE_TOPIC  # noqa: E402
from dl_perception.ros.nodes import PoseNetNode  # noqa: E402


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("posenet")
    paths = {}
    for name, learned in (("fixed", False), ("learned", True)):
        torch.manual_seed(1)
        model = models.create("posenet", learned_weighting=learned)
        model.set_scene([20.0, -5.0, 1.2], 30.0, "world")
        if learned:
            with torch.no_grad():
                model.log_variances.copy_(torch.tensor([0.4, -3.5]))
        paths[name] = str(folder / f"{name}.safetensors")
        info = {"train_config": {"norm": "l2"}, "trained_on": ["/data/hall_a", "/data/hall_b"]}
        if not learned:
            info["scene"] = "simulator world 7 (64 m x 64 m)"
        model.save(paths[name], info=info)
    return paths


class Probe:
    def __init__(self):
        self.node = rclpy.create_node("posenet_probe")
        self.pub = self.node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        self.poses = []
        self.node.create_subscription(PoseWithCovarianceStamped, POSE_TOPIC, self.poses.append, 10)


def _start(weights, **params):
    overrides = [Parameter("weights", value=weights), Parameter("device", value="cpu"),
                 Parameter("max_frame_age", value=0.0)]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    node, probe = PoseNetNode(parameter_overrides=overrides), Probe()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(probe.node)
    spin_until(executor, lambda: probe.pub.get_subscription_count() > 0)
    return node, probe, executor


def _frame(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (240, 320, 3), dtype=np.uint8)


def _send(executor, probe, pixels, count, stamp_sec=1234):
    msg = image_msg(pixels, "rgb8", header(probe.node.get_clock().now().to_msg(), "camera"))
    msg.header.stamp.sec = stamp_sec
    for _ in range(5):
        probe.pub.publish(msg)
        if spin_until(executor, lambda: len(probe.poses) >= count, timeout=2.0):
            return msg
    raise AssertionError("no pose published")


def test_pose_in_the_trained_frame_with_configured_covariance(ros, checkpoints):
    node, probe, executor = _start(checkpoints["fixed"], position_variance=4.0,
                                   orientation_variance=0.02)
    pixels = _frame()
    sent = _send(executor, probe, pixels, 1)
    pose = probe.poses[0]
    assert pose.header.frame_id == "map" and pose.header.stamp == sent.header.stamp
    model = models.load(checkpoints["fixed"])
    with torch.inference_mode():
        expected = model(model.preprocess(DecodedImage(pixels, "rgb8")))
    p, q = pose.pose.pose.position, pose.pose.pose.orientation
    assert np.allclose([p.x, p.y, p.z], expected["position"][0].numpy(), atol=1e-4)
    quaternion = np.array([q.x, q.y, q.z, q.w])
    assert np.linalg.norm(quaternion) == pytest.approx(1.0, abs=1e-6) and q.w >= 0
    assert rotation_angle_deg(quaternion, expected["quaternion"][0].numpy()) < 1e-3
    assert np.allclose(np.array(pose.pose.covariance).reshape(6, 6),
                       np.diag([4.0] * 3 + [0.02] * 3))
    # the node says which scene its weights are for
    assert node.processor.scene == "simulator world 7 (64 m x 64 m)"
    assert node.diagnostic_values()["scene"] == node.processor.scene


def test_learned_uncertainty_gives_the_covariance(ros, checkpoints):
    node, probe, executor = _start(checkpoints["learned"], frame_id="scene")
    # no scene recorded: the training data
    assert node.processor.scene == "/data/hall_a, /data/hall_b"
    _send(executor, probe, _frame(1), 1)
    pose = probe.poses[0]
    assert pose.header.frame_id == "scene"
    assert np.allclose(np.array(pose.pose.covariance).reshape(6, 6),
                       pose_covariance(0.4, -3.5, "l2"), rtol=1e-5)


def test_pose_is_published_on_tf(ros, checkpoints):
    from tf2_msgs.msg import TFMessage

    from dl_perception.ros.tf import TF_QOS

    _, probe, executor = _start(checkpoints["fixed"], tf_child_frame="posenet_cam")
    sent = []
    probe.node.create_subscription(TFMessage, "/tf", sent.append, TF_QOS)
    _send(executor, probe, _frame(2), 1)
    assert spin_until(executor, lambda: sent, timeout=5.0)
    (transform,) = sent[0].transforms
    pose = probe.poses[0]
    assert transform.header == pose.header  # map, the image's stamp
    assert transform.header.frame_id == "map" and transform.child_frame_id == "posenet_cam"
    assert transform.transform.translation.x == pose.pose.pose.position.x
    assert transform.transform.rotation.w == pose.pose.pose.orientation.w
    node, probe, executor = _start(checkpoints["fixed"], publish_tf=False, frame_id="")
    assert "/tf" not in node.processor.outputs
    _send(executor, probe, _frame(2), 1)
    assert probe.poses[0].header.frame_id == "world"  # "": the checkpoint's scene frame


def test_bad_frames_are_dropped_and_the_node_survives(ros, checkpoints):
    node, probe, executor = _start(checkpoints["fixed"])
    probe.pub.publish(Image(header=header(probe.node.get_clock().now().to_msg(), "camera"),
                            height=240, width=320, encoding="rgb8", step=960, data=b"\0" * 100))
    assert spin_until(executor, lambda: node.stats.drops["size"] == 1, timeout=5.0)
    _send(executor, probe, _frame(3), 1)
    assert node.stats.processed == 1


def test_wrong_weights_stop_the_node(tmp_path, checkpoints):
    dronet = models.create("dronet")
    path = str(tmp_path / "dronet.safetensors")
    dronet.save(path)
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "posenet_node"), "--ros-args",
         "-p", f"weights:={path}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "holds a 'dronet' model, expected 'posenet'" in result.stderr
