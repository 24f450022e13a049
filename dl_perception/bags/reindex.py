"""`dl-perception bag reindex`: make a bag whose recorder was killed (kill -9, power loss) whole
again, as `ros2 bag reindex` does: rosbag2 readers (rosbags' AnyReader, `ros2 bag play`) need a
metadata.yaml, which a recorder writes only when it stops cleanly.

sqlite3 keeps every committed row, so only metadata.yaml is written. An MCAP file cut short has
no summary and ends inside a record: the messages before the damage are copied into a complete
file (chunk and summary CRCs, index, footer) under the original name, and the damaged original is
kept beside it as `<name>.damaged`.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from rosbags.rosbag2.metadata import dump_qos_v9

from . import mcap_scan
from .reader import BagError, BagReader, BagReadError, read_bag_metadata
from .writer import METADATA_VERSION, BagWriter


@dataclass
class ReindexResult:
    storage_file: Path
    messages: int
    kept_damaged: Path | None  # the original of a repaired MCAP file


def _copy_readable(reader: BagReader, out_dir: Path) -> int:
    """Every message before the damage into a fresh bag at out_dir, topics with their
    definitions and QoS; returns the number copied."""
    copied = 0
    with BagWriter(out_dir, storage="mcap") as writer:
        for topic, info in reader.topics.items():
            writer.add_connection(topic, info.msgtype, qos=info.qos, typestore=reader.typestore)
        try:
            for message in reader.messages():
                writer.write(message.topic, message.log_time, message.data)
                copied += 1
        except BagReadError:
            pass  # the damage: what came before it is copied
    return copied


def _metadata(reader: BagReader, file: Path) -> dict:
    """metadata.yaml content (version 9, as rosbag2 writes from Jazzy on) for one storage file."""
    start, count = reader.start_ns, reader.message_count
    duration = reader.end_ns - start if count else 0
    topics = []
    for topic, info in reader.topics.items():
        connection = info.connections[0]
        topics.append({"topic_metadata": {
            "name": topic, "type": info.msgtype,
            "serialization_format": info.serialization_format,
            "offered_qos_profiles": dump_qos_v9(info.qos),
            "type_description_hash": connection.digest or ""}, "message_count": info.count})
    return {"rosbag2_bagfile_information": {
        "version": METADATA_VERSION, "storage_identifier": reader.storage,
        "relative_file_paths": [file.name], "duration": {"nanoseconds": duration},
        "starting_time": {"nanoseconds_since_epoch": start}, "message_count": count,
        "topics_with_message_count": topics, "compression_format": "",
        "compression_mode": "", "files": [{
            "path": file.name, "starting_time": {"nanoseconds_since_epoch": start},
            "duration": {"nanoseconds": duration}, "message_count": count}],
        "custom_data": None, "ros_distro": reader.ros_distro or "rosbags"}}


def reindex(path) -> ReindexResult:
    path = Path(path)
    if not path.is_dir():
        raise BagError(f"{path} is not a bag directory (reindex writes its metadata.yaml)")
    metadata, _ = read_bag_metadata(path)
    if metadata:
        raise BagError(f"{path} has a usable metadata.yaml; move it away to rebuild it")
    files = sorted(p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
    if len(files) != 1:
        raise BagError(f"{path} holds {len(files)} storage files; reindex takes one")
    file, kept = files[0], None
    if file.suffix == ".mcap" and mcap_scan.summary_damage(str(file)):
        with BagReader(file) as reader, tempfile.TemporaryDirectory(dir=path) as scratch:
            repaired_dir = Path(scratch) / "repaired"
            _copy_readable(reader, repaired_dir)
            repaired = next(repaired_dir.glob("*.mcap"))
            kept = file.with_name(file.name + ".damaged")
            file.rename(kept)
            shutil.move(str(repaired), str(file))
    with BagReader(file) as reader:
        if reader.fault is not None:
            raise BagError(f"{file} is still damaged after reindexing: {reader.fault}")
        content = _metadata(reader, file)
        messages = reader.message_count
    target = path / "metadata.yaml"
    partial = target.with_suffix(".yaml.tmp")
    partial.write_text(yaml.safe_dump(content, sort_keys=False))
    partial.replace(target)
    return ReindexResult(file, messages, kept)
