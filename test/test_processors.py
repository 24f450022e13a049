"""A network's node (ProcessorNode, generated from its processor) publishes byte for byte what
its core frame processor (dl_perception/processors/) makes on its own, on real frames: each
node runs in-process and its outputs are received serialized over ROS (parameters, side inputs
such as camera_info and odometry, overlay QoS and TF included); the processor gets the same
frames, header, side inputs and parameters."""
import glob
import os

import cv2
import numpy as np
import pytest
import torch
from conftest import spin_until

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

from dl_perception import models  # noqa: E402
from dl_perception.core import rosmsg  # noqa: E402
from dl_perception.core.imaging import decode  # noqa: E402
from dl_perception.place.database import PlaceDatabase, model_fingerprint  # noqa: E402
from dl_perception.processors.depth import DepthProcessor  # noqa: E402
from dl_perception.processors.lift import LIFTProcessor  # noqa: E402
from dl_perception.processors.netvlad import NetVLADProcessor  # noqa: E402
from dl_perception.processors.posenet import PoseNetProcessor  # noqa: E402
from dl_perception.ros.nodes import DepthNode  # noqa: E402
from dl_perception.ros.nodes import LIFTNode  # noqa: E402
from dl_perception.ros.messages import message_class  # noqa: E402
from dl_perception.ros.nodes import NetVLADNode  # noqa: E402
from dl_perception.ros.nodes import PoseNetNode  # noqa: E402
from torch_threads import one_torch_thread  # noqa: E402,F401

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
# receives from reliable and best-effort (overlay: sensor data) publishers alike
RECEIVING = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)


@pytest.fixture(scope="module")
def tum_frames(shared_data):
    """Three real 640x480 TUM office frames as rosmsg Images (bgr8, as a camera driver sends)."""
    paths = sorted(glob.glob(os.path.join(shared_data, "tum_fr3_long_office", "rgb", "*.png")))
    return [rosmsg.image(cv2.imread(p, cv2.IMREAD_COLOR), "bgr8",
                         rosmsg.header(1_700_000_000 * 10**9 + i * 10**8, "camera_optical_frame"))
            for i, p in enumerate(paths[:6:2])]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Untrained networks (the messages' bytes, not the networks' accuracy, are compared)."""
    root = tmp_path_factory.mktemp("processors")
    torch.manual_seed(0)
    paths = {}
    for name, overrides in (("depth", {}), ("lift", {}), ("netvlad", {"pca_dim": 0}),
                            ("posenet", {}), ("posenet_learned", {"learned_weighting": True})):
        paths[name] = str(root / f"{name}.safetensors")
        models.create(name.split("_")[0], **overrides).save(paths[name])
    return paths


def run_both(node_class, processor_class, weights, frames, side=(), **params):
    """Serialized messages per output topic: (what the node published, what the processor
    made) for the same frames; `side`: (topic, rosmsg message) given to both first."""
    overrides = [Parameter("weights", value=weights), Parameter("device", value="cpu"),
                 Parameter("max_frame_age", value=0.0)]
    node = node_class(parameter_overrides=overrides + [Parameter(k, value=v)
                                                       for k, v in params.items()])
    values = {p.name: node.params[p.name] for p in node.declared_params()}
    processor = processor_class(models.load(weights), torch.device("cpu"), values)
    probe = rclpy.create_node("processor_probe")
    received = {}
    for topic, msgtype in processor.outputs.items():
        try:
            received[topic] = []
            probe.create_subscription(message_class(msgtype), topic, received[topic].append,
                                      RECEIVING, raw=True)
        except ImportError:  # tf2_msgs is not installed here: the node publishes no TF either
            del received[topic]
    camera = probe.create_publisher(message_class(rosmsg.IMAGE), "/camera/image_raw", RELIABLE)
    side_publishers = {topic: probe.create_publisher(message_class(msg.__msgtype__), topic,
                                                     RELIABLE) for topic, msg in side}
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(probe)
    try:
        assert spin_until(executor, lambda: camera.get_subscription_count() > 0 and all(
            p.get_subscription_count() > 0 for p in side_publishers.values())
            and all(probe.count_publishers(t) > 0 for t in received))
        expected = {topic: [] for topic in received}
        for topic, message in side:
            side_publishers[topic].publish(rosmsg.serialize(message))
            spin_until(executor, lambda: False, timeout=0.3)
            processor.observe(topic, message)
        for frame in frames:
            for output in processor.process(decode(frame), frame.header):
                if output.topic in expected:
                    expected[output.topic].append(rosmsg.serialize(output.message))
            done = node.stats.processed + 1
            camera.publish(rosmsg.serialize(frame))
            assert spin_until(executor, lambda: node.stats.processed >= done, timeout=20.0)
        assert spin_until(executor, lambda: all(len(received[t]) >= len(expected[t])
                                                for t in expected), timeout=5.0)
        return ({topic: (received[topic], expected[topic]) for topic in expected}, node,
                processor)
    finally:
        executor.shutdown()
        node.destroy_node()
        probe.destroy_node()


def canonical(raw: bytes, msgtype: str) -> bytes:
    """The bytes with zeroed CDR padding: rclpy leaves the padding after a string as it found
    it in its buffer (bytes of an earlier message), so raw rclpy bytes differ in padding alone;
    every field compares bit for bit. (A ProcessorNode publishes the core's bytes as they are.)"""
    return rosmsg.serialize(rosmsg.deserialize(raw, msgtype))


def assert_identical(outputs, must_have, types):
    for topic, (published, made) in outputs.items():
        assert [len(m) for m in published] == [len(m) for m in made], topic  # same layout
        assert [canonical(bytes(m), types[topic]) for m in published] == made, topic
    for topic in must_have:
        assert outputs[topic][1], f"nothing on {topic}: the test does not exercise it"


def test_depth_processor_publishes_what_depth_node_publishes(ros, weights, tum_frames):
    header = rosmsg.header(0, "camera_optical_frame")
    info = rosmsg.camera_info({"width": 640, "height": 480, "distortion_model": "plumb_bob",
                               "d": [0.0] * 5, "k": [535.4, 0, 320.1, 0, 539.2, 247.6, 0, 0, 1],
                               "r": [1.0, 0, 0, 0, 1, 0, 0, 0, 1],
                               "p": [535.4, 0, 320.1, 0, 0, 539.2, 247.6, 0, 0, 0, 1, 0]}, header)
    outputs, node, processor = run_both(
        DepthNode, DepthProcessor, weights["depth"], tum_frames[:1],
        side=[("/camera/camera_info", info)], publish_points=True, points_stride=4)
    assert_identical(outputs, ["/dl_perception/depth/image", "/dl_perception/depth/points"], processor.outputs)
    assert processor.diagnostic_values()["points_published"] == str(node.processor.counters["points_published"])
    # without (fitting) intrinsics: camera_info without K, no points, the mismatch counted
    wrong = rosmsg.camera_info({**{"width": 320, "height": 240, "distortion_model": "plumb_bob",
                                   "d": [], "r": [1.0, 0, 0, 0, 1, 0, 0, 0, 1]},
                                "k": [1.0] * 9, "p": [1.0] * 12}, header)
    outputs, node, processor = run_both(DepthNode, DepthProcessor, weights["depth"],
                                        tum_frames[:1], side=[("/camera/camera_info", wrong)],
                                        publish_points=True)
    assert_identical(outputs, ["/dl_perception/depth/camera_info"], processor.outputs)
    assert processor.counters == node.processor.counters and processor.counters["camera_info_mismatch"] == 1


def test_lift_processor_publishes_what_lift_node_publishes(ros, weights, shared_data):
    path = sorted(glob.glob(os.path.join(shared_data, "udacity_hmb3", "*.jpg")))[0]
    grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE)[60:204, 60:252]  # 192x144 of a real frame
    frames = [rosmsg.image(np.ascontiguousarray(grey), "mono8", rosmsg.header(10**9, "camera"))]
    black = rosmsg.image(np.zeros((120, 160, 3), np.uint8), "rgb8", rosmsg.header(5 * 10**9, "c"))
    outputs, node, processor = run_both(LIFTNode, LIFTProcessor, weights["lift"],
                                        frames + [black], publish_overlay=True,
                                        max_keypoints=100, nms_radius=4, scales=[1.0, 2.0])
    assert_identical(outputs, ["/dl_perception/features", "/dl_perception/features/overlay"], processor.outputs)
    assert processor.frames_without_keypoints == node.processor.frames_without_keypoints == 1


def test_netvlad_processor_publishes_what_netvlad_node_publishes(ros, weights, tum_frames,
                                                                 tmp_path):
    model = models.load(weights["netvlad"])
    descriptors = torch.cat([model(model.preprocess(decode(f)))["descriptor"].detach()
                             for f in tum_frames]).numpy()
    quaternions = np.array([[0, 0, 0, 1.0], [0, 0, 0.6, 0.8], [np.nan] * 4])
    database = PlaceDatabase(dim=model.descriptor_dim, model=model_fingerprint(model),
                             frame_id="world")
    database.add(descriptors, positions=np.arange(9.0).reshape(3, 3), quaternions=quaternions)
    path = str(tmp_path / "places.safetensors")
    database.save(path)
    outputs, _, processor = run_both(NetVLADNode, NetVLADProcessor, weights["netvlad"], tum_frames,
                             database=path, top_k=2, position_sigma=2.0)
    assert_identical(outputs, ["/dl_perception/place/matches", "/dl_perception/place/pose"], processor.outputs)


def test_netvlad_processor_online_keyframes_and_revisits(ros, weights, tum_frames):
    frames = [rosmsg.image(decode(f).pixels, "bgr8", rosmsg.header(int((100 + s) * 1e9), "cam"))
              for s, f in zip((0.0, 1.0, 40.0), tum_frames[:2] + tum_frames[:1])]
    odom_class = rosmsg.message_class("nav_msgs/msg/Odometry")
    odom = rosmsg.deserialize(rosmsg.serialize(odom_class(
        header=rosmsg.header(int(99.5e9), "odom"), child_frame_id="base_link",
        pose=rosmsg.message_class("geometry_msgs/msg/PoseWithCovariance")(
            pose=rosmsg.pose_with_covariance(rosmsg.header(0, ""), (1.0, 2.0, 0.0),
                                             (0, 0, 0, 1.0), np.zeros((6, 6))).pose.pose,
            covariance=np.zeros(36)),
        twist=rosmsg.message_class("geometry_msgs/msg/TwistWithCovariance")(
            twist=rosmsg.message_class("geometry_msgs/msg/Twist")(
                linear=rosmsg.message_class("geometry_msgs/msg/Vector3")(0.0, 0.0, 0.0),
                angular=rosmsg.message_class("geometry_msgs/msg/Vector3")(0.0, 0.0, 0.0)),
            covariance=np.zeros(36)))), "nav_msgs/msg/Odometry")
    outputs, node, processor = run_both(
        NetVLADNode, NetVLADProcessor, weights["netvlad"], frames, side=[("/odom", odom)],
        online=True, ignore_recent=5.0, keyframe_period=0.5, keyframe_distance=0.0,
        revisit_min_score=-1.0)
    assert_identical(outputs, ["/dl_perception/place/matches", "/dl_perception/place/loop_closures"], processor.outputs)
    assert processor.online.keyframes == node.processor.online.keyframes >= 2
    assert processor.database.frame_id == node.processor.database.frame_id == "odom"


@pytest.mark.parametrize("weights_name,params", [("posenet", {}),
                                                 ("posenet_learned", {"frame_id": "map"})])
def test_posenet_processor_publishes_what_posenet_node_publishes(ros, weights, tum_frames,
                                                                 weights_name, params):
    outputs, node, processor = run_both(PoseNetNode, PoseNetProcessor, weights[weights_name],
                                        tum_frames[:1], **params)
    assert_identical(outputs, ["/dl_perception/posenet/pose"], processor.outputs)
    # the TF the processor adds carries the published pose (the node sends it where tf2 exists)
    frame = tum_frames[0]
    pose, tf = processor.process(decode(frame), frame.header)
    transform = tf.message.transforms[0]
    assert tf.topic == "/tf" and transform.child_frame_id == "posenet_camera"
    assert transform.header == pose.message.header
    assert transform.transform.translation.x == pose.message.pose.pose.position.x
    assert transform.transform.rotation == pose.message.pose.pose.orientation
