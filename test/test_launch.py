"""`dl-perception launch`: the configured nodes in one process, seen from another process, and
clean shutdown on SIGINT/SIGTERM. Runs everywhere (the launch_testing twins need a ROS install)."""
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import Twist  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402

from dl_perception.ros.launcher import NODE_CLASSES, configured_nodes  # noqa: E402

BIN = os.path.dirname(sys.executable)


def _config(tmp_path, weights, **extra):
    config = {
        "camera_node": {"ros__parameters": {"rate_hz": 15.0}},
        "dronet_node": {"ros__parameters": {"weights": weights, "device": "cpu"}},
        "dronet_control_node": {"ros__parameters": {"enabled_at_start": True}},
        **extra,
    }
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _start(config, *args):
    return subprocess.Popen([os.path.join(BIN, "dl-perception"), "launch", config, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_launched_stack_drives_cmd_vel_and_stops_cleanly(ros, official_dronet, tmp_path,
                                                         stop_signal):
    process = _start(_config(tmp_path, official_dronet))
    node = ros.create_node("launch_observer")
    seen = {"cmd_vel": [], "steering": [], "collision": []}
    node.create_subscription(Twist, "/cmd_vel", seen["cmd_vel"].append, 50)
    node.create_subscription(Float32, "/dl_perception/dronet/steering_angle",
                             seen["steering"].append, 50)
    node.create_subscription(Float32, "/dl_perception/dronet/collision_probability",
                             seen["collision"].append, 50)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and not all(len(v) >= 10 for v in seen.values()):
            rclpy.spin_once(node, timeout_sec=0.1)
            assert process.poll() is None, process.stdout.read()
        assert all(len(v) >= 10 for v in seen.values()), {k: len(v) for k, v in seen.items()}
        assert all(0.0 <= m.data <= 1.0 for m in seen["collision"])
        assert any(m.linear.x > 0 for m in seen["cmd_vel"])
    finally:
        process.send_signal(stop_signal)
        output = process.communicate(timeout=15)[0]
    assert process.returncode == 0, output
    assert "Traceback" not in output


def test_launch_refuses_missing_weights(tmp_path):
    result = subprocess.run(
        [os.path.join(BIN, "dl-perception"), "launch",
         _config(tmp_path, str(tmp_path / "nope.safetensors")), "--duration", "5"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "weights file not found" in result.stderr


def test_launch_refuses_unknown_nodes(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("mystery_node:\n  ros__parameters: {}\n")
    with pytest.raises(ValueError, match="unknown node 'mystery_node'"):
        configured_nodes(str(path))


def test_deployment_config_matches_executables(repo_dir):
    from importlib.metadata import distribution
    scripts = {ep.name for ep in distribution("dl_perception").entry_points
               if ep.group == "console_scripts"}
    names = configured_nodes(os.path.join(repo_dir, "config", "perception.yaml"))
    assert names and set(names) <= scripts
    assert set(NODE_CLASSES) <= scripts
