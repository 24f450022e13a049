"""`dl-perception process` runs all five networks over a bag through their frame processors, and
writes for each network the messages its node publishes for the same frames, byte for byte:
real TUM frames, the shipped weights, the side inputs (camera_info for depth, odometry for online
NetVLAD) read from the bag in log-time order. The nodes run in-process and their outputs are
received serialized (test_processors.run_both); rclpy leaves stale CDR padding after strings,
so the node's bytes are compared with their padding zeroed (`canonical`), every field bit for bit.
"""
import glob
import importlib
import os

import cv2
import numpy as np
import pytest
import yaml

from dl_perception import registry
from dl_perception.core import rosmsg
from dl_perception.bags import BagReader, BagWriter
from dl_perception.bags.process import process_bag
from dl_perception.core.paths import resolve_weights
from dl_perception.processors import processor_class
from dl_perception.processors.dronet import STEERING_TOPIC

pytest.importorskip("rclpy")
from test_processors import canonical, run_both  # noqa: E402
from torch_threads import one_torch_thread  # noqa: E402,F401

CAMERA, INFO, ODOM = "/camera/image_raw", "/camera/camera_info", "/odom"
# each network's node parameters besides device and weights: points, a small LIFT, online
# NetVLAD whose third frame revisits the first
PARAMETERS = {
    "dronet_node": {},
    "lift_node": {"max_keypoints": 60, "scales": [1.0, 2.0], "publish_overlay": True},
    "netvlad_node": {"online": True, "ignore_recent": 5.0, "keyframe_period": 0.5,
                     "keyframe_distance": 0.0, "revisit_min_score": -1.0},
    "posenet_node": {},
    "depth_node": {"publish_points": True, "points_stride": 4},
}


def odometry(stamp_ns: int):
    message = rosmsg.message_class
    return message("nav_msgs/msg/Odometry")(
        header=rosmsg.header(stamp_ns, "odom"), child_frame_id="base_link",
        pose=message("geometry_msgs/msg/PoseWithCovariance")(
            pose=rosmsg.pose_with_covariance(rosmsg.header(0, ""), (1.0, 2.0, 0.0),
                                             (0, 0, 0, 1.0), np.zeros((6, 6))).pose.pose,
            covariance=np.zeros(36)),
        twist=message("geometry_msgs/msg/TwistWithCovariance")(
            twist=message("geometry_msgs/msg/Twist")(
                linear=message("geometry_msgs/msg/Vector3")(0.0, 0.0, 0.0),
                angular=message("geometry_msgs/msg/Vector3")(0.0, 0.0, 0.0)),
            covariance=np.zeros(36)))


@pytest.fixture(scope="module")
def inputs(shared_data):
    """Side inputs then three real TUM office frames at 320x240 (bgr8), the third a revisit of
    the first 40 s later; calibration scaled to the frames."""
    paths = sorted(glob.glob(os.path.join(shared_data, "tum_fr3_long_office", "rgb", "*.png")))
    pixels = [cv2.resize(cv2.imread(p, cv2.IMREAD_COLOR), (320, 240), interpolation=cv2.INTER_AREA)
              for p in paths[:4:2]]
    stamps = [int(s * 1e9) for s in (100.0, 101.0, 140.0)]
    frames = [rosmsg.image(p, "bgr8", rosmsg.header(s, "camera_optical_frame"))
              for p, s in zip(pixels + pixels[:1], stamps)]
    info = rosmsg.camera_info({"width": 320, "height": 240, "distortion_model": "plumb_bob",
                               "d": [0.0] * 5, "k": [267.7, 0, 160.05, 0, 269.6, 123.8, 0, 0, 1],
                               "r": [1.0, 0, 0, 0, 1, 0, 0, 0, 1],
                               "p": [267.7, 0, 160.05, 0, 0, 269.6, 123.8, 0, 0, 0, 1, 0]},
                              rosmsg.header(int(99e9), "camera_optical_frame"))
    return [(INFO, info), (ODOM, rosmsg.deserialize(rosmsg.serialize(odometry(int(99.5e9))),
                                                     "nav_msgs/msg/Odometry"))], frames


@pytest.fixture(scope="module")
def processed(inputs, tmp_path_factory):
    """The bag of the inputs, processed by all five networks: topic -> raw messages."""
    folder = tmp_path_factory.mktemp("process_networks")
    side, frames = inputs
    bag = str(folder / "in")
    with BagWriter(bag) as writer:
        for topic, message in side:
            writer.add_connection(topic, message.__msgtype__)
            writer.write(topic, rosmsg.stamp_ns(message.header.stamp), message)
        writer.add_connection(CAMERA, rosmsg.IMAGE)
        for frame in frames:
            writer.write(CAMERA, rosmsg.stamp_ns(frame.header.stamp), frame)
    config = folder / "perception.yaml"
    config.write_text(yaml.safe_dump({node: {"ros__parameters": {
        "device": "cpu", "weights": "", **params}} for node, params in PARAMETERS.items()}))
    notes = []
    result = process_bag(bag, str(config), str(folder / "out"), show_progress=False,
                         on_note=notes.append)
    with BagReader(str(folder / "out")) as reader:
        outputs = {topic: [bytes(m.data) for m in reader.messages([topic])]
                   for topic in reader.topics}
    return result, notes, outputs


def test_process_runs_every_network_without_notes(processed):
    result, notes, outputs = processed
    assert notes == [] and result.fault is None
    assert sorted(run.node for run in result.runs) == sorted(PARAMETERS)
    assert all(run.stats.processed == 3 for run in result.runs)
    assert {STEERING_TOPIC, "/dl_perception/features",
            "/dl_perception/place/matches", "/dl_perception/place/loop_closures",
            "/dl_perception/posenet/pose", "/tf", "/dl_perception/depth/image",
            "/dl_perception/depth/camera_info", "/dl_perception/depth/points"} <= set(outputs)


@pytest.mark.parametrize("network", registry.NETWORKS, ids=lambda n: n.node)
def test_process_writes_what_the_node_publishes(ros, inputs, processed, network):
    side, frames = inputs
    _, _, written = processed
    node_class = getattr(importlib.import_module(network.node_module), network.node_class)
    reads = {"depth_node": INFO, "netvlad_node": ODOM}.get(network.node)
    outputs, _, processor = run_both(
        node_class, processor_class(network.node), resolve_weights(network.name, ""), frames,
        side=[(t, m) for t, m in side if t == reads], **PARAMETERS[network.node])
    assert set(outputs) == set(processor.outputs)
    for topic, (published, _) in outputs.items():
        assert published, f"{network.node} published nothing on {topic}"
        assert [canonical(bytes(m), processor.outputs[topic]) for m in published] == \
            written[topic], topic


def test_a_side_input_the_bag_lacks_is_a_note(inputs, tmp_path):
    _, frames = inputs
    bag = str(tmp_path / "frames_only")
    with BagWriter(bag) as writer:
        writer.add_connection(CAMERA, rosmsg.IMAGE)
        for frame in frames:
            writer.write(CAMERA, rosmsg.stamp_ns(frame.header.stamp), frame)
    config = tmp_path / "depth.yaml"
    config.write_text(yaml.safe_dump({"depth_node": {"ros__parameters": {
        "device": "cpu", **PARAMETERS["depth_node"]}}}))
    notes = []
    result = process_bag(bag, str(config), str(tmp_path / "out"), show_progress=False,
                         on_note=notes.append)
    assert notes == [f"depth_node: side input {INFO} (sensor_msgs/msg/CameraInfo) is not in "
                     f"{bag}; processed without it"]
    assert result.outputs["/dl_perception/depth/image"] == 3
    assert result.outputs["/dl_perception/depth/points"] == 0  # no intrinsics, no points
