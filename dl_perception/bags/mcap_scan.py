"""A sequential MCAP record scanner that knows the byte offset of every record.

rosbags reads MCAP files through their summary and chunk indexes, which a recording that was
killed never wrote (no footer), and its errors carry no position. This scanner walks the data
section record by record instead, so a truncated recording can still be read up to its last
complete record, and a damaged one is reported with the byte offset of the bad record.
Record layout: the MCAP specification (opcode u8, length u64, content), little endian.
"""
from __future__ import annotations

import mmap
import os
import struct
from binascii import crc32
from dataclasses import dataclass
from typing import Iterator

try:  # Python 3.14+
    from compression import zstd
except ImportError:  # rosbags depends on the backport before 3.14
    from backports import zstd

MAGIC = b"\x89MCAP0\r\n"
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_DATA_END = \
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0F


class McapFault(Exception):
    def __init__(self, offset: int, problem: str):
        super().__init__(f"{problem} at byte {offset}")
        self.offset = offset
        self.problem = problem


@dataclass
class Schema:
    id: int
    name: str
    encoding: str
    data: bytes


@dataclass
class Channel:
    id: int
    schema_id: int
    topic: str
    message_encoding: str
    metadata: dict


@dataclass
class Message:
    channel_id: int
    log_time: int
    data: bytes
    offset: int  # of the message record, or of the chunk holding it


class _Fields:
    """Reads the fields of one record's content."""

    def __init__(self, content: bytes):
        self.content = content
        self.pos = 0

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.content):
            raise ValueError("record content is shorter than its fields")
        value = self.content[self.pos:self.pos + size]
        self.pos += size
        return value

    def uint(self, fmt: str) -> int:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.uint("<I")).decode("utf-8")

    def rest(self) -> bytes:
        return self.content[self.pos:]


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    if compression == "":
        return data
    if compression == "zstd":
        return zstd.decompress(data)
    if compression == "lz4":
        from lz4.frame import decompress
        return decompress(data)
    raise ValueError(f"unsupported chunk compression '{compression}'")


def _records(buffer, base: int, overrun: str) -> Iterator[tuple[int, int, bytes]]:
    """(offset, opcode, content) of the records in a chunk's record buffer; `base` is the file
    offset of the buffer (its chunk's offset when the chunk is compressed)."""
    pos = 0
    while pos < len(buffer):
        if pos + 9 > len(buffer):
            raise McapFault(base + pos, overrun)
        opcode, length = struct.unpack_from("<BQ", buffer, pos)
        if pos + 9 + length > len(buffer):
            raise McapFault(base + pos, overrun)
        yield base + pos, opcode, buffer[pos + 9:pos + 9 + length]
        pos += 9 + length


def _parse(opcode: int, content: bytes, offset: int):
    fields = _Fields(content)
    if opcode == OP_SCHEMA:
        return Schema(fields.uint("<H"), fields.string(), fields.string(),
                      fields.take(fields.uint("<I")))
    if opcode == OP_CHANNEL:
        channel_id, schema_id = fields.uint("<H"), fields.uint("<H")
        topic, encoding = fields.string(), fields.string()
        metadata_fields = _Fields(fields.take(fields.uint("<I")))
        metadata = {}
        while metadata_fields.pos < len(metadata_fields.content):
            key = metadata_fields.string()
            metadata[key] = metadata_fields.string()
        return Channel(channel_id, schema_id, topic, encoding, metadata)
    if opcode == OP_MESSAGE:
        channel_id = fields.uint("<H")
        fields.take(4)  # sequence
        log_time = fields.uint("<Q")
        fields.take(8)  # publish time
        return Message(channel_id, log_time, fields.rest(), offset)
    return None


def scan(path: str) -> Iterator[Schema | Channel | Message]:
    """Schemas, channels and messages of an MCAP file in file order. Raises McapFault at the
    first record that is truncated or damaged; everything before it has been yielded."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size < len(MAGIC):
            raise McapFault(0, "not an MCAP file (shorter than its magic)")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield from _scan(data)


def _scan(data) -> Iterator[Schema | Channel | Message]:
    if data[:8] != MAGIC:
        raise McapFault(0, "not an MCAP file (bad magic)")
    size = len(data)
    pos = 8
    while pos < size:
        if pos + 9 > size:
            raise McapFault(pos, f"file ends inside a record header ({size} bytes)")
        opcode, length = struct.unpack_from("<BQ", data, pos)
        if opcode in (OP_FOOTER, OP_DATA_END):
            return
        end = pos + 9 + length
        truncated = end > size
        try:
            if opcode == OP_CHUNK:
                yield from _chunk(data, pos, min(end, size), truncated)
            elif truncated:
                raise McapFault(pos, f"file ends inside a record of {length} bytes "
                                     f"(file has {size} bytes)")
            else:
                content = data[pos + 9:end]
                if opcode == OP_HEADER and _Fields(content).string() != "ros2":
                    raise McapFault(pos, "MCAP profile is not 'ros2'")
                record = _parse(opcode, content, pos)
                if record is not None:
                    yield record
        except (ValueError, UnicodeDecodeError, struct.error, zstd.ZstdError) as error:
            raise McapFault(pos, f"damaged record (opcode 0x{opcode:02x}: {error})") from None
        pos = end


def _chunk(data, pos: int, end: int, truncated: bool) -> Iterator[Schema | Channel | Message]:
    fields = _Fields(data[pos + 9:end])
    fields.take(16)  # message start and end time
    size, crc = fields.uint("<Q"), fields.uint("<I")
    compression = fields.string()
    length = fields.uint("<Q")
    start = pos + 9 + fields.pos
    if truncated:
        if compression:
            raise McapFault(pos, f"file ends inside a {compression}-compressed chunk "
                                 f"(file has {len(data)} bytes)")
        # an uncompressed chunk keeps every record that was completely written
        for offset, opcode, content in _records(data[start:end], start,
                                                f"file ends inside a record (file has "
                                                f"{len(data)} bytes)"):
            record = _parse(opcode, content, offset)
            if record is not None:
                yield record
        raise McapFault(end, "file ends inside a chunk")
    records = _decompress(data[start:start + length], compression, size)
    if len(records) != size or (crc and crc32(records) != crc):
        raise McapFault(pos, "chunk is damaged (size or CRC mismatch)")
    base = start if not compression else pos
    for offset, opcode, content in _records(records, base, "record runs past the end of its chunk"):
        record = _parse(opcode, content, offset)
        if record is not None:
            yield record


FOOTER_LENGTH = 20  # summary start u64, summary offset start u64, summary CRC u32
FOOTER_RECORD = 1 + 8 + FOOTER_LENGTH


def summary_damage(path: str) -> str | None:
    """What is wrong with an MCAP file's end, from its footer alone: no closing magic (cut
    short), a damaged footer record, a footer pointing outside the file, or a summary section
    that does not match its CRC (where the writer filled one in). None when sound, or when the
    file has no summary to check."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size < 2 * len(MAGIC) + FOOTER_RECORD:
            return f"file of {size} bytes is too short for an MCAP header and footer"
        footer = size - len(MAGIC) - FOOTER_RECORD
        handle.seek(footer)
        tail = handle.read(FOOTER_RECORD + len(MAGIC))
        if tail[-len(MAGIC):] != MAGIC:
            return "the file does not end with MCAP's closing magic (cut short or damaged)"
        opcode, length = struct.unpack_from("<BQ", tail)
        if opcode != OP_FOOTER or length != FOOTER_LENGTH:
            return "the footer record is damaged"
        summary_start, summary_offset_start, summary_crc = struct.unpack_from("<QQI", tail, 9)
        if summary_start == 0:
            return None
        if not len(MAGIC) <= summary_start <= footer or \
                (summary_offset_start and not summary_start <= summary_offset_start <= footer):
            return "the footer points outside the file"
        if summary_crc:
            handle.seek(summary_start)
            crc, remaining = 0, footer + 1 + 8 + 16 - summary_start
            while remaining > 0:
                block = handle.read(min(remaining, 1 << 20))
                crc = crc32(block, crc)
                remaining -= len(block)
            if crc != summary_crc:
                return "the summary section is damaged (CRC mismatch)"
    return None


OP_STATISTICS = 0x0B


def summary_counts(path: str) -> dict[str, int] | None:
    """Messages per topic as the summary section's statistics record them (None when the file
    has no summary or no statistics). Call after `summary_damage` found nothing."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        footer = size - len(MAGIC) - FOOTER_RECORD
        handle.seek(footer + 9)
        summary_start, summary_offset_start = struct.unpack("<QQ", handle.read(16))
        if summary_start == 0:
            return None
        handle.seek(summary_start)
        summary = handle.read((summary_offset_start or footer) - summary_start)
    topics, counts = {}, None
    try:
        for offset, opcode, content in _records(summary, summary_start, "damaged summary"):
            if opcode == OP_CHANNEL:
                channel = _parse(opcode, content, offset)
                topics[channel.id] = channel.topic
            elif opcode == OP_STATISTICS:
                fields = _Fields(content)
                fields.take(8 + 2 + 4 + 4 + 4 + 4 + 8 + 8)
                entries = _Fields(fields.take(fields.uint("<I")))
                counts = {}
                while entries.pos < len(entries.content):
                    channel_id = entries.uint("<H")
                    counts[channel_id] = entries.uint("<Q")
    except (McapFault, ValueError, UnicodeDecodeError, struct.error):
        return None
    if counts is None:
        return None
    per_topic: dict[str, int] = {}
    for channel_id, count in counts.items():
        topic = topics.get(channel_id, f"channel {channel_id}")
        per_topic[topic] = per_topic.get(topic, 0) + count
    return per_topic


def first_fault(path: str) -> McapFault | None:
    """Where `scan` stops on this file, or None when every record is sound."""
    try:
        for _ in scan(path):
            pass
    except McapFault as fault:
        return fault
    return None
