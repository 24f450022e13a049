"""launch_testing: launch/replay.launch.py on a ROS 2 install (launch_testing is not on PyPI;
test_bags_replay.py runs the same player through `dl-perception replay` everywhere and checks
the launch arguments map onto its command line)."""
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
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402

from dl_perception import rosmsg  # noqa: E402
from dl_perception.bags import BagWriter  # noqa: E402
from dl_perception.paths import REPO_DIR  # noqa: E402


@pytest.mark.launch_test
def generate_test_description():
    bag = os.path.join(tempfile.mkdtemp(), "values")
    with BagWriter(bag) as writer:
        for i in range(20):
            writer.write("/value", 10**9 + i * 10**8, rosmsg.float32(i))
    player = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(REPO_DIR, "launch", "replay.launch.py")),
        launch_arguments={"bag": bag, "delay": "3.0", "remap": "/value:=/replayed"}.items())
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
            self.assertEqual(values, [float(i) for i in range(20)])
        finally:
            rclpy.shutdown()


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
