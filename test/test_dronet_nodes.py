"""dronet_node and dronet_control_node through ROS: parity with the official model on real
frames, bad input, diagnostics, the control node's service and safety behaviour."""
import csv
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import spin_until

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402

from dl_perception.ros.dronet_control_node import DroNetControlNode  # noqa: E402
from dl_perception.ros.nodes import DroNetNode  # noqa: E402
from dl_perception.ros.messages import compressed_msg, header, image_msg  # noqa: E402


class Probe:
    """A test node publishing frames and collecting DroNet outputs."""

    def __init__(self, transport="raw"):
        self.node = rclpy.create_node("probe")
        msg_type, topic = ((CompressedImage, "/camera/image_raw/compressed") if transport == "compressed"
                           else (Image, "/camera/image_raw"))
        self.pub = self.node.create_publisher(msg_type, topic, qos_profile_sensor_data)
        self.steering, self.collision, self.diagnostics = [], [], []
        self.node.create_subscription(Float32, "/dl_perception/dronet/steering_angle",
                                      lambda m: self.steering.append(m.data), 100)
        self.node.create_subscription(Float32, "/dl_perception/dronet/collision_probability",
                                      lambda m: self.collision.append(m.data), 100)
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      lambda m: self.diagnostics.append(m), 100)

    def stamp(self):
        return header(self.node.get_clock().now().to_msg(), "camera_optical_frame")


def _executor(*nodes):
    executor = SingleThreadedExecutor()
    for node in nodes:
        executor.add_node(node)
    return executor


def _dronet(weights, **params):
    overrides = [Parameter("weights", value=weights), Parameter("device", value="cpu")]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return DroNetNode(parameter_overrides=overrides)


def _send_and_wait(executor, probe, msg, expected, retries=5):
    for _ in range(retries):
        probe.pub.publish(msg)
        if spin_until(executor, lambda: len(probe.collision) >= expected and
                      len(probe.steering) >= expected, timeout=2.0):
            return True
    return False


def test_node_reproduces_official_outputs_on_real_frames(ros, official_dronet, shared_data):
    folder = os.path.join(shared_data, "dronet_collision")
    with open(os.path.join(folder, "reference_outputs.keras.csv")) as f:
        rows = list(csv.DictReader(f))
    node, probe = _dronet(official_dronet), Probe()
    executor = _executor(node, probe.node)
    spin_until(executor, lambda: probe.pub.get_subscription_count() > 0)
    for index, row in enumerate(rows):
        gray = cv2.imread(os.path.join(folder, row["sequence"], row["frame"]), cv2.IMREAD_GRAYSCALE)
        assert _send_and_wait(executor, probe, image_msg(gray, "mono8", probe.stamp()), index + 1)
    steering = np.array(probe.steering[:52])
    collision = np.array(probe.collision[:52])
    ref_s = np.array([float(r["steering"]) for r in rows])
    ref_c = np.array([float(r["collision"]) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    assert np.abs(steering - ref_s).max() < 1e-4
    assert np.abs(collision - ref_c).max() < 1e-4
    accuracy = float(np.mean((collision >= 0.5) == (labels == 1)))
    print(f"\nofficial DroNet through dronet_node: max |dsteer| {np.abs(steering - ref_s).max():.2e}, "
          f"max |dcoll| {np.abs(collision - ref_c).max():.2e}, collision accuracy {accuracy:.3f} "
          f"on {len(rows)} frames ({labels.sum()} collisions)")
    assert accuracy == float(np.mean((ref_c >= 0.5) == (labels == 1)))


def test_bad_frames_are_dropped_counted_and_the_node_survives(ros, official_dronet):
    node = _dronet(official_dronet, max_frame_age=0.0, diagnostics_period=0.2)
    probe = Probe()
    executor = _executor(node, probe.node)
    spin_until(executor, lambda: probe.pub.get_subscription_count() > 0)
    good = np.full((240, 320, 3), 128, np.uint8)
    bad_frames = {
        "encoding": Image(header=probe.stamp(), height=2, width=2, encoding="yuv422", step=4,
                          data=b"\0" * 8),
        "empty": Image(header=probe.stamp(), height=0, width=0, encoding="rgb8", step=0),
        "size": Image(header=probe.stamp(), height=240, width=320, encoding="rgb8", step=960,
                      data=b"\0" * 1000),
        "non_finite": image_msg(np.full((240, 320), np.nan, np.float32), "32FC1", probe.stamp()),
    }
    done = 0
    for reason, msg in bad_frames.items():
        probe.pub.publish(msg)
        assert spin_until(executor, lambda: node.stats.drops[reason] >= 1, timeout=5.0), reason
        done += 1
        assert _send_and_wait(executor, probe, image_msg(good, "rgb8", probe.stamp()), done)
    assert node.stats.processed == len(bad_frames)
    assert spin_until(executor, lambda: any(
        {kv.key: kv.value for kv in m.status[0].values}.get("drops_non_finite") == "1"
        for m in probe.diagnostics if m.status and "dronet_node" in m.status[0].name),
        timeout=5.0)


def test_corrupt_jpeg_on_compressed_transport(ros, official_dronet):
    node = _dronet(official_dronet, image_transport="compressed", max_frame_age=0.0)
    probe = Probe("compressed")
    executor = _executor(node, probe.node)
    spin_until(executor, lambda: probe.pub.get_subscription_count() > 0)
    good = compressed_msg(np.full((240, 320, 3), 90, np.uint8), "rgb8", probe.stamp())
    corrupt = CompressedImage(header=probe.stamp(), format="jpeg",
                              data=bytes(good.data)[: len(good.data) // 3])
    probe.pub.publish(corrupt)
    assert spin_until(executor, lambda: node.stats.drops["corrupt"] == 1, timeout=5.0)
    assert _send_and_wait(executor, probe, good, 1)


def test_stale_frames_are_dropped(ros, official_dronet):
    node = _dronet(official_dronet, max_frame_age=0.2)
    probe = Probe()
    executor = _executor(node, probe.node)
    spin_until(executor, lambda: probe.pub.get_subscription_count() > 0)
    old = probe.stamp()
    old.stamp.sec -= 5
    probe.pub.publish(image_msg(np.zeros((240, 320, 3), np.uint8), "rgb8", old))
    assert spin_until(executor, lambda: node.stats.drops["stale"] == 1, timeout=5.0)
    assert node.stats.processed == 0


def test_invalid_parameters_are_refused(ros, official_dronet):
    with pytest.raises(ValueError, match="image_transport"):
        _dronet(official_dronet, image_transport="theora")
    with pytest.raises(ValueError, match="device"):
        _dronet(official_dronet, device="tpu")
    node = _dronet(official_dronet)
    result = node.set_parameters([Parameter("max_frame_age", value=-1.0)])[0]
    assert not result.successful


@pytest.mark.parametrize("weights,message", [
    ("/nonexistent/dronet.safetensors", "weights file not found"),
    ("CORRUPT", "not a readable safetensors checkpoint"),
])
def test_missing_or_corrupt_weights_exit_nonzero(weights, message, tmp_path):
    if weights == "CORRUPT":
        weights = str(tmp_path / "corrupt.safetensors")
        with open(weights, "wb") as f:
            f.write(os.urandom(4096))
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "dronet_node"), "--ros-args",
         "-p", f"weights:={weights}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert message in result.stderr


# --- control node ---------------------------------------------------------------------------
class ControlProbe:
    def __init__(self):
        self.node = rclpy.create_node("control_probe")
        self.steering = self.node.create_publisher(Float32, "/dl_perception/dronet/steering_angle", 10)
        self.collision = self.node.create_publisher(
            Float32, "/dl_perception/dronet/collision_probability", 10)
        self.commands = []
        self.node.create_subscription(Twist, "/cmd_vel", self.commands.append, 100)
        self.enable = self.node.create_client(SetBool, "/dl_perception/dronet_control/enable")

    def perceive(self, steering, collision):
        self.steering.publish(Float32(data=steering))
        self.collision.publish(Float32(data=collision))


def _call(executor, client, value):
    assert client.wait_for_service(timeout_sec=5.0)
    future = client.call_async(SetBool.Request(data=value))
    assert spin_until(executor, future.done, timeout=5.0)
    return future.result()


def test_control_node_publishes_only_while_enabled(ros):
    control = DroNetControlNode(parameter_overrides=[
        Parameter("rate_hz", value=50.0), Parameter("alpha_velocity", value=1.0),
        Parameter("max_forward_velocity", value=1.0), Parameter("input_timeout", value=0.3)])
    probe = ControlProbe()
    executor = _executor(control, probe.node)
    spin_until(executor, lambda: False, timeout=0.5)
    probe.perceive(0.2, 0.1)
    spin_until(executor, lambda: False, timeout=0.5)
    assert probe.commands == []  # disabled by default
    assert _call(executor, probe.enable, True).success

    def perceiving(predicate):
        def check():
            probe.perceive(0.2, 0.1)
            return predicate()
        return check
    assert spin_until(executor, perceiving(lambda: any(c.linear.x > 0.85 for c in probe.commands)),
                      3.0)
    # inputs stop arriving: zero velocity once they are older than input_timeout
    assert spin_until(executor, lambda: probe.commands[-1].linear.x == 0.0
                      and probe.commands[-1].angular.z == 0.0, timeout=3.0)
    # critical collision probability: hard stop
    for _ in range(10):
        probe.perceive(0.0, 0.95)
        spin_until(executor, lambda: False, timeout=0.05)
    assert probe.commands[-1].linear.x == 0.0
    assert control.last_command.reason == "stop: collision"
    # fixed rate while enabled
    start = len(probe.commands)
    spin_until(executor, lambda: False, timeout=1.0)
    assert 25 <= len(probe.commands) - start <= 75
    # disabling sends one zero command, then silence
    assert _call(executor, probe.enable, False).success
    spin_until(executor, lambda: False, timeout=0.3)
    count = len(probe.commands)
    assert probe.commands[-1].linear.x == 0.0
    spin_until(executor, lambda: False, timeout=0.5)
    assert len(probe.commands) == count


def test_control_node_rejects_disabled_stop(ros):
    with pytest.raises(ValueError, match="critical_probability"):
        DroNetControlNode(parameter_overrides=[Parameter("critical_probability", value=1.3)])
