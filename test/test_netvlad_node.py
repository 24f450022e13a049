"""netvlad_node through ROS: matches and pose from a place database, no-match output for an empty
database, refusal of another model's or a corrupt database at start-up, online revisits."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import spin_until
from place_fixtures import write_route

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2  # noqa: E402

from dl_perception import models  # noqa: E402
from dl_perception.datasets.places import read_place_folder  # noqa: E402
from dl_perception.place.build import build_database  # noqa: E402
from dl_perception.place.sources import FolderSource  # noqa: E402
from dl_perception.core.pointcloud import unpack  # noqa: E402
from dl_perception.ros.messages import header, image_msg, seconds_to_stamp  # noqa: E402
from dl_perception.ros.nodes import NetVLADNode  # noqa: E402

torch.set_num_threads(2)
FIELDS = ["rank", "db_index", "score", "x", "y", "z", "qx", "qy", "qz", "qw"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("netvlad_node")
    torch.manual_seed(0)
    model = models.create("netvlad", resize_to=[64, 48], pca_dim=0)
    weights = str(root / "netvlad.safetensors")
    model.save(weights)
    route = write_route(root / "route", 4, "day", frames=12, spacing=3.0)
    database = build_database(models.load(weights), FolderSource(route), torch.device("cpu"),
                              frame_id="world")
    db_path = str(root / "places.safetensors")
    database.save(db_path)
    return {"weights": weights, "route": route, "database": db_path, "root": root}


class Probe:
    def __init__(self):
        self.node = rclpy.create_node("place_probe")
        self.images = self.node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        self.odometry = self.node.create_publisher(Odometry, "/odom", 50)
        self.matches, self.poses, self.loops = [], [], []
        self.node.create_subscription(PointCloud2, "/dl_perception/place/matches",
                                      self.matches.append, 50)
        self.node.create_subscription(PoseWithCovarianceStamped, "/dl_perception/place/pose",
                                      self.poses.append, 50)
        self.node.create_subscription(PointCloud2, "/dl_perception/place/loop_closures",
                                      self.loops.append, 50)

    def send(self, executor, rgb, stamp=None, position=None):
        stamp = seconds_to_stamp(stamp) if stamp is not None else self.node.get_clock().now().to_msg()
        if position is not None:
            odom = Odometry(header=header(stamp, "odom"))
            odom.pose.pose.position.x, odom.pose.pose.position.y = position
            odom.pose.pose.orientation.w = 1.0
            self.odometry.publish(odom)
            spin_until(executor, lambda: False, timeout=0.05)
        count = len(self.matches)
        for _ in range(5):
            self.images.publish(image_msg(rgb, "rgb8", header(stamp, "camera")))
            if spin_until(executor, lambda: len(self.matches) > count, timeout=2.0):
                return self.matches[-1]
        raise AssertionError("no matches message")


def _node(weights, **params):
    overrides = [Parameter("weights", value=weights), Parameter("device", value="cpu"),
                 Parameter("max_frame_age", value=0.0)]
    return NetVLADNode(parameter_overrides=overrides + [Parameter(k, value=v)
                                                        for k, v in params.items()])


def _executor(*nodes):
    executor = SingleThreadedExecutor()
    for node in nodes:
        executor.add_node(node)
    return executor


def test_matches_and_pose_from_a_database(ros, setup):
    node, probe = _node(setup["weights"], database=setup["database"], top_k=3), Probe()
    executor = _executor(node, probe.node)
    spin_until(executor, lambda: probe.images.get_subscription_count() > 0)
    places = read_place_folder(setup["route"])
    for index in (2, 7):
        msg = probe.send(executor, places.load_rgb(index))
        assert msg.header.frame_id == "world" and msg.width == 3
        assert [f.name for f in msg.fields] == FIELDS
        points = unpack(msg)
        assert list(points["rank"]) == [0, 1, 2]
        assert points["db_index"][0] == index and points["score"][0] == pytest.approx(1.0, abs=1e-4)
        assert (np.diff(points["score"]) <= 0).all()
        np.testing.assert_allclose(points["x"], places.positions[points["db_index"], 0], atol=1e-5)
        np.testing.assert_allclose(points["qw"], places.quaternions[points["db_index"], 3], atol=1e-6)
        assert spin_until(executor, lambda: probe.poses and
                          probe.poses[-1].header.stamp == msg.header.stamp, timeout=2.0)
        pose = probe.poses[-1]
        assert pose.header.frame_id == "world"
        assert pose.pose.pose.position.x == pytest.approx(places.positions[index, 0], abs=1e-5)
        assert pose.pose.covariance[0] == pytest.approx(25.0)
    assert node.stats.processed == 2 and node.processor.no_match_frames == 0


def test_empty_database_gives_no_match_output(ros, setup):
    node, probe = _node(setup["weights"]), Probe()
    executor = _executor(node, probe.node)
    spin_until(executor, lambda: probe.images.get_subscription_count() > 0)
    rgb = np.full((48, 64, 3), 90, np.uint8)
    for _ in range(2):
        msg = probe.send(executor, rgb)
        assert msg.width == 0 and [f.name for f in msg.fields] == FIELDS
    spin_until(executor, lambda: False, timeout=0.3)
    assert probe.poses == [] and node.processor.no_match_frames == 2
    assert node.stats.processed == 2 and sum(node.stats.drops.values()) == 0


def test_online_mode_reports_revisits_after_ignore_recent(ros, setup):
    node = _node(setup["weights"], online=True, ignore_recent=5.0, keyframe_distance=2.0,
                 keyframe_period=0.0, revisit_min_score=0.99)
    probe = Probe()
    executor = _executor(node, probe.node)
    spin_until(executor, lambda: probe.images.get_subscription_count() > 0
               and probe.odometry.get_subscription_count() > 0)
    places = read_place_folder(setup["route"])
    for step, index in enumerate([0, 1, 2, 3, 4]):  # 3 m apart: each frame a keyframe
        probe.send(executor, places.load_rgb(index), stamp=100.0 + step, position=(3.0 * index, 0.0))
    assert node.processor.online.keyframes == 5 and probe.loops == []
    msg = probe.send(executor, places.load_rgb(1), stamp=130.0, position=(3.1, 0.2))
    assert spin_until(executor, lambda: len(probe.loops) == 1, timeout=2.0)
    loop = unpack(probe.loops[0])
    assert loop["db_index"][0] == 1 and loop["db_stamp"][0] == pytest.approx(101.0)
    assert unpack(msg)["db_index"][0] == 1
    assert probe.loops[0].header.frame_id == "odom"  # the odometry frame
    np.testing.assert_allclose(node.processor.database.positions[1], [3.0, 0.0, 0.0])


@pytest.mark.parametrize("problem", ["other_model", "corrupt", "missing"])
def test_unusable_database_stops_the_node_with_a_clear_error(setup, problem):
    path = str(setup["root"] / f"{problem}.safetensors")
    if problem == "other_model":
        other = models.create("netvlad", resize_to=[64, 48], pca_dim=0)
        other_weights = str(setup["root"] / "other_weights.safetensors")
        other.save(other_weights)
        database = build_database(other, FolderSource(setup["route"]), torch.device("cpu"))
        database.save(path)
        expected = "other netvlad weights"
    elif problem == "corrupt":
        data = open(setup["database"], "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
        expected = "corrupt or truncated"
    else:
        expected = "place database not found"
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "netvlad_node"), "--ros-args",
         "-p", f"weights:={setup['weights']}", "-p", f"database:={path}"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
