"""The launch_testing tests in test/launch/ (the package's launch files under the real launch,
launch_ros and launch_testing), each through launch_testing's own runner: its pytest plugin does
not load on pytest 8. Where no ROS install provides launch_testing, ../shared/ros2_launch does."""
import glob
import os
import subprocess
import sys

import pytest

LAUNCH_TESTS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "launch", "launch_*.py")))


@pytest.mark.parametrize("path", LAUNCH_TESTS, ids=os.path.basename)
def test_launch_file(ros_launch_env, path):
    result = subprocess.run([sys.executable, "-m", "launch_testing.launch_test", path],
                            env=ros_launch_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
