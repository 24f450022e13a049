"""Damaged bags (issue 21, items 7-9): MCAP written with chunk and summary CRCs and checked on
read, `bag info --verify`, summary/metadata disagreements as warnings, sqlite3 damage found,
`process` with nothing processed is an error, `bag reindex` after a killed recording."""
import os
import shutil
import sqlite3
import struct
import zlib

import numpy as np
import pytest
import yaml

from dl_perception.core import rosmsg
from dl_perception.bags import BagReader, BagReadError, BagWriter
from dl_perception.cli import main as cli

FRAMES = 12


def _image_bag(path, storage="mcap", frames=FRAMES):
    """Frames of distinct noise (so any changed byte changes pixels), 1 MiB+ in several chunks."""
    rng = np.random.default_rng(0)
    with BagWriter(path, storage=storage) as writer:
        for i in range(frames):
            pixels = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
            stamp = 10**9 * (i + 1)
            writer.write("/camera/image_raw", stamp,
                         rosmsg.image(pixels, "rgb8", rosmsg.header(stamp, "cam")))
    return next(p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))


def _footer(data: bytes):
    """(summary_start, summary_offset_start, summary_crc, footer offset) of an MCAP file."""
    footer = len(data) - 8 - 29
    assert data[footer] == 0x02
    start, offset_start, crc = struct.unpack_from("<QQI", data, footer + 9)
    return start, offset_start, crc, footer


def test_written_mcap_carries_chunk_and_summary_crcs(tmp_path):
    from mcap.reader import make_reader
    from mcap.records import Chunk
    from mcap.stream_reader import StreamReader
    storage = _image_bag(tmp_path / "bag")
    with open(storage, "rb") as handle:
        chunks = [r for r in StreamReader(handle, emit_chunks=True).records
                  if isinstance(r, Chunk)]
    assert len(chunks) >= 2
    for chunk in chunks:
        assert chunk.uncompressed_crc != 0
        assert chunk.uncompressed_crc == zlib.crc32(chunk.data)
    data = storage.read_bytes()
    start, _, crc, footer = _footer(data)
    assert crc != 0 and crc == zlib.crc32(data[start:footer + 1 + 8 + 16])
    with open(storage, "rb") as handle:  # the independent reader validates them too
        assert len(list(make_reader(handle, validate_crcs=True).iter_messages())) == FRAMES


def test_a_flipped_byte_in_message_data_is_never_delivered(tmp_path, capsys):
    path = tmp_path / "bag"
    storage = _image_bag(path)
    data = bytearray(storage.read_bytes())
    position = len(data) // 3  # inside the pixels of a message in the first chunks
    data[position] ^= 0x55
    storage.write_bytes(bytes(data))
    with BagReader(path) as reader:
        with pytest.raises(BagReadError, match="CRC|checksum"):
            for message in reader.messages():
                reader.deserialize(message)
    assert cli(["bag", "info", str(path), "--verify"]) == 1
    assert "CRC" in capsys.readouterr().out


def test_a_flipped_byte_in_the_summary_is_a_warning_and_counts_come_from_the_records(tmp_path,
                                                                                        capsys):
    path = tmp_path / "bag"
    storage = _image_bag(path)
    data = bytearray(storage.read_bytes())
    start, offset_start, _, _ = _footer(bytes(data))
    for position in range(start, offset_start, max(1, (offset_start - start) // 7)):
        damaged = bytearray(data)
        damaged[position] ^= 0x01
        storage.write_bytes(bytes(damaged))
        with BagReader(path) as reader:
            assert any("summary" in p for p in reader.problems), position
            assert reader.topics["/camera/image_raw"].count == FRAMES
            assert len([reader.deserialize(m) for m in reader.messages()]) == FRAMES
    assert cli(["bag", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning:" in out and "summary" in out and f"Count: {FRAMES}" in out
    assert cli(["bag", "info", str(path), "--verify"]) == 1


def test_metadata_and_summary_disagreeing_is_a_warning(tmp_path, capsys):
    path = tmp_path / "bag"
    _image_bag(path)
    metadata_path = path / "metadata.yaml"
    metadata = yaml.safe_load(metadata_path.read_text())
    info = metadata["rosbag2_bagfile_information"]
    info["message_count"] += 5
    info["topics_with_message_count"][0]["message_count"] += 5
    metadata_path.write_text(yaml.safe_dump(metadata))
    assert cli(["bag", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning:" in out and "metadata.yaml" in out and str(FRAMES + 5) in out


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_a_bag_missing_its_last_byte_is_reported(tmp_path, capsys, storage):
    path = tmp_path / "bag"
    file = _image_bag(path, storage=storage)
    file.write_bytes(file.read_bytes()[:-1])
    assert cli(["bag", "info", str(path)]) == 0
    assert "warning:" in capsys.readouterr().out
    assert cli(["bag", "info", str(path), "--verify"]) == 1


def test_sqlite3_verify_runs_the_integrity_check_and_counts(tmp_path, capsys):
    path = tmp_path / "bag"
    file = _image_bag(path, storage="sqlite3")
    assert cli(["bag", "info", str(path), "--verify"]) == 0
    assert "verify: OK" in capsys.readouterr().out
    with sqlite3.connect(file) as db:
        db.execute("DELETE FROM messages WHERE id = 3")
    assert cli(["bag", "info", str(path), "--verify"]) == 1
    assert "metadata.yaml" in capsys.readouterr().out


def test_an_empty_metadata_yaml_is_a_warning_not_a_crash(tmp_path, capsys):
    path = tmp_path / "bag"
    _image_bag(path)
    (path / "metadata.yaml").write_text("")
    with BagReader(path) as reader:
        assert any("metadata.yaml" in p for p in reader.problems)
        assert reader.topics["/camera/image_raw"].count == FRAMES
    assert cli(["bag", "info", str(path)]) == 0
    assert "reindex" in capsys.readouterr().out


def _config(tmp_path):
    path = tmp_path / "perception.yaml"
    path.write_text(yaml.safe_dump({"dronet_node": {"ros__parameters": {"device": "cpu"}}}))
    return str(path)


def _small_frames_bag(path, spoil):
    """Three small frames; `spoil(index, image)` may damage each before it is written."""
    with BagWriter(path) as writer:
        for i in range(3):
            image = rosmsg.image(np.zeros((60, 80, 3), np.uint8), "rgb8",
                                 rosmsg.header(10**9 * (i + 1), "cam"))
            spoil(i, image)
            writer.write("/camera/image_raw", 10**9 * (i + 1), image)


def test_process_with_no_frame_processed_is_an_error(tmp_path, capsys):
    bag = tmp_path / "bag"
    _small_frames_bag(bag, lambda i, image: setattr(image, "encoding", "yuv422"))
    assert cli(["process", str(bag), "--config", _config(tmp_path),
                "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "error: nothing processed" in err and "encoding" in err


def test_process_over_a_bag_with_a_damaged_summary_processes_every_frame(tmp_path, capsys):
    path = tmp_path / "bag"
    storage = _image_bag(path)
    data = bytearray(storage.read_bytes())
    start, offset_start, _, _ = _footer(bytes(data))
    data[(start + offset_start) // 2] ^= 0x20
    storage.write_bytes(bytes(data))
    assert cli(["process", str(path), "--config", _config(tmp_path),
                "--out", str(tmp_path / "out")]) == 0
    with BagReader(tmp_path / "out") as out:
        assert out.message_count == 2 * FRAMES


def test_invalid_stamps_in_a_bag_are_dropped_by_process(tmp_path, capsys):
    bag = tmp_path / "bag"

    def overflow_second_stamp(index, image):
        if index == 1:
            image.header.stamp.nanosec = 2_000_000_000
    _small_frames_bag(bag, overflow_second_stamp)
    assert cli(["process", str(bag), "--config", _config(tmp_path),
                "--out", str(tmp_path / "out")]) == 0
    with BagReader(tmp_path / "out") as out:
        assert out.message_count == 4
    assert "invalid stamp" in capsys.readouterr().err


def _readable(path) -> list[bytes]:
    """The messages a damaged bag delivers before its damage."""
    delivered = []
    with BagReader(path) as reader:
        try:
            for message in reader.messages():
                delivered.append(message.data)
        except BagReadError:
            pass
    return delivered


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_reindex_rebuilds_what_a_killed_recording_lacks(tmp_path, capsys, storage):
    from rosbags.highlevel import AnyReader
    path = tmp_path / "bag"
    file = _image_bag(path, storage=storage, frames=30)
    os.remove(path / "metadata.yaml")
    if storage == "mcap":  # killed while writing: no summary, no footer, a record cut short
        data = file.read_bytes()
        file.write_bytes(data[:int(len(data) * 0.7)])
    else:  # sqlite3 keeps every committed row
        shutil.copy(file, tmp_path / "before.db3")
    readable = _readable(path)
    assert 0 < len(readable) <= 30
    with pytest.raises(Exception):
        AnyReader([path]).open()
    assert cli(["bag", "reindex", str(path)]) == 0
    assert "metadata.yaml" in capsys.readouterr().out
    with AnyReader([path]) as reader:
        assert [raw for _, _, raw in reader.messages()] == readable
    with BagReader(path) as reader:
        assert reader.fault is None and reader.message_count == len(readable)
    assert cli(["bag", "info", str(path), "--verify"]) == 0


def test_reindex_refuses_a_bag_that_has_metadata(tmp_path, capsys):
    path = tmp_path / "bag"
    _image_bag(path)
    assert cli(["bag", "reindex", str(path)]) == 1
    assert "error:" in capsys.readouterr().err
