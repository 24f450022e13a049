"""Reading rosbag2 bags without ROS: real ROS 2 recordings (mcap and sqlite3), bags of other
distributions (embedded or distro definitions), and damaged bags (errors naming the file and the
position, everything before the damage still delivered)."""
import os
import shutil
import sqlite3
import struct
from collections import Counter

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_typestore

from dl_perception.core import rosmsg
from dl_perception.bags import BagError, BagReader, BagReadError, BagWriter, MessageDecodeError
from dl_perception.bags.info import describe
from dl_perception.bags.translate import default_message, same_layout, translate
from dl_perception.cli import main as cli


@pytest.fixture(scope="module")
def nav2_mcap(shared_data):
    return os.path.join(shared_data, "trajectories", "nav2_turtlebot.mcap")


@pytest.fixture(scope="module")
def tf_sqlite(shared_data):
    return os.path.join(shared_data, "trajectories", "tf_example")


def _counted(reader):
    counts, types = Counter(), {}
    for message in reader.messages():
        counts[message.topic] += 1
        types[message.topic] = message.msgtype
    return counts, types


def test_real_ros2_mcap_counts_and_types_match_its_summary(nav2_mcap):
    from mcap.reader import make_reader  # independent reader of the same file
    with open(nav2_mcap, "rb") as handle:
        summary = make_reader(handle).get_summary()
    expected = {summary.channels[c].topic: n
                for c, n in summary.statistics.channel_message_counts.items()}
    schema_of = {summary.channels[c].topic: summary.schemas[summary.channels[c].schema_id].name
                 for c in summary.channels}
    with BagReader(nav2_mcap) as reader:
        counts, types = _counted(reader)
        assert {t: i.count for t, i in reader.topics.items()} == expected
        assert {t: i.msgtype for t, i in reader.topics.items()} == schema_of
        assert reader.message_count == summary.statistics.message_count == 8197
        assert all(info.known for info in reader.topics.values())
    assert counts == expected == {"/odom": 2639, "/tf": 5422, "/tf_static": 1, "/amcl_pose": 135}
    assert types == schema_of
    assert types["/odom"] == "nav_msgs/msg/Odometry"


def test_real_sqlite3_bag_counts_and_types_match_metadata_yaml(tf_sqlite):
    info = yaml.safe_load(open(os.path.join(tf_sqlite, "metadata.yaml")))
    info = info["rosbag2_bagfile_information"]
    expected = {t["topic_metadata"]["name"]: t["message_count"]
                for t in info["topics_with_message_count"]}
    expected_types = {t["topic_metadata"]["name"]: t["topic_metadata"]["type"]
                      for t in info["topics_with_message_count"]}
    with BagReader(tf_sqlite) as reader:
        assert reader.storage == "sqlite3"
        counts, types = _counted(reader)
        assert reader.end_ns - reader.start_ns == info["duration"]["nanoseconds"]
        transforms = reader.deserialize(next(reader.messages(["/tf"])))
    assert counts == expected == {"/tf": 517, "/tf_static": 1}
    assert types == expected_types
    assert transforms.transforms and transforms.transforms[0].header.frame_id


def _odometry_by_hand(data: bytes) -> dict:
    """Little-endian CDR of nav_msgs/Odometry decoded with struct, independently of rosbags."""
    assert data[:2] == b"\x00\x01"
    body, pos = data[4:], 0

    def align(n):
        nonlocal pos
        pos += (-pos) % n

    def take(fmt):
        nonlocal pos
        align(struct.calcsize(fmt[-1]))
        values = struct.unpack_from("<" + fmt, body, pos)
        pos += struct.calcsize("<" + fmt)
        return values

    def string():
        nonlocal pos
        (length,) = take("I")
        text = body[pos:pos + length - 1].decode()
        pos += length
        return text

    sec, nanosec = take("iI")
    frame_id, child = string(), string()
    position = take("3d")
    orientation = take("4d")
    take("36d")
    linear = take("3d")
    return {"stamp": sec * 10**9 + nanosec, "frame_id": frame_id, "child": child,
            "position": position, "orientation": orientation, "linear": linear}


def test_odometry_decodes_correctly(nav2_mcap):
    with BagReader(nav2_mcap) as reader:
        messages = [m for _, m in zip(range(400), reader.messages(["/odom"]))]
        for message in messages[::57]:
            odom = reader.deserialize(message)
            expected = _odometry_by_hand(message.data)
            assert rosmsg.stamp_ns(odom.header.stamp) == expected["stamp"]
            assert (odom.header.frame_id, odom.child_frame_id) == (expected["frame_id"],
                                                                   expected["child"])
            pose = odom.pose.pose
            assert (pose.position.x, pose.position.y, pose.position.z) == expected["position"]
            assert (pose.orientation.x, pose.orientation.y, pose.orientation.z,
                    pose.orientation.w) == expected["orientation"]
            assert (odom.twist.twist.linear.x, odom.twist.twist.linear.y,
                    odom.twist.twist.linear.z) == expected["linear"]
            assert odom.pose.covariance.shape == (36,)
            q = expected["orientation"]
            assert abs(sum(v * v for v in q) - 1.0) < 1e-6
        assert odom.header.frame_id == "odom" and odom.child_frame_id == "base_link"
        first = reader.deserialize(messages[0])
        # simulation time in the stamps, wall time in the log: both advance alike
        stamps = [_odometry_by_hand(m.data)["stamp"] for m in messages]
        assert all(b > a for a, b in zip(stamps, stamps[1:]))
        assert abs((stamps[-1] - stamps[0]) - (messages[-1].log_time - messages[0].log_time)) \
            < 0.5e9
    assert (first.header.stamp.sec, first.header.stamp.nanosec) == (928, 800000000)
    assert first.pose.pose.position.x == pytest.approx(-2.8019166340612314, abs=1e-12)
    assert first.pose.pose.position.y == pytest.approx(1.0977901491292252, abs=1e-12)


def _range_bag(path, typestore, storage=StoragePlugin.SQLITE3):
    Range = typestore.types["sensor_msgs/msg/Range"]
    Header, Time = typestore.types["std_msgs/msg/Header"], typestore.types[
        "builtin_interfaces/msg/Time"]
    with Writer(path, version=8, storage_plugin=storage) as writer:
        connection = writer.add_connection("/range", "sensor_msgs/msg/Range", typestore=typestore)
        for i in range(3):
            message = Range(header=Header(stamp=Time(sec=100 + i, nanosec=0), frame_id="sonar"),
                            radiation_type=0, field_of_view=0.5, min_range=0.1, max_range=4.0,
                            range=1.0 + i)
            writer.write(connection, (100 + i) * 10**9,
                         typestore.serialize_cdr(message, "sensor_msgs/msg/Range"))


def test_humble_bag_without_definitions_uses_the_humble_types(tmp_path):
    """A Humble sqlite3 bag (metadata v5) embeds no definitions; Humble's Range has no
    `variance` field, so Kilted's definition would misread it."""
    humble = get_typestore(Stores.ROS2_HUMBLE)
    path = tmp_path / "humble_bag"
    _range_bag(path, humble)
    database = next(path.glob("*.db3"))
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM message_definitions")
    metadata = yaml.safe_load((path / "metadata.yaml").read_text())
    info = metadata["rosbag2_bagfile_information"]
    info["version"] = 5
    del info["ros_distro"]
    (path / "metadata.yaml").write_text(yaml.safe_dump(metadata))
    with BagReader(path) as reader:
        assert reader.distro == "humble"
        ranges = [reader.deserialize(m) for m in reader.messages()]
        assert not same_layout(reader.typestore, rosmsg.TYPESTORE, "sensor_msgs/msg/Range")
        local = translate(ranges[2], reader.typestore, rosmsg.TYPESTORE, "sensor_msgs/msg/Range")
    assert [r.range for r in ranges] == [1.0, 2.0, 3.0]
    assert local.range == 3.0 and local.variance == 0.0 and local.header.frame_id == "sonar"
    assert np.frombuffer(rosmsg.serialize(local), np.uint8).size > 0
    with pytest.raises(SerdeError):  # what Kilted's definition makes of Humble bytes
        rosmsg.deserialize(next(BagReader(path).messages()).data, "sensor_msgs/msg/Range")


def test_embedded_definitions_win_over_the_distro_types(tmp_path):
    """An mcap bag whose schema is Humble's Range, with metadata claiming Kilted."""
    path = tmp_path / "embedded"
    _range_bag(path, get_typestore(Stores.ROS2_HUMBLE), StoragePlugin.MCAP)
    with BagReader(path, distro="kilted") as reader:
        assert [reader.deserialize(m).range for m in reader.messages()] == [1.0, 2.0, 3.0]
        assert "variance" not in dict(reader.typestore.fielddefs["sensor_msgs/msg/Range"][1])
    default = default_message(rosmsg.TYPESTORE, "sensor_msgs/msg/Range")
    assert default.variance == 0.0 and default.header.stamp.sec == 0


def _float_bag(path, count, storage="mcap"):
    with BagWriter(path, storage=storage) as bag:
        for i in range(count):
            bag.write("/value", 10**9 + i * 10**6, rosmsg.float32(i))
    return next(p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))


def test_truncated_mcap_delivers_what_was_written_then_names_file_and_byte(tmp_path):
    path = tmp_path / "bag"
    storage = _float_bag(path, 60000)  # several 1 MiB chunks
    data = storage.read_bytes()
    storage.write_bytes(data[:int(len(data) * 0.6)])
    with BagReader(path) as reader:
        assert reader.fault is not None and storage.name in str(reader.fault)
        values = []
        with pytest.raises(BagReadError) as error:
            for message in reader.messages():
                values.append(reader.deserialize(message).data)
        assert reader.message_count == len(values)
        assert "warning: damaged" in describe(reader)
    assert str(storage) in str(error.value) and "at byte" in str(error.value)
    assert 20000 < len(values) < 60000
    assert values == [float(i) for i in range(len(values))]


def test_damaged_mcap_chunk_is_located(tmp_path):
    path = tmp_path / "bag"
    storage = _float_bag(path, 60000)
    data = bytearray(storage.read_bytes())
    # record lengths inside the second chunk: the chunk's CRC no longer matches
    data[len(data) // 2:len(data) // 2 + 64] = b"\xff" * 64
    storage.write_bytes(bytes(data))
    read = 0
    with BagReader(path) as reader, pytest.raises(BagReadError) as error:
        for _ in reader.messages():
            read += 1
    message = str(error.value)
    assert message.startswith(f"{storage}: ") and "at byte" in message
    offset = int(message.split("at byte ")[1].split(";")[0])
    assert offset <= len(data) // 2 < offset + (1 << 20) + 4096  # the chunk holding the damage
    assert 0 < read < 60000


def test_truncated_sqlite3_names_file_and_where_it_ends(tmp_path):
    path = tmp_path / "bag"
    storage = _float_bag(path, 5000, storage="sqlite3")
    data = storage.read_bytes()
    storage.write_bytes(data[:len(data) // 2])
    with pytest.raises(BagReadError) as error:
        BagReader(path)
    assert str(storage) in str(error.value)
    assert f"byte {len(data) // 2}" in str(error.value)


def test_unknown_types_and_missing_topics_are_reported(tmp_path):
    path = tmp_path / "bag"
    typestore = get_typestore(Stores.ROS2_KILTED)
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        connection = writer.add_connection("/custom", "my_msgs/msg/Thing", msgdef="",
                                           rihs01="RIHS01_" + "0" * 64)
        writer.write(connection, 5, b"\x00\x01\x00\x00abcd")
        known = writer.add_connection("/value", "std_msgs/msg/Float32", typestore=typestore)
        writer.write(known, 6, rosmsg.serialize(rosmsg.float32(2.5)))
    with BagReader(path) as reader:
        assert not reader.topics["/custom"].known and reader.topics["/value"].known
        assert "no definition" in describe(reader)
        custom = next(reader.messages(["/custom"]))
        with pytest.raises(MessageDecodeError, match="no definition of my_msgs/msg/Thing"):
            reader.deserialize(custom)
        assert reader.deserialize(next(reader.messages(["/value"]))).data == 2.5
        with pytest.raises(BagError, match="no topic /nope"):
            next(reader.messages(["/nope"]))


def test_bag_info_command(tf_sqlite, capsys):
    assert cli(["bag", "info", tf_sqlite]) == 0
    out = capsys.readouterr().out
    assert "Storage id:        sqlite3" in out and "Messages:          518" in out
    assert "Topic: /tf | Type: tf2_msgs/msg/TFMessage | Count: 517" in out
    assert "Duration:          51.684723334s" in out
    assert cli(["bag", "info", "/no/such/bag"]) == 1


def test_bare_storage_file_and_directory_without_metadata(tmp_path):
    path = tmp_path / "bag"
    _float_bag(path, 10)
    os.remove(path / "metadata.yaml")  # as a recorder killed before closing leaves it
    with BagReader(path) as reader:
        assert reader.topics["/value"].count == 10
    shutil.copy(next(path.glob("*.mcap")), tmp_path / "bare.mcap")
    with BagReader(tmp_path / "bare.mcap") as reader:
        assert [reader.deserialize(m).data for m in reader.messages()] == list(map(float,
                                                                                   range(10)))
