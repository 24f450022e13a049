"""Hostile frames into a live dronet_node (issue 21, items 5-6): stamps from the future or out of
range, and frames larger than max_pixels, are dropped by reason; latency statistics come from
valid stamps only."""
import numpy as np
import pytest
from conftest import spin_until

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402

from dl_perception.ros.nodes import DroNetNode  # noqa: E402
from dl_perception.ros.messages import header, image_msg  # noqa: E402


class Camera:
    def __init__(self, compressed=False):
        self.node = rclpy.create_node("hostile_camera")
        kind, topic = (CompressedImage, "/camera/image_raw/compressed") if compressed else \
            (Image, "/camera/image_raw")
        self.pub = self.node.create_publisher(kind, topic, qos_profile_sensor_data)
        self.outputs = []
        self.node.create_subscription(Float32, "/dl_perception/dronet/collision_probability",
                                      lambda m: self.outputs.append(m.data), 100)

    def header(self, offset_s=0.0):
        now = self.node.get_clock().now().nanoseconds + int(offset_s * 1e9)
        msg = header(self.node.get_clock().now().to_msg(), "camera_optical_frame")
        msg.stamp.sec, msg.stamp.nanosec = divmod(now, 1_000_000_000)
        return msg


def _start(compressed=False, **params):
    overrides = [Parameter("device", value="cpu")] + [Parameter(k, value=v)
                                                      for k, v in params.items()]
    if compressed:
        overrides.append(Parameter("image_transport", value="compressed"))
    node, camera = DroNetNode(parameter_overrides=overrides), Camera(compressed)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(camera.node)
    assert spin_until(executor, lambda: camera.pub.get_subscription_count() > 0)
    return node, camera, executor


def _frame(camera, stamp_header):
    return image_msg(np.full((240, 320, 3), 120, np.uint8), "rgb8", stamp_header)


def _send_until(executor, camera, msg, predicate, tries=5) -> bool:
    """Publish (again, as the camera QoS is best effort) until `predicate` holds."""
    for _ in range(tries):
        camera.pub.publish(msg)
        if spin_until(executor, predicate, timeout=2.0):
            return True
    return False


def _dropped(executor, camera, node, msg, reason) -> bool:
    count = node.stats.drops[reason]
    return _send_until(executor, camera, msg, lambda: node.stats.drops[reason] > count)


def test_future_and_invalid_stamps_are_dropped_and_latency_stays_sane(ros):
    node, camera, executor = _start()
    assert _dropped(executor, camera, node, _frame(camera, camera.header(10.0)), "future")
    year_2038 = camera.header()
    year_2038.stamp.sec, year_2038.stamp.nanosec = 2_145_916_800, 0
    assert _dropped(executor, camera, node, _frame(camera, year_2038), "future")
    negative = camera.header()
    negative.stamp.sec = -5
    assert _dropped(executor, camera, node, _frame(camera, negative), "invalid_stamp")
    overflowing = camera.header()
    overflowing.stamp.nanosec = 1_500_000_000
    assert _dropped(executor, camera, node, _frame(camera, overflowing), "invalid_stamp")
    assert node.stats.processed == 0
    for count in range(1, 7):
        ahead = 0.2 if count % 2 else 0.0  # ahead of the clock, within max_future
        assert _send_until(executor, camera, _frame(camera, camera.header(ahead)),
                           lambda: node.stats.processed >= count)
    latency = node.stats.summary()["latency_ms"]
    assert -250.0 < latency["p50"] < 5000.0
    assert -250.0 < latency["mean"] < 5000.0


def test_future_check_can_be_disabled_but_latency_ignores_future_stamps(ros):
    node, camera, executor = _start(max_future=0.0)
    assert _send_until(executor, camera, _frame(camera, camera.header(3600.0)),
                       lambda: node.stats.processed >= 1)
    assert node.stats.drops["future"] == 0
    assert np.isnan(node.stats.summary()["latency_ms"]["p50"])


def test_frames_over_max_pixels_are_dropped_before_decoding(ros):
    node, camera, executor = _start(max_pixels=320 * 240 - 1)
    assert _dropped(executor, camera, node, _frame(camera, camera.header()), "too_large")
    assert node.stats.processed == 0


def test_a_huge_png_on_compressed_transport_is_dropped_from_its_header(ros):
    from test_hostile_images import _png_of_size
    node, camera, executor = _start(compressed=True)
    data = _png_of_size(20000, 20000)
    msg = CompressedImage(header=camera.header(), format="png", data=data)
    assert _dropped(executor, camera, node, msg, "too_large")
    assert node.stats.processed == 0


def test_control_node_treats_out_of_range_outputs_as_missing(ros):
    from geometry_msgs.msg import Twist
    from dl_perception.ros.dronet_control_node import DroNetControlNode
    control = DroNetControlNode(parameter_overrides=[
        Parameter("rate_hz", value=50.0), Parameter("alpha_velocity", value=1.0),
        Parameter("max_forward_velocity", value=1.0), Parameter("input_timeout", value=0.3),
        Parameter("enabled_at_start", value=True)])
    probe = rclpy.create_node("dronet_outputs")
    steering = probe.create_publisher(Float32, "/dl_perception/dronet/steering_angle", 10)
    collision = probe.create_publisher(Float32, "/dl_perception/dronet/collision_probability", 10)
    commands = []
    probe.create_subscription(Twist, "/cmd_vel", commands.append, 100)
    executor = SingleThreadedExecutor()
    executor.add_node(control)
    executor.add_node(probe)

    def perceive(s, p):
        def publish():
            steering.publish(Float32(data=s))
            collision.publish(Float32(data=p))
            return False
        spin_until(executor, publish, timeout=0.5)
    perceive(0.0, -0.5)  # clamped to 0 before: full speed
    perceive(30.0, 0.1)
    assert commands and all(c.linear.x == 0.0 and c.angular.z == 0.0 for c in commands)
    assert control.controller.invalid_inputs >= 2
    perceive(0.2, 0.1)
    assert commands[-1].linear.x > 0.85
    moving = len(commands)
    perceive(0.0, 1.7)  # invalid: the last valid output holds, then times out
    assert any(c.linear.x > 0.85 for c in commands[moving:moving + 5])
    assert commands[-1].linear.x == 0.0 and commands[-1].angular.z == 0.0
    assert control.last_command.reason == "stop: stale input"
