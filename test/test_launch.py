"""`dl-perception launch`: the configured nodes (a process each by default, or one process), seen
from another process; clean shutdown on SIGINT/SIGTERM; a slow node does not slow the others;
namespaced stacks side by side. test/launch/ holds the launch_testing twins."""
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
    deadline = time.monotonic() + 90  # three processes start, each importing torch

    def driving() -> bool:  # the first outputs may see an obstacle: wait for forward motion
        return all(len(v) >= 10 for v in seen.values()) and \
            any(m.linear.x > 0 for m in seen["cmd_vel"])
    try:
        while time.monotonic() < deadline and not driving():
            rclpy.spin_once(node, timeout_sec=0.1)
            assert process.poll() is None, process.stdout.read()
        assert all(len(v) >= 10 for v in seen.values()), {k: len(v) for k, v in seen.items()}
        assert all(0.0 <= m.data <= 1.0 for m in seen["collision"])
        assert any(m.linear.x > 0 for m in seen["cmd_vel"]), \
            [round(m.data, 3) for m in seen["collision"][-20:]]
    finally:
        process.send_signal(stop_signal)
        output = process.communicate(timeout=15)[0]
    assert process.returncode == 0, output
    assert "Traceback" not in output


def test_launch_refuses_missing_weights(tmp_path):
    result = subprocess.run(
        [os.path.join(BIN, "dl-perception"), "launch",
         _config(tmp_path, str(tmp_path / "nope.safetensors")), "--duration", "90"],
        capture_output=True, text=True, timeout=150)
    assert result.returncode == 1  # dronet_node fails at start-up and the launch with it
    assert "weights file not found" in result.stderr
    assert "dronet_node exited with status 1" in result.stderr


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


def _count_until(node, counters, done, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done():
        rclpy.spin_once(node, timeout_sec=0.05)
    return {k: len(v) for k, v in counters.items()}


def test_each_node_keeps_its_rate_beside_a_slow_one(ros):
    """A process per node (the default): LIFT (about a second per frame on a CPU) does not hold
    DroNet back. Measured by `bench launch` as DroNet outputs per LIFT output over the same
    stretch, a ratio that a loaded machine scales alike; on one executor (--single-process) it is
    about 1, since every LIFT frame holds the executor (README)."""
    from dl_perception.ros.bench.launch import measure
    counts = measure(ros.create_node("rate_observer"), single_process=False, lift_frames=3)
    print(f"process each: {counts}")
    assert counts["status"] == 0 and counts["lift"] >= 3, counts
    assert counts["dronet"] >= 3 * counts["lift"], counts  # DroNet runs at its own rate


def test_namespaced_stacks_share_one_graph(ros, tmp_path):
    """Two complete stacks under __ns:=/drone1 and __ns:=/drone2 in one ROS graph: each node
    sees only its own drone's camera (relative topic names throughout)."""
    from sensor_msgs.msg import Image

    processes, depth = {}, {}
    node = ros.create_node("namespace_observer")
    for drone in ("drone1", "drone2"):
        config = tmp_path / f"{drone}.yaml"
        config.write_text(yaml.safe_dump({
            "camera_node": {"ros__parameters": {"rate_hz": 4.0, "width": 96, "height": 72,
                                                "frame_id": f"{drone}_camera"}},
            "dronet_node": {"ros__parameters": {"device": "cpu"}},
            "dronet_control_node": {"ros__parameters": {"enabled_at_start": True}},
            "depth_node": {"ros__parameters": {"device": "cpu", "max_frame_age": 0.0}},
        }))
        processes[drone] = _start(str(config), "--single-process", "--", "-r", f"__ns:=/{drone}")
        depth[drone] = []
        node.create_subscription(Image, f"/{drone}/dl_perception/depth/image",
                                 depth[drone].append, 10)
    commands = {drone: [] for drone in processes}
    for drone in processes:
        node.create_subscription(Twist, f"/{drone}/cmd_vel", commands[drone].append, 10)
    try:
        _count_until(node, {}, lambda: all(len(d) >= 3 for d in depth.values())
                     and all(commands.values()), timeout=90)
        root_camera = node.get_publishers_info_by_topic("/camera/image_raw")
        # another process's endpoints can reach this node's graph after their data did (seen
        # once on a loaded machine): ask again until both drones' camera readers are known
        readers = {}
        deadline = time.monotonic() + 30
        while not (len(readers) == len(processes) and all(readers.values())) \
                and time.monotonic() < deadline:
            readers = {drone: node.get_subscriptions_info_by_topic(f"/{drone}/camera/image_raw")
                       for drone in processes}
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        outputs = {}
        for drone, process in processes.items():
            process.send_signal(signal.SIGINT)
            outputs[drone] = process.communicate(timeout=30)[0]
    for drone, process in processes.items():
        assert process.returncode == 0, outputs[drone]
        assert len(depth[drone]) >= 3 and commands[drone], outputs[drone]
        # every depth image came from this drone's camera
        assert {m.header.frame_id for m in depth[drone]} == {f"{drone}_camera"}
        assert {r.node_namespace for r in readers[drone]} == {f"/{drone}"}
        assert {r.node_name for r in readers[drone]} == {"dronet_node", "depth_node"}
    # nothing of either stack in the root namespace (other tests' nodes may share this domain)
    assert not {p.node_namespace for p in root_camera} & {"/drone1", "/drone2"}


@pytest.mark.parametrize("delay,stop_signal", [(0.2, signal.SIGINT), (1.5, signal.SIGTERM),
                                               (4.0, signal.SIGINT), (10.0, signal.SIGTERM)])
def test_a_stop_signal_at_any_moment_ends_a_node_with_status_0(delay, stop_signal):
    """During imports, rclpy's start-up, model loading or spinning: status 0, no traceback (what
    launch expects of every process it shuts down)."""
    process = subprocess.Popen([os.path.join(BIN, "dronet_node"), "--ros-args", "-p",
                                "device:=cpu"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    time.sleep(delay)
    process.send_signal(stop_signal)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert "Traceback" not in output and "terminate called" not in output
