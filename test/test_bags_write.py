"""Writing bags without ROS: the writer API (as the simulator uses it), what `ros2 bag info`
needs from metadata.yaml, an independent MCAP reader, and `bag from-images` on real TUM frames."""
import os
import shutil

import cv2
import numpy as np
import pytest
import yaml

from dl_perception.core import rosmsg
from dl_perception.bags import BagError, BagReader, BagWriter
from dl_perception.bags.from_images import images_to_bag, tum_frames
from dl_perception.cli import main as cli
from dl_perception.core.imaging import decode

CALIBRATION = {
    "image_width": 640, "image_height": 480, "camera_name": "tum_fr3",
    "camera_matrix": {"rows": 3, "cols": 3, "data": [535.4, 0, 320.1, 0, 539.2, 247.6, 0, 0, 1]},
    "distortion_model": "plumb_bob",
    "distortion_coefficients": {"rows": 1, "cols": 5, "data": [0.1, -0.2, 0.0, 0.0, 0.05]},
    "rectification_matrix": {"rows": 3, "cols": 3, "data": [1, 0, 0, 0, 1, 0, 0, 0, 1]},
    "projection_matrix": {"rows": 3, "cols": 4,
                          "data": [535.4, 0, 320.1, 0, 0, 539.2, 247.6, 0, 0, 0, 1, 0]},
}


@pytest.fixture(scope="module")
def tum(shared_data):
    return os.path.join(shared_data, "tum_fr3_long_office")


def _check_rosbag2_metadata(path):
    """The fields and types rosbag2's metadata reader (rosbag2_storage yaml.hpp) decodes."""
    info = yaml.safe_load(open(os.path.join(path, "metadata.yaml")))["rosbag2_bagfile_information"]
    assert info["version"] == 9 and isinstance(info["storage_identifier"], str)
    assert isinstance(info["duration"]["nanoseconds"], int)
    assert isinstance(info["starting_time"]["nanoseconds_since_epoch"], int)
    assert isinstance(info["message_count"], int)
    for name in ("compression_format", "compression_mode", "ros_distro"):
        assert isinstance(info[name], str)
    assert info["custom_data"] is None or isinstance(info["custom_data"], dict)
    for topic in info["topics_with_message_count"]:
        meta = topic["topic_metadata"]
        for name in ("name", "type", "serialization_format", "type_description_hash"):
            assert isinstance(meta[name], str)
        assert isinstance(meta["offered_qos_profiles"], list)  # v9: a sequence of profiles
        assert isinstance(topic["message_count"], int)
    for file in info["files"]:
        assert os.path.isfile(os.path.join(path, file["path"]))
        assert isinstance(file["message_count"], int)
    assert [os.path.basename(f) for f in info["relative_file_paths"]] == \
        [f["path"] for f in info["files"]]
    return info


def test_writer_api_raw_and_dataclass_messages(tmp_path):
    path = tmp_path / "out"
    value = rosmsg.serialize(rosmsg.float32(0.25))
    with BagWriter(path) as bag:
        bag.add_connection("/value", rosmsg.FLOAT32)
        for i in range(5):
            stamp = 10**18 + i * 10**8
            bag.write("/camera/image_raw", stamp, rosmsg.image(
                np.full((4, 6, 3), i, np.uint8), "rgb8", rosmsg.header(stamp, "cam")))
            bag.write("/value", stamp, value)
        with pytest.raises(BagError, match="add_connection"):
            bag.write("/undeclared", 0, value)
        with pytest.raises(BagError, match="already in"):
            bag.add_connection("/value", rosmsg.IMAGE)
    info = _check_rosbag2_metadata(path)
    assert info["message_count"] == 10 and info["storage_identifier"] == "mcap"
    assert info["duration"]["nanoseconds"] == 4 * 10**8
    with BagReader(path) as reader:
        images = [reader.deserialize(m) for m in reader.messages(["/camera/image_raw"])]
        raw = [m.data for m in reader.messages(["/value"])]
    assert [int(decode(im).pixels[0, 0, 0]) for im in images] == list(range(5))
    assert raw == [value] * 5
    with pytest.raises(BagError, match="exists already"):
        BagWriter(path)


def test_written_mcap_reads_with_the_independent_mcap_library(tmp_path):
    from mcap.reader import make_reader
    path = tmp_path / "out"
    with BagWriter(path) as bag:
        bag.write("/value", 123, rosmsg.float32(1.5))
        bag.write("/camera/camera_info", 124, rosmsg.camera_info(
            rosmsg.read_camera_calibration(_calibration_file(tmp_path)), rosmsg.header(124, "c")))
    with open(path / "out.mcap", "rb") as handle:
        reader = make_reader(handle)
        assert reader.get_header().profile == "ros2"
        summary = reader.get_summary()
        assert {s.name: s.encoding for s in summary.schemas.values()} == {
            "std_msgs/msg/Float32": "ros2msg", "sensor_msgs/msg/CameraInfo": "ros2msg"}
        assert {c.message_encoding for c in summary.channels.values()} == {"cdr"}
        messages = [(c.topic, m.log_time, m.data) for _, c, m in reader.iter_messages()]
    assert messages[0] == ("/value", 123, rosmsg.serialize(rosmsg.float32(1.5)))
    info = rosmsg.deserialize(messages[1][2], rosmsg.CAMERA_INFO)
    assert list(info.d) == [0.1, -0.2, 0.0, 0.0, 0.05] and info.k[2] == 320.1


def test_exception_inside_the_writer_keeps_a_closed_valid_bag(tmp_path):
    path = tmp_path / "out"
    with pytest.raises(RuntimeError), BagWriter(path, storage="sqlite3") as bag:
        for i in range(3):
            bag.write("/value", i, rosmsg.float32(i))
        raise RuntimeError("fault in the producer")
    _check_rosbag2_metadata(path)
    with BagReader(path) as reader:
        assert [reader.deserialize(m).data for m in reader.messages()] == [0.0, 1.0, 2.0]


def _calibration_file(tmp_path):
    path = tmp_path / "calib.yaml"
    path.write_text(yaml.safe_dump(CALIBRATION))
    return str(path)


def test_from_images_tum_round_trip_is_exact(tum, tmp_path):
    out = tmp_path / "tum_bag"
    result = images_to_bag(tum, str(out), tum_list="rgb.txt",
                           calibration=_calibration_file(tmp_path))
    frames = tum_frames(os.path.join(tum, "rgb.txt"))
    assert result.frames == len(frames) == 17 and not result.dropped
    _check_rosbag2_metadata(out)
    with BagReader(out) as reader:
        images = list(reader.messages(["/camera/image_raw"]))
        infos = [reader.deserialize(m) for m in reader.messages(["/camera/camera_info"])]
        for (stamp, file), message in zip(frames, images):
            image = reader.deserialize(message)
            assert message.log_time == stamp == rosmsg.stamp_ns(image.header.stamp)
            assert image.header.frame_id == "camera_optical_frame"
            expected = cv2.cvtColor(cv2.imread(file), cv2.COLOR_BGR2RGB)
            decoded = decode(image)
            assert decoded.encoding == "rgb8"
            np.testing.assert_array_equal(decoded.pixels, expected)
    assert frames[0][0] == 1341847980722988000  # exact nanoseconds from the text
    assert len(infos) == 17 and infos[0].width == 640 and infos[0].k[0] == 535.4
    assert list(infos[0].p[:3]) == [535.4, 0.0, 320.1] and infos[0].distortion_model == \
        "plumb_bob"


def test_from_images_rate_compressed_and_mono(tum, tmp_path):
    folder = os.path.join(tum, "rgb")
    files = sorted(os.listdir(folder))
    out = tmp_path / "compressed"
    images_to_bag(folder, str(out), rate_hz=4.0, start_ns=5 * 10**9, compressed=True)
    with BagReader(out) as reader:
        messages = list(reader.messages())
        first = reader.deserialize(messages[0])
    assert [m.topic for m in messages] == ["/camera/image_raw/compressed"] * 17
    assert [m.log_time for m in messages[:3]] == [5 * 10**9, 5_250_000_000, 5_500_000_000]
    assert first.format == "rgb8; png compressed bgr8"
    assert bytes(first.data) == open(os.path.join(folder, files[0]), "rb").read()  # as stored
    out = tmp_path / "mono"
    images_to_bag(folder, str(out), rate_hz=30.0, start_ns=0, encoding="mono8")
    with BagReader(out) as reader:
        image = reader.deserialize(next(reader.messages()))
    expected = cv2.imread(os.path.join(folder, files[0]), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(decode(image).pixels, expected)
    assert image.encoding == "mono8"


def test_from_images_bad_inputs(tum, tmp_path):
    folder = tmp_path / "frames"
    shutil.copytree(os.path.join(tum, "rgb"), folder)
    (folder / "9999999999.999999.png").write_bytes(b"\x89PNG broken")
    dropped = []
    result = images_to_bag(str(folder), str(tmp_path / "a"), rate_hz=10.0, start_ns=0,
                           on_drop=lambda path, why: dropped.append(path))
    assert result.frames == 17 and len(dropped) == 1 and dropped[0].endswith("999999.png")
    small = dict(CALIBRATION, image_width=320)
    calib = tmp_path / "small.yaml"
    calib.write_text(yaml.safe_dump(small))
    with pytest.raises(BagError, match="describes 320x480"):
        images_to_bag(str(folder), str(tmp_path / "b"), rate_hz=10.0, calibration=str(calib))
    with pytest.raises(ValueError, match="--rate HZ or --tum"):
        images_to_bag(str(folder), str(tmp_path / "c"))
    calib.write_text("image_width: 3\n")
    with pytest.raises(ValueError, match="camera_calibration"):
        images_to_bag(str(folder), str(tmp_path / "d"), rate_hz=1.0, calibration=str(calib))


def test_from_images_command(tum, tmp_path, capsys):
    out = str(tmp_path / "cli_bag")
    assert cli(["bag", "from-images", tum, "--tum", os.path.join(tum, "rgb.txt"), "--out", out,
                "--camera-info", _calibration_file(tmp_path), "--storage", "sqlite3"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: 17 frames over 16.152 s" in printed
    assert "/camera/image_raw (17), /camera/camera_info (17)" in printed
    assert cli(["bag", "info", out]) == 0
    assert "Count: 17" in capsys.readouterr().out
