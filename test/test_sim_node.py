"""sim_node through ROS (in-process): every simulator topic with its type, frame and stamps;
/cmd_vel moves the drone; invalid parameters stop it at start-up; bench sim runs."""
import math

import numpy as np
import pytest
from conftest import spin_until


def test_sim_node_publishes_every_topic_and_obeys_cmd_vel(ros):
    from geometry_msgs.msg import Twist
    from nav_msgs.msg import Odometry
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Bool

    from dl_perception.core.imaging import image_to_numpy
    from dl_perception.ros.sim_node import SimNode

    sim = SimNode(parameter_overrides=[Parameter("world_seed", value=1000),
                                       Parameter("real_time_factor", value=0.0)])
    probe = ros.create_node("sim_probe")
    got = {name: [] for name in ("rgb", "depth", "info", "odom", "collision", "clock")}
    probe.create_subscription(Image, "/camera/image_raw", got["rgb"].append, qos_profile_sensor_data)
    probe.create_subscription(Image, "/camera/depth/image_raw", got["depth"].append,
                              qos_profile_sensor_data)
    probe.create_subscription(CameraInfo, "/camera/camera_info", got["info"].append, 100)
    probe.create_subscription(Odometry, "/ground_truth/odometry", got["odom"].append, 1000)
    probe.create_subscription(Bool, "/sim/collision", got["collision"].append, 1000)
    probe.create_subscription(Clock, "/clock", got["clock"].append, 1000)
    cmd = probe.create_publisher(Twist, "/cmd_vel", 10)
    executor = SingleThreadedExecutor()
    executor.add_node(sim)
    executor.add_node(probe)
    twist = Twist()
    twist.linear.x, twist.angular.z = 1.0, 0.3

    def driving():
        cmd.publish(twist)
        return len(got["rgb"]) >= 20 and len(got["odom"]) >= 60
    try:
        assert spin_until(executor, driving, timeout=30)
        executor.remove_node(sim)  # stopped: the odometry of the frames received drains
        last_frame = got["rgb"][-1].header.stamp
        assert spin_until(executor, lambda: got["odom"][-1].header.stamp == last_frame,
                          timeout=30)
    finally:
        sim.destroy_node()
    rgb, depth, info = got["rgb"][-1], got["depth"][-1], got["info"][-1]
    assert (rgb.encoding, rgb.width, rgb.height) == ("rgb8", 320, 240)
    assert depth.encoding == "32FC1" and depth.header.stamp == rgb.header.stamp
    assert rgb.header.frame_id == "camera_optical_frame"
    metres = image_to_numpy(depth).pixels
    assert 0.05 < np.nanmin(metres) < 100 and image_to_numpy(rgb).pixels.std() > 5
    assert info.k[0] == pytest.approx(160.0) and info.k[2] == pytest.approx(159.5)
    odometry = got["odom"]
    assert odometry[-1].header.frame_id == "odom" and odometry[-1].child_frame_id == "base_link"
    clock = [c.clock.sec + c.clock.nanosec * 1e-9 for c in got["clock"]]
    assert np.all(np.diff(clock) > 0)
    assert sim.commands_received > 0
    assert odometry[-1].twist.twist.linear.x > 0.2  # /cmd_vel made it fly forward
    assert odometry[-1].twist.twist.angular.z > 0.1
    start = odometry[0].pose.pose.position
    end = odometry[-1].pose.pose.position
    assert math.hypot(end.x - start.x, end.y - start.y) > 0.3
    assert all(isinstance(c.data, bool) for c in got["collision"])
    # free run publishes each frame while the next renders: its stamp is still its pose's
    from dl_perception.sim.simulator import Simulator
    poses = {(o.header.stamp.sec, o.header.stamp.nanosec): o.pose.pose for o in odometry}
    check, previous = Simulator(1000), None
    try:
        for frame in got["rgb"][len(got["rgb"]) // 2:][:3]:
            pose = poses[(frame.header.stamp.sec, frame.header.stamp.nanosec)]
            check.reset((pose.position.x, pose.position.y, pose.position.z,
                         2 * math.atan2(pose.orientation.z, pose.orientation.w)))
            expected, _ = check.render()
            published = image_to_numpy(frame).pixels.astype(int)
            assert np.abs(published - expected).mean() < 0.5
            if previous is not None:  # a frame apart differs clearly: the check can fail
                assert np.abs(published - previous).mean() > 2
            previous = expected.astype(int)
    finally:
        check.close()


@pytest.mark.parametrize("override, message", [
    (("preset", "night"), "preset"),
    (("camera_rate_hz", 500.0), "camera_rate_hz"),
    (("use_sim_time", True), "publishes /clock itself"),
])
def test_sim_node_refuses_bad_parameters(ros, override, message):
    from rclpy.parameter import Parameter

    from dl_perception.ros.sim_node import SimNode
    with pytest.raises(ValueError, match=message):
        SimNode(parameter_overrides=[Parameter(override[0], value=override[1])])


def test_bench_sim_reports_publish_rate_and_ratio():
    from dl_perception.ros.bench.sim import bench_sim
    rows = bench_sim(20)
    render, node = rows
    assert render["fps"] > 0 and node["fps"] > 0
    assert node["ratio_to_render"] == pytest.approx(node["fps"] / render["fps"], rel=1e-6)
    assert node["received_rgb"] > 0 and node["received_depth"] > 0
    assert node["subscriber_cpu_ms_per_frame"] >= 0.0


def test_sim_command_runs_the_node_and_refuses_bad_parameters():
    import os
    import subprocess
    import sys
    bin_dir = os.path.dirname(sys.executable)
    result = subprocess.run([os.path.join(bin_dir, "dl-perception"), "sim", "--world-seed", "2",
                             "--duration", "3", "--", "-p", "real_time_factor:=2.0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "world 2 (day)" in result.stderr + result.stdout
    result = subprocess.run([os.path.join(bin_dir, "sim_node"), "--ros-args", "-p",
                             "world_size:=5.0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "error:" in result.stderr and "world_size" in result.stderr


def test_sim_launch_config_starts_the_simulator_with_dronet():
    import os

    import yaml

    from dl_perception.core.paths import REPO_DIR
    from dl_perception.ros.launcher import configured_nodes
    path = os.path.join(REPO_DIR, "config", "sim.yaml")
    assert configured_nodes(path) == ["sim_node", "dronet_node", "dronet_control_node"]
    config = yaml.safe_load(open(path))
    for node in ("dronet_node", "dronet_control_node"):
        assert config[node]["ros__parameters"]["use_sim_time"] is True
    assert "use_sim_time" not in config["sim_node"]["ros__parameters"]
