"""Writing rosbag2 bags (mcap by default, or sqlite3) with a metadata.yaml that `ros2 bag info`
and `ros2 bag play` read, on top of `rosbags`, without ROS.

    with BagWriter("out_bag") as bag:                       # creates out_bag/
        bag.add_connection("/camera/image_raw", "sensor_msgs/msg/Image")
        bag.write("/camera/image_raw", stamp_ns, image)     # a rosmsg dataclass...
        bag.write("/odom", stamp_ns, raw_cdr_bytes)         # ...or CDR bytes of a known topic

Leaving the `with` block closes the bag even when an exception ends it, so every message
written before a fault stays in a complete, readable bag (footer, index and metadata.yaml).
"""
from __future__ import annotations

import struct
import zlib
from collections import Counter
from pathlib import Path

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.errors import WriterError
from rosbags.rosbag2.storage_mcap import McapWriter

from ..core import rosmsg
from .reader import BagError

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
METADATA_VERSION = 9  # what rosbag2 writes from Jazzy on
# offsets in an MCAP chunk record (opcode, length, start and end time, uncompressed size) and
# footer (opcode, length, summary start, summary offset start) of the CRC fields
CHUNK_CRC_OFFSET = 1 + 8 + 8 + 8 + 8
FOOTER_CRC_OFFSET = 1 + 8 + 8 + 8
MCAP_MAGIC = b"\x89MCAP0\r\n"


class ChecksummedMcapWriter(McapWriter):
    """rosbags' MCAP storage, with the CRC32 of every chunk's records and of the summary section
    filled in (rosbags leaves them 0, "not computed"): a flipped byte in message data or in the
    index is then found by any reader instead of being delivered."""

    def close_chunk(self) -> None:
        crc = zlib.crc32(self.chunk.bio.getbuffer())
        start = self.bio.tell()
        super().close_chunk()
        end = self.bio.tell()
        self.bio.seek(start + CHUNK_CRC_OFFSET)
        self.bio.write(struct.pack("<I", crc))
        self.bio.seek(end)

    def close(self, version: int, metadata: str) -> None:
        super().close(version, metadata)
        with open(self.path, "r+b") as handle:
            footer = handle.seek(-(len(MCAP_MAGIC) + 1 + 8 + 20), 2)
            handle.seek(footer + 9)
            summary_start = struct.unpack("<Q", handle.read(8))[0]
            crc = 0
            handle.seek(summary_start)
            remaining = footer + FOOTER_CRC_OFFSET - summary_start
            while remaining > 0:
                block = handle.read(min(remaining, 1 << 20))
                crc = zlib.crc32(block, crc)
                remaining -= len(block)
            handle.seek(footer + FOOTER_CRC_OFFSET)
            handle.write(struct.pack("<I", crc))


class _Writer(Writer):
    STORAGE_PLUGINS = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: ChecksummedMcapWriter}


class BagWriter:
    def __init__(self, path, storage: str = "mcap", typestore=rosmsg.TYPESTORE):
        if storage not in STORAGES:
            raise BagError(f"storage must be one of {', '.join(STORAGES)}, got '{storage}'")
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path} exists already; choose another output or delete it")
        self.storage = storage
        self.typestore = typestore
        self.counts: Counter[str] = Counter()
        self._connections: dict[str, object] = {}
        self._writer = _Writer(self.path, version=METADATA_VERSION,
                              storage_plugin=STORAGES[storage])
        self._writer.open()

    def add_connection(self, topic: str, msgtype: str, qos=(), typestore=None) -> None:
        """Declare a topic. `typestore` gives the definition stored for msgtype (default: the
        writer's; pass a BagReader's typestore to copy a topic with its original definition).
        `qos`: rosbags Qos profiles of the publishers, kept for replay."""
        existing = self._connections.get(topic)
        if existing is not None:
            if existing.msgtype != msgtype:
                raise BagError(f"{topic} is already in {self.path} as {existing.msgtype}, "
                               f"not {msgtype}")
            return
        store = typestore or self.typestore
        if msgtype not in store.fielddefs:
            raise BagError(f"no message definition for {msgtype} (topic {topic})")
        try:
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=store, offered_qos_profiles=list(qos))
        except WriterError as error:
            raise BagError(f"{self.path}: {error}") from None

    def write(self, topic: str, stamp_ns: int, message) -> None:
        """`message`: a dataclass of the writer's typestore (its topic is declared on first use)
        or CDR bytes for a topic declared with add_connection."""
        if isinstance(message, (bytes, bytearray, memoryview)):
            if topic not in self._connections:
                raise BagError(f"add_connection('{topic}', TYPE) before writing raw bytes")
            data = message
        else:
            self.add_connection(topic, message.__msgtype__)
            data = self.typestore.serialize_cdr(message, message.__msgtype__)
        if self._writer is None:
            raise BagError(f"{self.path} is closed")
        self._writer.write(self._connections[topic], int(stamp_ns), data)
        self.counts[topic] += 1

    @property
    def topics(self) -> dict[str, str]:
        return {topic: connection.msgtype for topic, connection in self._connections.items()}

    def close(self) -> None:
        """Finish the file (footer, index) and write metadata.yaml. Idempotent."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
