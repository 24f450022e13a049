"""launch_testing: launch/perception.launch.py starts camera_node, dronet_node and
dronet_control_node (a process each, by launch_ros) under namespace:=drone1 with their sections
of the parameters file, /drone1/cmd_vel flows, and every process ends with status 0 on launch's
shutdown. Run by test/test_launch_files.py."""
import os
import tempfile
import time
import unittest

import launch
import launch_testing.actions
import launch_testing.asserts
import pytest
import rclpy
import yaml
from geometry_msgs.msg import Twist
from launch.launch_description_sources import PythonLaunchDescriptionSource

from dl_perception.core.paths import REPO_DIR


@pytest.mark.launch_test
def generate_test_description():
    config = os.path.join(tempfile.mkdtemp(), "stack.yaml")
    with open(config, "w") as handle:
        yaml.safe_dump({  # dronet_node with the weights the package ships
            "camera_node": {"ros__parameters": {"rate_hz": 15.0}},
            "dronet_node": {"ros__parameters": {"device": "cpu"}},
            "dronet_control_node": {"ros__parameters": {"enabled_at_start": True}},
        }, handle)
    stack = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(REPO_DIR, "launch", "perception.launch.py")),
        launch_arguments={"config": config, "namespace": "drone1"}.items())
    return launch.LaunchDescription([stack, launch_testing.actions.ReadyToTest()])


class TestStackPublishes(unittest.TestCase):
    def test_cmd_vel(self):
        rclpy.init()
        try:
            node = rclpy.create_node("launch_test_observer")
            commands = []
            # enabled_at_start (its section) applies under the namespace: commands flow
            node.create_subscription(Twist, "/drone1/cmd_vel", commands.append, 10)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(commands) < 10:
                rclpy.spin_once(node, timeout_sec=0.1)
            self.assertGreaterEqual(len(commands), 10)
        finally:
            rclpy.shutdown()


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
