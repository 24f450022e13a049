"""launch_testing: launch/perception.launch.py on a ROS 2 install (launch_testing is not on PyPI;
test_launch.py runs the same stack through `dl-perception launch` everywhere)."""
import os
import tempfile
import time
import unittest

import pytest

launch_testing = pytest.importorskip(
    "launch_testing", reason="launch_testing comes with a ROS 2 install, not from PyPI")
import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402
import yaml  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

from dl_perception.convert import dronet_keras  # noqa: E402
from dl_perception.paths import REPO_DIR, shared_data_dir  # noqa: E402


@pytest.mark.launch_test
def generate_test_description():
    folder = tempfile.mkdtemp()
    official = os.path.join(shared_data_dir(), "dronet")
    model, info = dronet_keras(os.path.join(official, "model_struct.json"),
                               os.path.join(official, "model_weights.h5"))
    weights = os.path.join(folder, "dronet.safetensors")
    model.save(weights, info=info)
    config = os.path.join(folder, "stack.yaml")
    with open(config, "w") as handle:
        yaml.safe_dump({
            "camera_node": {"ros__parameters": {"rate_hz": 15.0}},
            "dronet_node": {"ros__parameters": {"weights": weights}},
            "dronet_control_node": {"ros__parameters": {"enabled_at_start": True}},
        }, handle)
    stack = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(REPO_DIR, "launch", "perception.launch.py")),
        launch_arguments={"config": config}.items())
    return launch.LaunchDescription([stack, launch_testing.actions.ReadyToTest()])


class TestStackPublishes(unittest.TestCase):
    def test_cmd_vel(self):
        rclpy.init()
        try:
            node = rclpy.create_node("launch_test_observer")
            commands = []
            node.create_subscription(Twist, "/cmd_vel", commands.append, 10)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(commands) < 10:
                rclpy.spin_once(node, timeout_sec=0.1)
            self.assertGreaterEqual(len(commands), 10)
        finally:
            rclpy.shutdown()


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
