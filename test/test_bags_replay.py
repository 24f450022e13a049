"""`dl-perception replay` through ROS: the TUM round trip (every frame arrives with identical
pixels and stamps), topic filter and remapping, offsets, loop, QoS per topic, /clock for
use_sim_time nodes, bags of another distribution, unplayable topics reported."""
import os
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
import yaml
from conftest import spin_until

rclpy = pytest.importorskip("rclpy")
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import (DurabilityPolicy, QoSProfile, ReliabilityPolicy,  # noqa: E402
                       qos_profile_sensor_data)
from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, Range  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402

from dl_perception.core import rosmsg  # noqa: E402
from dl_perception.bags import BagReader, BagWriter  # noqa: E402
from dl_perception.bags.from_images import images_to_bag, tum_frames  # noqa: E402
from dl_perception.ros.launch_description import REPLAY_ARGUMENTS, replay_arguments  # noqa: E402
from dl_perception.ros.replay import BagPlayer, ReplayOptions  # noqa: E402

BIN = os.path.dirname(sys.executable)
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def tum_bag(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tum")
    calibration = folder / "calib.yaml"
    calibration.write_text(yaml.safe_dump({
        "image_width": 640, "image_height": 480,
        "camera_matrix": {"rows": 3, "cols": 3, "data": [535.4, 0, 320.1, 0, 539.2, 247.6,
                                                         0, 0, 1]},
        "projection_matrix": {"rows": 3, "cols": 4, "data": [535.4, 0, 320.1, 0, 0, 539.2,
                                                             247.6, 0, 0, 0, 1, 0]}}))
    path = str(folder / "tum")
    images_to_bag(os.path.join(shared_data, "tum_fr3_long_office"), path, tum_list="rgb.txt",
                  calibration=str(calibration))
    return path


def _play_in_thread(node, reader, **options):
    player = BagPlayer(node, reader, ReplayOptions(reader.path, **options))
    result = {}
    thread = threading.Thread(target=lambda: result.update(report=player.play()), daemon=True)
    return player, thread, result


def test_tum_round_trip_every_frame_identical(tum_bag, shared_data, ros, tmp_path):
    """Frames -> bag -> `dl-perception replay` (another process) -> subscriber."""
    # reliable and transient local with room for the whole bag: every frame reaches the
    # subscriber however long discovery takes on a loaded machine
    policies = {"reliability": "reliable", "durability": "transient_local", "depth": 50}
    overrides = tmp_path / "qos.yaml"
    overrides.write_text(yaml.safe_dump({"/camera/image_raw": policies,
                                         "/camera/camera_info": policies}))
    node = ros.create_node("round_trip")
    images, infos, clock = [], [], []
    keep_all = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(Image, "/camera/image_raw", images.append, keep_all)
    node.create_subscription(CameraInfo, "/camera/camera_info", infos.append, keep_all)
    node.create_subscription(Clock, "/clock", clock.append, 100)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    process = subprocess.Popen(
        [os.path.join(BIN, "dl-perception"), "replay", tum_bag, "--rate", "8", "--delay", "2",
         "--qos-profile-overrides-path", str(overrides)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        spin_until(executor, lambda: len(images) >= 17 and len(infos) >= 17, 40)
        output = process.communicate(timeout=20)[0]
    finally:
        process.kill()
    assert len(images) == 17 and len(infos) == 17, (len(images), len(infos), output)
    assert process.returncode == 0, output
    frames = tum_frames(os.path.join(shared_data, "tum_fr3_long_office", "rgb.txt"))
    assert len(images) == len(frames) == 17
    for (stamp, file), image in zip(frames, images):
        assert rosmsg.stamp_ns(image.header.stamp) == stamp
        pixels = np.frombuffer(bytes(image.data), np.uint8).reshape(480, 640, 3)
        np.testing.assert_array_equal(pixels, cv2.cvtColor(cv2.imread(file), cv2.COLOR_BGR2RGB))
    assert [rosmsg.stamp_ns(i.header.stamp) for i in infos] == [s for s, _ in frames]
    assert infos[0].k[0] == 535.4
    bag_times = [rosmsg.stamp_ns(c.clock) for c in clock]
    assert bag_times and frames[0][0] <= min(bag_times) and max(bag_times) <= frames[-1][0]
    assert "published 34 messages" in output


def test_nav2_filter_remap_offset_and_missing_topics(shared_data, ros):
    bag = os.path.join(shared_data, "trajectories", "nav2_turtlebot.mcap")
    node = ros.create_node("nav2_observer")
    received = []
    node.create_subscription(Odometry, "/bag/odom", received.append, RELIABLE)
    raw = []
    node.create_subscription(Odometry, "/bag/odom", raw.append, RELIABLE, raw=True)
    with BagReader(bag) as reader:
        player, thread, result = _play_in_thread(
            node, reader, topics=["/odom", "/tf", "/amcl_pose", "/missing"],
            remap={"/odom": "/bag/odom"}, start_offset=20.0, duration=1.0, rate=2.0, delay=1.0,
            qos_overrides={"/odom": {"reliability": "reliable", "depth": 100}})
        assert player.skipped == ["/missing: not in the bag"]
        assert set(player.topics) == {"/odom", "/tf", "/amcl_pose"}  # tf2_msgs: built by make
        amcl = node.get_publishers_info_by_topic("/amcl_pose")
        assert amcl and amcl[0].qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        thread.start()
        while thread.is_alive():
            executor.spin_once(timeout_sec=0.01)
        spin_until(executor, lambda: False, 0.5)
        start = reader.start_ns + 20 * 10**9
        expected = [m.data for m in reader.messages(["/odom"], start, start + 10**9)]
    assert result["report"].fault is None
    assert len(expected) > 20 and raw == expected  # the stored bytes, unchanged
    assert received[0].header.frame_id == "odom"


def test_loop_and_use_sim_time_clock(ros, tmp_path):
    path = tmp_path / "values"
    with BagWriter(path) as bag:
        for i in range(5):
            bag.write("/value", 50 * 10**9 + i * 10**8, rosmsg.float32(i))
    node = ros.create_node("loop_observer")
    values = []
    node.create_subscription(Float32, "/value", lambda m: values.append(m.data), RELIABLE)
    follower = rclpy.create_node("sim_time_follower",
                                 parameter_overrides=[Parameter("use_sim_time", value=True)])
    with BagReader(path) as reader:
        player, thread, _ = _play_in_thread(node, reader, loop=True, rate=2.0, delay=0.5,
                                            clock_rate=100.0)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.add_node(follower)
        thread.start()
        try:
            assert spin_until(executor, lambda: len(values) >= 12, 20)
            now = follower.get_clock().now().nanoseconds
        finally:
            player.stop_event.set()
            thread.join(5)
    assert values[:10] == [0.0, 1.0, 2.0, 3.0, 4.0] * 2
    assert 50 * 10**9 <= now <= 50 * 10**9 + 4 * 10**8  # the follower runs on bag time
    follower.destroy_node()


def test_bag_from_another_distribution_is_converted(ros, tmp_path):
    """Humble's sensor_msgs/Range lacks Kilted's `variance`: re-encoded for local subscribers."""
    humble = get_typestore(Stores.ROS2_HUMBLE)
    path = tmp_path / "humble"
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/range", "sensor_msgs/msg/Range", typestore=humble)
        Range_, Header = humble.types["sensor_msgs/msg/Range"], humble.types[
            "std_msgs/msg/Header"]
        for i in range(3):
            message = Range_(header=Header(stamp=humble.types["builtin_interfaces/msg/Time"](
                sec=7, nanosec=i), frame_id="sonar"), radiation_type=1, field_of_view=0.3,
                min_range=0.2, max_range=5.0, range=1.5 + i)
            writer.write(connection, 7 * 10**9 + i * 10**7,
                         humble.serialize_cdr(message, "sensor_msgs/msg/Range"))
    node = ros.create_node("range_observer")
    ranges = []
    node.create_subscription(Range, "/range", ranges.append, RELIABLE)
    with BagReader(path) as reader:
        player, thread, result = _play_in_thread(node, reader, delay=1.0, rate=5.0)
        assert player.topics["/range"].translate
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        thread.start()
        assert spin_until(executor, lambda: len(ranges) >= 3, 15)
    assert [r.range for r in ranges] == [1.5, 2.5, 3.5]
    assert ranges[0].radiation_type == 1 and ranges[0].variance == 0.0
    assert ranges[0].header.frame_id == "sonar"


def test_replay_command_errors(tmp_path):
    def run(*args):
        return subprocess.run([os.path.join(BIN, "dl-perception"), "replay", *args],
                              capture_output=True, text=True, timeout=60)
    result = run(str(tmp_path / "nope"))
    assert result.returncode == 1 and "bag not found" in result.stderr
    result = run(str(tmp_path), "--rate", "0")
    assert result.returncode == 1 and "--rate must be positive" in result.stderr
    result = run(str(tmp_path), "--remap", "/a")
    assert result.returncode == 1 and "FROM:=TO" in result.stderr


def test_replay_stops_cleanly_on_sigterm(tum_bag, ros):
    import signal
    process = subprocess.Popen([os.path.join(BIN, "dl-perception"), "replay", tum_bag,
                                "--loop", "--rate", "4"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    node = ros.create_node("sigterm_observer")
    frames = []
    node.create_subscription(Image, "/camera/image_raw", frames.append, 10)
    deadline = time.monotonic() + 60
    while not frames and time.monotonic() < deadline:  # playing (not starting up)
        ros.spin_once(node, timeout_sec=0.1)
    assert frames
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "published" in stdout


def test_wait_for_subscribers_holds_playback_until_a_subscriber_matches(ros, tmp_path):
    path = str(tmp_path / "values")
    with BagWriter(path) as writer:
        for i in range(3):
            writer.write("/held_values", 10**9 + i * 10**7, rosmsg.float32(i))
    node = ros.create_node("held_player")
    warnings = []
    with BagReader(path) as reader:
        player = BagPlayer(node, reader, ReplayOptions(path, wait_for_subscribers=0.3,
                                                       clock_rate=0), log=warnings.append)
        started = time.monotonic()
        assert player.wait_for_subscribers(0.3) == ["/held_values"]
        assert time.monotonic() - started >= 0.3
        player.play()  # nobody listens: warns, then plays anyway
        assert len(warnings) == 1 and "/held_values" in warnings[0]
        assert player.topics["/held_values"].published == 3
        observer = ros.create_node("held_observer")
        observer.create_subscription(Float32, "/held_values", lambda m: None, RELIABLE)
        assert player.wait_for_subscribers(30.0) == []


def test_replay_launch_arguments_map_onto_the_command(tmp_path):
    from dl_perception.cli import build_parser
    overrides = tmp_path / "q.yaml"
    overrides.write_text("/a: {reliability: best_effort}\n")
    values = {name: default or "" for name, (default, _) in REPLAY_ARGUMENTS.items()}
    values.update(bag="/data/run1", loop="true", topics="/a /b", remap="/a:=/c",
                  qos_overrides=str(overrides), rate="0.5", wait_for_subscribers="20")
    args = build_parser().parse_args(replay_arguments(values))
    assert args.wait_for_subscribers == 20.0
    assert (args.bag, args.rate, args.loop, args.topics, args.remap) == \
        ("/data/run1", 0.5, True, ["/a", "/b"], ["/a:=/c"])
    assert args.qos_profile_overrides_path == str(overrides) and args.clock_rate == 40.0
    options = ReplayOptions.from_args(args)
    assert options.remap == {"/a": "/c"}
    assert options.qos_overrides == {"/a": {"reliability": "best_effort"}}


def test_replay_launch_file(repo_dir):
    source = open(os.path.join(repo_dir, "launch", "replay.launch.py")).read()
    assert "def generate_launch_description" in source and "replay_launch()" in source
    compile(source, "replay.launch.py", "exec")


def test_bench_replay_measures_timing(capsys):
    from dl_perception.cli import main as cli
    assert cli(["bench", "replay", "--duration", "1"]) == 0
    out = capsys.readouterr().out
    assert "/camera/image_raw  30        30" in out and "/bench/value       200       200" in out
    assert "raw CDR bytes (replay)" in out


def test_qos_adaptation_follows_rosbag2():
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, \
        QosReliability, QosTime

    from dl_perception.ros.replay import adapted_profile, profile_from_override

    def recorded(reliability, durability, depth=5):
        forever = QosTime(9223372036, 854775807)
        return Qos(QosHistory.KEEP_LAST, depth, reliability, durability, forever, forever,
                   QosLiveliness.AUTOMATIC, forever, False)
    both = adapted_profile([recorded(QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL),
                            recorded(QosReliability.BEST_EFFORT, QosDurability.VOLATILE, 50)])
    assert both.reliability == ReliabilityPolicy.BEST_EFFORT and both.depth == 50
    assert both.durability == DurabilityPolicy.VOLATILE
    latched = adapted_profile([recorded(QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL)])
    assert latched.reliability == ReliabilityPolicy.RELIABLE
    assert latched.durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert adapted_profile([]).reliability == ReliabilityPolicy.RELIABLE
    sensor = profile_from_override("/c", {"reliability": "best_effort", "depth": 1})
    assert sensor.reliability == qos_profile_sensor_data.reliability and sensor.depth == 1
    with pytest.raises(ValueError, match="unsupported 'lifespn"):
        profile_from_override("/c", {"lifespn": 3})


def test_a_stop_racing_a_clock_publish_still_reports(ros, tmp_path):
    """SIGTERM shuts the ROS context down at any moment, also between the player's stop check
    and its next /clock publish: the publish raises, and what was played is still reported (the
    `replay` command prints it); the same error without a stop is not swallowed."""
    path = tmp_path / "values"
    with BagWriter(path) as bag:
        for i in range(20):
            bag.write("/value", 50 * 10**9 + i * 10**8, rosmsg.float32(i))
    node = ros.create_node("stop_race")

    class ClockThatFails:
        def __init__(self, player, stop_first):
            self.player, self.stop_first, self.calls = player, stop_first, 0

        def publish(self, message):
            self.calls += 1
            if self.calls == 5:
                if self.stop_first:
                    self.player.stop_event.set()
                raise RuntimeError("publisher's context is invalid")

    with BagReader(path) as reader:
        for stop_first in (True, False):
            player = BagPlayer(node, reader, ReplayOptions(reader.path, clock_rate=50.0,
                                                           rate=4.0, delay=0.0))
            player.clock = ClockThatFails(player, stop_first)
            if stop_first:
                report = player.play()
                assert report.fault is None and player.clock.calls == 5
                assert 0 < sum(t.published for t in report.topics) < 20
            else:
                with pytest.raises(RuntimeError, match="context is invalid"):
                    player.play()
