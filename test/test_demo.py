"""`dl-perception demo` (what `make demo` runs) ends on its own and leaves its results."""
import json
import os
import subprocess
import sys

import pytest
from conftest import spin_until

CLI = os.path.join(os.path.dirname(sys.executable), "dl-perception")


def test_demo_flies_the_simulator_and_writes_results(tmp_path):
    """With the shipped simulator-trained DroNet weights (shipped:sim), the demo's default."""
    from dl_perception.core.paths import shipped_weights
    out = tmp_path / "demo"
    result = subprocess.run([CLI, "demo", "--out", str(out), "--duration", "12"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "/cmd_vel messages" in result.stdout and "flight" in result.stdout
    summary = json.load(open(out / "summary.json"))
    assert summary["weights"] == shipped_weights("dronet", "sim")
    assert summary["camera_frames"] >= 5  # 10 Hz of simulated time; a loaded CPU runs it slower
    assert summary["dronet"]["frames_processed"] >= 5
    assert summary["cmd_vel_messages"] > 0
    assert summary["flight"]["distance_m"] > 0.2  # DroNet's commands moved the drone
    assert os.path.getsize(out / "flight_path.png") > 10_000
    assert 0.0 <= summary["collision_probability"]["min"] <= summary["collision_probability"]["max"] <= 1.0
    assert os.path.getsize(out / "dronet_demo.avi") > 10_000
    assert len([f for f in os.listdir(out) if f.startswith("frame_")]) == 4
    # an MCAP Foxglove opens: ROS 2 schemas with every message definition, the demo's topics
    from mcap.reader import make_reader
    with open(out / "demo_bag" / "demo_bag.mcap", "rb") as handle:
        summary_section = make_reader(handle).get_summary()
    channels = {c.topic: summary_section.schemas[c.schema_id]
                for c in summary_section.channels.values()}
    assert {"/camera/image_raw/compressed", "/camera/depth/image_raw", "/camera/depth/points",
            "/cmd_vel", "/ground_truth/odometry", "/tf", "/tf_static"} <= set(channels)
    assert all(schema.encoding == "ros2msg" and schema.data for schema in channels.values())
    assert channels["/tf"].name == "tf2_msgs/msg/TFMessage"
    counts = summary_section.statistics.channel_message_counts
    assert all(counts[c.id] > 0 for c in summary_section.channels.values()
               if c.topic in ("/tf", "/tf_static", "/camera/image_raw/compressed", "/cmd_vel"))


def test_camera_node_publishes_a_folder_of_real_frames(ros, shared_data):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from dl_perception.core.imaging import image_to_numpy
    from dl_perception.ros.camera_node import CameraNode

    folder = os.path.join(shared_data, "tum_fr3_long_office", "rgb")
    camera = CameraNode(parameter_overrides=[Parameter("source", value=folder),
                                             Parameter("rate_hz", value=50.0),
                                             Parameter("loop", value=False)])
    probe = ros.create_node("camera_probe")
    images, infos = [], []
    probe.create_subscription(Image, "/camera/image_raw", images.append, qos_profile_sensor_data)
    probe.create_subscription(CameraInfo, "/camera/camera_info", infos.append, 50)
    executor = SingleThreadedExecutor()
    executor.add_node(camera)
    executor.add_node(probe)
    assert spin_until(executor, lambda: camera.frames_published >= 17, timeout=10)
    spin_until(executor, lambda: len(images) >= 15, timeout=2)
    assert camera.frames_published == 17  # not looping: stops at the end of the folder
    assert len(images) >= 15  # best effort may lose one or two
    pixels = image_to_numpy(images[0]).pixels
    assert pixels.shape == (480, 640, 3) and images[0].encoding == "rgb8"
    assert infos[0].width == 640 and infos[0].k[0] > 0


def test_camera_node_rejects_an_empty_folder(ros, tmp_path):
    from rclpy.parameter import Parameter

    from dl_perception.ros.camera_node import CameraNode
    with pytest.raises(ValueError, match="no images"):
        CameraNode(parameter_overrides=[Parameter("source", value=str(tmp_path))])
