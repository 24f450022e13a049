"""depth_node through ROS: the 32FC1 depth image and its camera_info stamped with the input
header, the back-projected point cloud, camera_info that does not fit the images, images of any
size, bad frames."""
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import spin_until

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402

from dl_perception import models  # noqa: E402
from dl_perception.core.imaging import DecodedImage, image_to_numpy  # noqa: E402
from dl_perception.core.pointcloud import unpack  # noqa: E402
from dl_perception.ros.nodes import DepthNode  # noqa: E402
from dl_perception.ros.messages import camera_info_msg, header, image_msg  # noqa: E402
from dl_perception.sim.synthetic import SyntheticCorridor  # noqa: E402


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """An untrained network: these tests check the node's behaviour, not the depth's accuracy."""
    import torch
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("depth") / "depth.safetensors")
    models.create("depth", "cpu").save(path)
    return path


class Probe:
    def __init__(self):
        self.node = rclpy.create_node("depth_probe")
        self.image_pub = self.node.create_publisher(Image, "/camera/image_raw",
                                                    qos_profile_sensor_data)
        self.info_pub = self.node.create_publisher(CameraInfo, "/camera/camera_info", 10)
        self.depth, self.info, self.points, self.diagnostics = [], [], [], []
        self.node.create_subscription(Image, "/dl_perception/depth/image", self.depth.append, 10)
        self.node.create_subscription(CameraInfo, "/dl_perception/depth/camera_info",
                                      self.info.append, 10)
        self.node.create_subscription(PointCloud2, "/dl_perception/depth/points",
                                      self.points.append, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)

    def header(self):
        return header(self.node.get_clock().now().to_msg(), "camera_optical_frame")


def _setup(weights, **params):
    overrides = [Parameter("weights", value=weights), Parameter("device", value="cpu"),
                 Parameter("max_frame_age", value=0.0)]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    node, probe = DepthNode(parameter_overrides=overrides), Probe()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(probe.node)
    spin_until(executor, lambda: probe.image_pub.get_subscription_count() > 0
               and probe.info_pub.get_subscription_count() > 0)
    return node, probe, executor


def _give_camera_info(executor, node, probe, width, height, f=160.0):
    info = camera_info_msg(width, height, f, f, width / 2, height / 2, probe.header())
    assert spin_until(executor, lambda: probe.info_pub.publish(info) or (
        node.processor.camera_info is not None and node.processor.camera_info.width == width), timeout=5.0)
    return info


def _send(executor, probe, msg, expected, retries=5):
    for _ in range(retries):
        probe.image_pub.publish(msg)
        if spin_until(executor, lambda: len(probe.depth) >= expected and
                      len(probe.info) >= expected, timeout=3.0):
            return True
    return False


def test_depth_image_camera_info_and_points(ros, weights):
    node, probe, executor = _setup(weights, publish_points=True, points_stride=2)
    info = _give_camera_info(executor, node, probe, 320, 240)
    rgb = SyntheticCorridor(320, 240).render(1.0)
    msg = image_msg(rgb, "rgb8", probe.header())
    assert _send(executor, probe, msg, 1)
    assert spin_until(executor, lambda: len(probe.points) >= 1, timeout=3.0)
    depth_msg, info_msg, cloud = probe.depth[0], probe.info[0], probe.points[0]
    for out in (depth_msg, info_msg, cloud):
        assert out.header.stamp == msg.header.stamp
        assert out.header.frame_id == "camera_optical_frame"
    assert depth_msg.encoding == "32FC1" and (depth_msg.width, depth_msg.height) == (320, 240)
    depth = image_to_numpy(depth_msg).pixels
    expected = node.model.predict_image(DecodedImage(rgb, "rgb8"))
    assert np.isfinite(depth).all() and (depth > 0).all()
    assert np.allclose(depth, expected, rtol=1e-5)
    assert (info_msg.width, info_msg.height) == (320, 240)
    assert list(info_msg.k) == list(info.k) and list(info_msg.p) == list(info.p)
    # x y z float32 in the optical frame, every 2nd pixel, z = the depth image
    points = unpack(cloud)
    assert points.dtype.names == ("x", "y", "z") and points.dtype["x"] == np.dtype("<f4")
    assert len(points) == 160 * 120
    z = depth[::2, ::2].reshape(-1)
    u, v = np.meshgrid(np.arange(0, 320, 2), np.arange(0, 240, 2))
    assert np.allclose(points["z"], z, rtol=1e-6)
    assert np.allclose(points["x"], (u.reshape(-1) - 160.0) / 160.0 * z, rtol=1e-5, atol=1e-5)
    assert np.allclose(points["y"], (v.reshape(-1) - 120.0) / 160.0 * z, rtol=1e-5, atol=1e-5)
    depth = node.processor
    assert depth.counters["points_published"] == 1 and depth.camera_info_status == "ok"


def test_camera_info_of_another_size_is_reported_not_used(ros, weights):
    node, probe, executor = _setup(weights, publish_points=True, diagnostics_period=0.2)
    _give_camera_info(executor, node, probe, 640, 480)
    assert _send(executor, probe, image_msg(np.full((240, 320, 3), 90, np.uint8), "rgb8",
                                            probe.header()), 1)
    assert node.processor.counters["camera_info_mismatch"] >= 1
    info = probe.info[-1]
    assert (info.width, info.height) == (320, 240) and not any(info.k)  # uncalibrated
    spin_until(executor, lambda: False, timeout=0.3)
    assert probe.points == []

    def reported():
        for msg in probe.diagnostics:
            for status in msg.status:
                values = {kv.key: kv.value for kv in status.values}
                if "depth_node" in status.name and values.get("camera_info", "").startswith(
                        "mismatch: camera_info 640x480, images 320x240"):
                    return int(values["camera_info_mismatch"]) >= 1
        return False
    assert spin_until(executor, reported, timeout=5.0)


def test_without_camera_info_depth_is_still_published(ros, weights):
    node, probe, executor = _setup(weights, publish_points=True)
    assert _send(executor, probe, image_msg(np.full((240, 320, 3), 90, np.uint8), "rgb8",
                                            probe.header()), 1)
    depth = node.processor
    assert depth.camera_info_status == "missing" and depth.counters["frames_without_intrinsics"] >= 1
    assert not any(probe.info[-1].k) and probe.points == []


def test_images_of_any_size_and_aspect(ros, weights):
    node, probe, executor = _setup(weights)
    frames = [np.full((100, 200), 120, np.uint8), np.full((480, 640, 3), 60, np.uint8),
              np.full((17, 13, 3), 200, np.uint8)]
    for index, (pixels, encoding) in enumerate(zip(frames, ("mono8", "bgr8", "rgb8"))):
        assert _send(executor, probe, image_msg(pixels, encoding, probe.header()), index + 1)
        out = probe.depth[index]
        assert (out.width, out.height) == (pixels.shape[1], pixels.shape[0])
    wide = image_to_numpy(probe.depth[0]).pixels
    # a 2:1 frame in a 4:3 network: the centre 2/3 of the columns is seen, the sides are NaN
    seen_columns = np.isfinite(wide).all(axis=0)
    assert seen_columns[40:160].all() and not seen_columns[:30].any() and not seen_columns[170:].any()
    assert np.isfinite(image_to_numpy(probe.depth[1]).pixels).all()


def test_bad_frames_are_dropped_and_counted(ros, weights):
    node, probe, executor = _setup(weights)
    bad = {
        "non_finite": image_msg(np.full((240, 320), np.nan, np.float32), "32FC1", probe.header()),
        "empty": Image(header=probe.header(), height=0, width=0, encoding="rgb8", step=0),
        "encoding": Image(header=probe.header(), height=2, width=2, encoding="yuv422", step=4,
                          data=b"\0" * 8),
    }
    for count, (reason, msg) in enumerate(bad.items(), start=1):
        probe.image_pub.publish(msg)
        assert spin_until(executor, lambda: node.stats.drops[reason] >= 1, timeout=5.0), reason
        assert _send(executor, probe, image_msg(np.zeros((240, 320, 3), np.uint8), "rgb8",
                                                probe.header()), count)
    assert node.stats.processed == len(bad)


def test_missing_weights_exit_nonzero():
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "depth_node"), "--ros-args",
         "-p", "weights:=/nonexistent/depth.safetensors"], capture_output=True, text=True,
        timeout=60)
    assert result.returncode == 1 and "weights file not found" in result.stderr
