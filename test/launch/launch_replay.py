"""launch_testing: launch/replay.launch.py plays a bag with its launch arguments
(wait_for_subscribers, delay, remap, loop), and `dl-perception replay` ends with status 0 on
launch's shutdown SIGINT. Run by test/test_launch_files.py."""
import os
import tempfile
import time
import unittest

import launch
import launch_testing.actions
import launch_testing.asserts
import pytest
import rclpy
from launch.launch_description_sources import PythonLaunchDescriptionSource
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float32

from dl_perception.core import rosmsg
from dl_perception.bags import BagWriter
from dl_perception.core.paths import REPO_DIR


@pytest.mark.launch_test
def generate_test_description():
    bag = os.path.join(tempfile.mkdtemp(), "values")
    with BagWriter(bag) as writer:
        for i in range(20):
            writer.write("/value", 10**9 + i * 10**8, rosmsg.float32(i))
    player = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(REPO_DIR, "launch", "replay.launch.py")),
        launch_arguments={"bag": bag, "wait_for_subscribers": "60", "delay": "0.5",
                          "remap": "/value:=/replayed", "loop": "true"}.items())
    return launch.LaunchDescription([player, launch_testing.actions.ReadyToTest()])


class TestReplayPublishes(unittest.TestCase):
    def test_values_arrive_in_order(self):
        rclpy.init()
        try:
            node = rclpy.create_node("replay_launch_observer")
            values = []
            node.create_subscription(Float32, "/replayed", lambda m: values.append(m.data),
                                     QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(values) < 20:
                rclpy.spin_once(node, timeout_sec=0.1)
            # the player loops, so it is still running when the test ends (launch_testing aborts
            # a test whose processes have all exited); the first pass is complete and in order
            self.assertEqual(values[:20], [float(i) for i in range(20)])
        finally:
            rclpy.shutdown()


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
