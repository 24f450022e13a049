"""What a ROS 2 robot expects of the nodes (in-process): TF from the simulator consistent with its
odometry, camera sources that serve reliable and best-effort subscribers, the compressed
subscription following a namespace and a remapped base topic, undeclared parameters reported."""
import numpy as np
import pytest
from conftest import spin_until

rclpy = pytest.importorskip("rclpy")
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402

from dl_perception.core.geometry import pose_matrix  # noqa: E402
from dl_perception.ros.tf import TF_STATIC_QOS  # noqa: E402

TFMessage = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs: built into .venv by make").TFMessage


def _matrix(transform) -> np.ndarray:
    t, r = transform.transform.translation, transform.transform.rotation
    return pose_matrix([t.x, t.y, t.z], [r.x, r.y, r.z, r.w])


def _executor(*nodes) -> SingleThreadedExecutor:
    executor = SingleThreadedExecutor()
    for node in nodes:
        executor.add_node(node)
    return executor


def test_sim_node_tf_matches_its_odometry_and_camera(ros):
    from dl_perception.ros.sim_node import SimNode

    sim = SimNode(parameter_overrides=[Parameter("world_seed", value=1001),
                                       Parameter("real_time_factor", value=0.0)])
    probe = ros.create_node("tf_probe")
    odometry, tf = [], []
    probe.create_subscription(Odometry, "/ground_truth/odometry", odometry.append, 1000)
    probe.create_subscription(TFMessage, "/tf", tf.append, QoSProfile(depth=1000))
    executor = _executor(sim, probe)
    try:
        assert spin_until(executor, lambda: len(odometry) >= 60, timeout=30)
        executor.remove_node(sim)
        # subscribed late: /tf_static is latched (transient local), as tf2_ros's broadcaster
        static = []
        probe.create_subscription(TFMessage, "/tf_static", static.append, TF_STATIC_QOS)
        assert spin_until(executor, lambda: static, timeout=10)
        spin_until(executor, lambda: len(tf) >= len(odometry), timeout=5)
        image_qos = probe.get_publishers_info_by_topic("/camera/image_raw")[0].qos_profile
        camera_optical = sim.sim.camera_pose()
        last_stamp = odometry[-1].header.stamp
    finally:
        sim.destroy_node()
    assert image_qos.reliability == ReliabilityPolicy.RELIABLE  # REP-2003: serves both kinds
    dynamic = {(t.header.stamp.sec, t.header.stamp.nanosec): t for m in tf for t in m.transforms}
    matched = [m for m in odometry if (m.header.stamp.sec, m.header.stamp.nanosec) in dynamic]
    assert len(matched) >= 0.9 * len(odometry)  # a TF message with each odometry message
    for message in matched:
        t = dynamic[(message.header.stamp.sec, message.header.stamp.nanosec)]
        assert (t.header.frame_id, t.child_frame_id) == ("odom", "base_link")
        p, q = message.pose.pose.position, message.pose.pose.orientation
        assert np.allclose(_matrix(t), pose_matrix([p.x, p.y, p.z], [q.x, q.y, q.z, q.w]))
    chain = {t.child_frame_id: t for t in static[-1].transforms}
    assert chain["camera_link"].header.frame_id == "base_link"
    assert chain["camera_optical_frame"].header.frame_id == "camera_link"
    # odom -> base_link -> camera_link -> camera_optical_frame is where the images are taken
    last = dynamic[(last_stamp.sec, last_stamp.nanosec)]
    composed = _matrix(last) @ _matrix(chain["camera_link"]) @ _matrix(chain["camera_optical_frame"])
    assert np.allclose(composed, pose_matrix(*camera_optical), atol=1e-6)


def test_camera_node_serves_reliable_and_best_effort_subscribers(ros):
    from dl_perception.ros.camera_node import CameraNode

    camera = CameraNode(parameter_overrides=[Parameter("rate_hz", value=30.0),
                                             Parameter("width", value=64),
                                             Parameter("height", value=48)])
    probe = ros.create_node("qos_probe")
    reliable, best_effort = [], []
    probe.create_subscription(Image, "/camera/image_raw", reliable.append,
                              QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    probe.create_subscription(Image, "/camera/image_raw", best_effort.append,
                              qos_profile_sensor_data)
    executor = _executor(camera, probe)
    try:
        assert spin_until(executor, lambda: len(reliable) >= 5 and len(best_effort) >= 5,
                          timeout=20), (len(reliable), len(best_effort))
    finally:
        camera.destroy_node()


def test_compressed_subscription_follows_namespace_and_remapped_base_topic(ros):
    """image_transport's rule: remapping the base topic moves its /compressed sub-topic too."""
    from dl_perception.ros.camera_node import CameraNode
    from dl_perception.ros.nodes import DroNetNode

    remap = ["--ros-args", "-r", "/drone/camera/image_raw:=/drone/cam/image"]
    camera = CameraNode(namespace="drone", cli_args=remap, parameter_overrides=[
        Parameter("rate_hz", value=20.0), Parameter("width", value=64),
        Parameter("height", value=48)])
    dronet = DroNetNode(namespace="drone", cli_args=remap, parameter_overrides=[
        Parameter("image_transport", value="compressed"), Parameter("device", value="cpu"),
        Parameter("max_frame_age", value=0.0)])
    probe = ros.create_node("compressed_probe")
    steering = []
    probe.create_subscription(Float32, "/drone/dl_perception/dronet/steering_angle",
                              steering.append, 10)
    executor = _executor(camera, dronet, probe)
    try:
        assert spin_until(executor, lambda: len(steering) >= 3, timeout=30)
        topics = dict(probe.get_topic_names_and_types())
    finally:
        camera.destroy_node()
        dronet.destroy_node()
    assert "/drone/cam/image/compressed" in topics and "/drone/cam/image" in topics
    assert not any(name.startswith("/camera") for name in topics)


def test_undeclared_parameters_are_reported(ros, tmp_path, repo_dir):
    import os

    from dl_perception.ros.launcher import check_config
    from dl_perception.ros.node_base import undeclared_overrides

    node = Node("camera_node", parameter_overrides=[Parameter("rate_hz", value=5.0),
                                                    Parameter("frame_idd", value="cam")])
    node.declare_parameter("rate_hz", 10.0)
    assert undeclared_overrides(node) == ["frame_idd"]
    node.destroy_node()
    config = tmp_path / "typo.yaml"
    config.write_text("camera_node:\n  ros__parameters:\n    rate_hz: 5.0\n    frame_idd: cam\n"
                      "depth_node:\n  ros__parameters:\n    publish_tf: true\n"
                      "    qos:\n      depth: 2\n")
    assert check_config(str(config)) == ["camera_node: unknown parameter 'frame_idd'",
                                         "depth_node: unknown parameter 'publish_tf'"]
    for name in ("perception.yaml", "sim.yaml", "stack.yaml"):  # the shipped configs are clean
        assert check_config(os.path.join(repo_dir, "config", name)) == [], name
