"""`dl-perception record` through ROS, and parity of dronet_node with offline processing: the node
publishes byte for byte what `dl-perception process` writes for the same frames."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from conftest import spin_until

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from rosbags.interfaces import QosDurability, QosReliability  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float32, String  # noqa: E402

from dl_perception.core import rosmsg  # noqa: E402
from dl_perception.bags import BagReader, BagWriter  # noqa: E402
from dl_perception.bags.from_images import images_to_bag  # noqa: E402
from dl_perception.bags.process import process_bag  # noqa: E402
from dl_perception.processors.dronet import COLLISION_TOPIC, STEERING_TOPIC  # noqa: E402
from dl_perception.ros.nodes import DroNetNode  # noqa: E402
from dl_perception.ros.record import Recorder  # noqa: E402

BIN = os.path.dirname(sys.executable)
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def test_recorder_stores_the_bytes_on_the_wire(ros, tmp_path):
    talker = ros.create_node("talker")
    values = talker.create_publisher(Float32, "/rec/value", RELIABLE)
    latched = talker.create_publisher(String, "/rec/latched", QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL))
    images = talker.create_publisher(Image, "/rec/image", RELIABLE)
    latched.publish(String(data="map"))
    recorder_node = ros.create_node("recorder")
    logs = []
    path = tmp_path / "recorded"
    writer = BagWriter(path)
    recorder = Recorder(recorder_node, writer, ["/rec/value", "/rec/latched", "/rec/image",
                                                "/rec/never"], log=logs.append)
    executor = SingleThreadedExecutor()
    executor.add_node(talker)
    executor.add_node(recorder_node)
    assert spin_until(executor, lambda: len(recorder.recording) == 3, 15)
    assert spin_until(executor, lambda: values.get_subscription_count() and
                      images.get_subscription_count(), 10)
    sent = []
    for i in range(20):
        message = Float32(data=i * 0.5)
        values.publish(message)
        sent.append(serialize_message(message))
        executor.spin_once(timeout_sec=0.01)
    frame = Image(height=2, width=3, encoding="rgb8", step=9, data=bytes(range(18)))
    frame.header.stamp.sec = 42
    images.publish(frame)
    spin_until(executor, lambda: writer.counts["/rec/value"] == 20 and
               writer.counts["/rec/image"] == 1 and writer.counts["/rec/latched"] == 1, 10)
    writer.close()
    assert recorder.pending == {"/rec/never"}
    assert any("recording /rec/latched (std_msgs/msg/String)" in line for line in logs)
    with BagReader(path) as reader:
        assert [m.data for m in reader.messages(["/rec/value"])] == sent
        image = reader.deserialize(next(reader.messages(["/rec/image"])))
        assert image.header.stamp.sec == 42 and bytes(image.data) == bytes(range(18))
        assert reader.deserialize(next(reader.messages(["/rec/latched"]))).data == "map"
        (qos,) = reader.topics["/rec/latched"].qos  # the publisher's, for replay
        assert qos.durability == QosDurability.TRANSIENT_LOCAL
        assert qos.reliability == QosReliability.RELIABLE
        log_times = [m.log_time for m in reader.messages(["/rec/value"])]
    assert log_times == sorted(log_times) and abs(log_times[-1] / 1e9 - time.time()) < 60


def test_record_command_stops_cleanly_on_sigint(ros, tmp_path):
    out = tmp_path / "cli_bag"
    process = subprocess.Popen([os.path.join(BIN, "dl-perception"), "record", "/rec/cli",
                                "/rec/absent", "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    talker = ros.create_node("cli_talker")
    publisher = talker.create_publisher(Float32, "/rec/cli", RELIABLE)
    executor = SingleThreadedExecutor()
    executor.add_node(talker)
    try:
        assert spin_until(executor, lambda: publisher.get_subscription_count() > 0, 30)
        for i in range(10):
            publisher.publish(Float32(data=float(i)))
            spin_until(executor, lambda: False, 0.05)
        spin_until(executor, lambda: False, 1.0)
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "/rec/absent was never published" in stderr
    assert f"wrote {out} (mcap, 10 messages)" in stdout
    assert yaml.safe_load((out / "metadata.yaml").read_text())[
        "rosbag2_bagfile_information"]["message_count"] == 10
    with BagReader(out) as reader:
        assert [reader.deserialize(m).data for m in reader.messages()] == list(map(float,
                                                                                   range(10)))


def test_dronet_node_publishes_what_process_writes(ros, official_dronet, shared_data,
                                                   tmp_path):
    bag = str(tmp_path / "tum")
    images_to_bag(os.path.join(shared_data, "tum_fr3_long_office"), bag, tum_list="rgb.txt")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"dronet_node": {"ros__parameters": {
        "weights": official_dronet, "device": "cpu"}}}))
    process_bag(bag, str(config), str(tmp_path / "out"), show_progress=False)
    with BagReader(tmp_path / "out") as reader:
        offline = {t: [m.data for m in reader.messages([t])]
                   for t in (STEERING_TOPIC, COLLISION_TOPIC)}
    node = DroNetNode(parameter_overrides=[
        Parameter("weights", value=official_dronet), Parameter("device", value="cpu"),
        Parameter("max_frame_age", value=0.0), Parameter("qos.reliability", value="reliable"),
        Parameter("qos.depth", value=20)])
    probe = ros.create_node("parity_probe")
    camera = probe.create_publisher(Image, "/camera/image_raw", RELIABLE)
    online = {STEERING_TOPIC: [], COLLISION_TOPIC: []}
    for topic, received in online.items():
        probe.create_subscription(Float32, topic, received.append, RELIABLE, raw=True)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(probe)
    assert spin_until(executor, lambda: camera.get_subscription_count() > 0, 10)
    with BagReader(bag) as reader:
        for count, message in enumerate(reader.messages(["/camera/image_raw"]), 1):
            camera.publish(message.data)  # the bag's bytes, as replay sends them
            assert spin_until(executor, lambda: all(len(r) >= count for r in online.values()))
    node.destroy_node()
    assert online == offline and len(online[STEERING_TOPIC]) == 17
    values = [rosmsg.deserialize(d, rosmsg.FLOAT32).data for d in online[COLLISION_TOPIC]]
    assert all(0.0 <= v <= 1.0 for v in values) and np.std(values) > 0
