"""lift_node and vo_node through ROS: the PointCloud2 contract of docs/interfaces.md, flat frames
(zero keypoints, counted), parameters, and odometry with and without depth_node's depth,
including tracking loss."""
import math
import os
import sys

import cv2
import numpy as np
import pytest
from conftest import spin_until

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from dl_perception import models  # noqa: E402
from dl_perception.core.pointcloud import unpack  # noqa: E402
from dl_perception.ros.nodes import LIFTNode  # noqa: E402
from dl_perception.ros.messages import (camera_info_msg, header, image_msg,  # noqa: E402
                                        pointcloud2_msg, seconds_to_stamp)
from dl_perception.ros.tf import TF_QOS  # noqa: E402
from dl_perception.ros.vo_node import VONode  # noqa: E402
from dl_perception.navigation.vo import body_pose  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from scenes import PlanesScene, texture  # noqa: E402


@pytest.fixture(scope="module")
def lift_weights(tmp_path_factory):
    """An untrained checkpoint: the node's contract does not depend on training."""
    import torch
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("w") / "lift.safetensors")
    models.create("lift").save(path)
    return path


def _executor(*nodes):
    executor = SingleThreadedExecutor()
    for node in nodes:
        executor.add_node(node)
    return executor


def _diagnostic(messages, node_name, key):
    for msg in reversed(messages):
        for status in msg.status:
            if node_name in status.name:
                values = {kv.key: kv.value for kv in status.values}
                if key in values:
                    return values[key]
    return None


def test_lift_node_publishes_the_feature_contract(ros, lift_weights):
    node = LIFTNode(parameter_overrides=[
        Parameter("weights", value=lift_weights), Parameter("device", value="cpu"),
        Parameter("max_frame_age", value=0.0), Parameter("max_keypoints", value=60),
        Parameter("publish_overlay", value=True), Parameter("diagnostics_period", value=0.2)])
    probe = ros.create_node("probe")
    clouds, overlays, diagnostics = [], [], []
    probe.create_subscription(PointCloud2, "/dl_perception/features", clouds.append, 10)
    probe.create_subscription(Image, "/dl_perception/features/overlay", overlays.append,
                              qos_profile_sensor_data)
    probe.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 50)
    pub = probe.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    executor = _executor(node, probe)
    assert spin_until(executor, lambda: pub.get_subscription_count() > 0)
    textured = np.repeat(texture(1, 256)[:240, :256, None], 3, axis=2)
    frames = [textured, np.zeros_like(textured), np.full_like(textured, 255)]
    for index, pixels in enumerate(frames):
        stamp = seconds_to_stamp(100.0 + index)
        for _ in range(5):
            pub.publish(image_msg(pixels, "rgb8", header(stamp, "camera_optical_frame")))
            if spin_until(executor, lambda: len(clouds) > index, timeout=20.0):
                break
    assert len(clouds) == 3
    cloud = clouds[0]
    fields = {f.name: (f.datatype, f.count) for f in cloud.fields}
    assert fields == {"u": (7, 1), "v": (7, 1), "scale": (7, 1), "orientation": (7, 1),
                      "score": (7, 1), "descriptor": (7, 128)}
    assert cloud.height == 1 and 0 < cloud.width <= 60
    assert cloud.header.stamp.sec == 100 and cloud.header.frame_id == "camera_optical_frame"
    points = unpack(cloud)
    assert np.all((points["u"] >= 0) & (points["u"] < 256) & (points["v"] >= 0) & (points["v"] < 240))
    np.testing.assert_allclose(np.linalg.norm(points["descriptor"], axis=1), 1.0, atol=1e-4)
    # black and saturated frames: empty clouds, counted, and the node keeps going
    assert clouds[1].width == 0 and clouds[2].width == 0
    assert node.processor.frames_without_keypoints == 2
    assert spin_until(executor, lambda: _diagnostic(
        diagnostics, "lift_node", "frames_without_keypoints") == "2", timeout=5.0)
    assert overlays and overlays[0].encoding == "rgb8"
    # a parameter set at run time applies from the next frame (the processor reads it live);
    # one outside its range is refused and changes nothing
    assert node.set_parameters([Parameter("max_keypoints", value=7)])[0].successful
    assert not node.set_parameters([Parameter("max_keypoints", value=0)])[0].successful
    for _ in range(5):
        pub.publish(image_msg(textured, "rgb8", header(seconds_to_stamp(104.0), "camera_optical_frame")))
        if spin_until(executor, lambda: len(clouds) > 3, timeout=20.0):
            break
    assert clouds[3].width == 7


def test_lift_node_refuses_bad_parameters(ros, lift_weights):
    with pytest.raises(ValueError, match="scales"):
        LIFTNode(parameter_overrides=[Parameter("weights", value=lift_weights),
                                      Parameter("scales", value=[1.0, -2.0])])


class _Feeder:
    """Publishes camera_info, SIFT feature clouds (the lift_node contract) and depth images of a
    ray-cast flight, and collects vo_node's odometry."""

    def __init__(self, node, scene, with_depth):
        self.node, self.scene, self.with_depth = node, scene, with_depth
        self.info = node.create_publisher(CameraInfo, "/camera/camera_info", 10)
        self.features = node.create_publisher(PointCloud2, "/dl_perception/features", 10)
        self.depth = node.create_publisher(Image, "/dl_perception/depth/image",
                                           qos_profile_sensor_data)
        self.odometry, self.tf, self.points = [], [], []
        node.create_subscription(Odometry, "/dl_perception/vo/odometry", self.odometry.append, 100)
        node.create_subscription(PointCloud2, "/dl_perception/features/points",
                                 self.points.append, 100)
        node.create_subscription(TFMessage, "/tf", self.tf.append, TF_QOS)
        self.sift = cv2.SIFT_create(nfeatures=400)

    def send(self, index, blank=False):
        stamp = seconds_to_stamp(10.0 + 0.1 * index)
        h = header(stamp, "camera_optical_frame")
        camera = self.scene.camera
        self.info.publish(camera_info_msg(camera.width, camera.height, camera.fx, camera.fy,
                                          camera.cx, camera.cy, h))
        rgb, depth = self.scene.render(self.scene.pose(index))
        if self.with_depth:
            self.depth.publish(image_msg(np.nan_to_num(depth), "32FC1", h))
        keypoints, descriptors = self.sift.detectAndCompute(
            cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), None)
        if blank or descriptors is None:
            keypoints, descriptors = [], np.zeros((0, 128), np.float32)
        uv = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2)
        columns = {"u": uv[:, 0].copy(), "v": uv[:, 1].copy(),
                   "scale": np.ones(len(uv), np.float32), "orientation": np.zeros(len(uv), np.float32),
                   "score": np.ones(len(uv), np.float32),
                   "descriptor": descriptors.astype(np.float32)}
        self.features.publish(pointcloud2_msg(columns, h))


@pytest.mark.parametrize("with_depth", [True, False])
def test_vo_node_odometry_and_tracking_loss(ros, with_depth):
    vo = VONode(parameter_overrides=[Parameter("diagnostics_period", value=0.2),
                                     Parameter("max_frame_age", value=0.0)])
    probe = ros.create_node("vo_probe")
    diagnostics = []
    probe.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 50)
    scene = PlanesScene()
    feeder = _Feeder(probe, scene, with_depth)
    executor = _executor(vo, probe)
    assert spin_until(executor, lambda: feeder.features.get_subscription_count() > 0)
    blank = {20, 21, 22, 23}
    for index in range(40):
        feeder.send(index, blank=index in blank)
        spin_until(executor, lambda: vo.stats.processed + vo.stats.drops["no_camera_info"]
                   >= index + 1, timeout=5.0)
    spin_until(executor, lambda: _diagnostic(diagnostics, "vo_node", "tracking_losses")
               not in (None, "0"), timeout=5.0)
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in feeder.odometry]
    assert len(feeder.odometry) >= 20
    assert all(m.header.frame_id == "odom" and m.child_frame_id == "camera_link"
               for m in feeder.odometry)
    # nothing published for the frames without features, and tracking went on after them
    assert not any(abs(s - (10.0 + 0.1 * i)) < 1e-6 for s in stamps for i in blank)
    assert max(stamps) > 10.0 + 0.1 * 30
    assert int(_diagnostic(diagnostics, "vo_node", "tracking_losses")) >= 1
    assert _diagnostic(diagnostics, "vo_node", "metric_scale") == str(with_depth)
    last = feeder.odometry[-1]
    index = int(round((stamps[-1] - 10.0) / 0.1))
    truth = body_pose(scene.pose(index))[:3, 3]
    position = np.array([last.pose.pose.position.x, last.pose.pose.position.y,
                         last.pose.pose.position.z])
    if with_depth:  # metric: body axes, x forward, within a few per cent of the distance flown
        assert np.linalg.norm(position - truth) < 0.05 * np.linalg.norm(truth) + 0.1
        assert last.pose.covariance[0] < 1.0
    else:  # up to scale: the direction of travel, and a covariance that says so
        cosine = position @ truth / (np.linalg.norm(position) * np.linalg.norm(truth))
        assert cosine > 0.95
        assert last.pose.covariance[0] > 1e3
    assert math.isfinite(last.twist.twist.linear.x)
    # keypoints with depth, in 3-D: z is the depth image's value at the keypoint
    if with_depth:
        assert len(feeder.points) >= 30
        cloud = unpack(feeder.points[-1])
        assert len(cloud) > 20 and feeder.points[-1].header.frame_id == "camera_optical_frame"
        index = int(round((feeder.points[-1].header.stamp.nanosec * 1e-9
                           + feeder.points[-1].header.stamp.sec - 10.0) / 0.1))
        depth = np.nan_to_num(scene.render(scene.pose(index))[1])
        u, v = np.round(cloud["u"]).astype(int), np.round(cloud["v"]).astype(int)
        # read on the depth grid (intrinsics scaled from camera_info): the pixel or a neighbour
        near = np.stack([depth[np.clip(v + dv, 0, depth.shape[0] - 1),
                               np.clip(u + du, 0, depth.shape[1] - 1)]
                         for dv in (-1, 0, 1) for du in (-1, 0, 1)])
        assert (np.abs(near - cloud["z"]) < 1e-4).any(axis=0).all()
        camera = scene.camera
        assert np.allclose(cloud["x"], (cloud["u"] - camera.cx) / camera.fx * cloud["z"],
                           rtol=1e-4, atol=1e-5)
    else:
        assert feeder.points == []
    # /tf carries each odometry pose: odom -> camera_link at the same stamp
    transforms = {(t.header.stamp.sec, t.header.stamp.nanosec): t
                  for m in feeder.tf for t in m.transforms}
    assert len(transforms) == len(feeder.odometry)
    for odometry in feeder.odometry:
        t = transforms[(odometry.header.stamp.sec, odometry.header.stamp.nanosec)]
        assert (t.header.frame_id, t.child_frame_id) == ("odom", "camera_link")
        p, r = odometry.pose.pose.position, odometry.pose.pose.orientation
        assert (t.transform.translation.x, t.transform.translation.y,
                t.transform.translation.z) == (p.x, p.y, p.z)
        assert (t.transform.rotation.x, t.transform.rotation.w) == (r.x, r.w)


def test_bench_lift_command(lift_weights, tmp_path):
    import json
    import subprocess
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "dl-perception"), "bench", "lift",
         "--weights", lift_weights, "--frames", "3", "--width", "160", "--height", "120",
         "--threads", "1", "--device", "cpu", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "keypoints_per_s" in result.stdout and "ratio_to_sift" in result.stdout
    rows = {row["path"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"OpenCV SIFT (baseline)", "LIFT model (detect+orient+describe)",
                         "LIFT detector only", "lift_node (single-threaded executor)"}
    assert all(row["fps"] > 0 and row["keypoints_per_s"] > 0 for row in rows.values())
    assert rows["OpenCV SIFT (baseline)"]["ratio_to_sift"] == 1.0
