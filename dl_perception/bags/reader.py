"""Reading rosbag2 recordings (sqlite3 and mcap storage, ROS 2 Humble to Kilted) on top of
`rosbags`, without ROS.

Message definitions embedded in the bag (mcap schemas, the sqlite3 message_definitions table)
are registered in the bag's typestore and win over the built-in ones; types the bag does not
define come from the typestore of the bag's ROS distribution (metadata `ros_distro`, or Humble
for metadata version 5 and older, which embed nothing), else Kilted's.

A truncated or damaged file is reported as a BagReadError naming the file and the position.
An MCAP file without a readable footer or index (a recording that was killed) is read by
scanning its records: every message before the damage is delivered, then the error is raised.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import yaml
from rosbags.interfaces import (Connection, ConnectionExtRosbag2, MessageDefinition,
                                MessageDefinitionFormat)
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.metadata import parse_qos
from rosbags.typesys import Stores, TypesysError, get_types_from_idl, get_types_from_msg, \
    get_typestore
from rosbags.typesys.store import Typestore

from . import mcap_scan

DISTRO_STORES = {
    "foxy": Stores.ROS2_FOXY, "galactic": Stores.ROS2_GALACTIC, "humble": Stores.ROS2_HUMBLE,
    "iron": Stores.ROS2_IRON, "jazzy": Stores.ROS2_JAZZY, "kilted": Stores.ROS2_KILTED,
}
DEFAULT_DISTRO = "kilted"
IDL_SEPARATOR = "=" * 80 + "\n"


class BagError(ValueError):
    """A bag that cannot be read or written as asked."""


class BagReadError(BagError):
    """A damaged or truncated bag; names the file and where reading stopped."""

    def __init__(self, path, problem: str, position: str | None = None):
        self.path = str(path)
        self.problem = problem
        self.position = position
        super().__init__(f"{path}: {problem}" + (f" (at {position})" if position else ""))


class MessageDecodeError(BagError):
    """One message whose bytes do not deserialize with its type's definition."""


@dataclass
class TopicInfo:
    name: str
    msgtype: str
    count: int
    serialization_format: str = "cdr"
    qos: list = field(default_factory=list)  # rosbags Qos of the recorded publishers
    known: bool = True  # the typestore has a definition for msgtype
    connections: list = field(default_factory=list, repr=False)


class BagMessage(NamedTuple):
    topic: str
    msgtype: str
    log_time: int  # ns, when the recorder received it
    data: bytes  # CDR with its encapsulation header, as on the wire


def read_bag_metadata(path: Path) -> tuple[dict, str | None]:
    """The `rosbag2_bagfile_information` of a bag directory's metadata.yaml ({} when there is
    none), and what is wrong with it when it is there but unusable (then {} too: the storage
    files are read without it)."""
    metadata = path / "metadata.yaml"
    if not (path.is_dir() and metadata.is_file()):
        return {}, None
    try:
        info = yaml.safe_load(metadata.read_text())["rosbag2_bagfile_information"]
        if not isinstance(info, dict) or not all(
                isinstance(name, str) for name in info["relative_file_paths"]):
            raise TypeError("rosbag2_bagfile_information is not a mapping with file names")
        return info, None
    except (yaml.YAMLError, KeyError, TypeError, ValueError, UnicodeDecodeError) as error:
        return {}, (f"{metadata} is unusable ({type(error).__name__}: {error}); reading the "
                    "storage files without it (`dl-perception bag reindex` rebuilds it)")


def storage_files(path: Path) -> list[Path]:
    """The storage files of a bag directory, bare .mcap or .db3 file."""
    if path.is_file():
        return [path]
    info, _ = read_bag_metadata(path)
    if info:
        return [path / Path(name).name for name in info["relative_file_paths"]]
    files = sorted(p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
    if not files:
        raise BagReadError(path, "no usable metadata.yaml and no .mcap or .db3 file")
    return files


def _sqlite_truncation(path: Path) -> str | None:
    """For a sqlite3 file shorter than its header says: how much is missing."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(100)
        size = os.path.getsize(path)
    except OSError:
        return None
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return f"byte 0 of {size}: not an SQLite database"
    page_size = struct.unpack(">H", head[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    pages = struct.unpack(">I", head[28:32])[0]
    expected = page_size * pages
    if pages and size < expected:
        return f"byte {size}: file ends there, its header declares {expected} bytes"
    return None


def sqlite_counts(path: Path) -> dict[str, int] | None:
    """Messages per topic in a rosbag2 sqlite3 file (None when it cannot be queried)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT topics.name, count(messages.id) FROM topics LEFT JOIN "
                              "messages ON messages.topic_id = topics.id GROUP BY topics.id")
            counts: dict[str, int] = {}
            for name, count in rows:
                counts[name] = counts.get(name, 0) + count
            return counts
    except sqlite3.Error:
        return None


def _embedded_types(connections: Iterable[Connection]) -> dict:
    types: dict = {}
    for connection in connections:
        msgdef = connection.msgdef
        if msgdef.format == MessageDefinitionFormat.MSG and msgdef.data:
            types.update(get_types_from_msg(msgdef.data, connection.msgtype))
        elif msgdef.format == MessageDefinitionFormat.IDL and msgdef.data:
            for block in msgdef.data.split(IDL_SEPARATOR):
                if block.startswith("IDL: "):
                    block = block.split("\n", 1)[1]
                if block.strip():
                    types.update(get_types_from_idl(block))
    return types


def build_typestore(connections: list[Connection], distro: str) -> tuple[Typestore, list[str]]:
    """The distro's types with the bag's embedded definitions registered over them; also the
    problems met (definitions that do not parse are reported and the built-in ones used)."""
    base = get_typestore(DISTRO_STORES.get(distro, DISTRO_STORES[DEFAULT_DISTRO]))
    problems = []
    embedded = Typestore()
    for connection in connections:
        try:
            embedded.register(_embedded_types([connection]))
        except (TypesysError, ValueError, KeyError, IndexError) as error:
            problems.append(f"definition of {connection.msgtype} embedded for "
                            f"{connection.topic} is not usable ({error}); using the built-in one")
    store = Typestore()
    store.fielddefs.update(base.fielddefs)
    store.types.update(base.types)
    store.fielddefs.update(embedded.fielddefs)
    store.types.update(embedded.types)
    return store, problems


class BagReader:
    """Open a rosbag2 bag (directory with metadata.yaml, bare .mcap or .db3 file)."""

    def __init__(self, path, distro: str | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"bag not found: {path}")
        self.files = storage_files(self.path)
        self.metadata, metadata_problem = read_bag_metadata(self.path)
        opening_problems = [metadata_problem] if metadata_problem else []
        self.fault: BagReadError | None = None  # damage found while opening (scan mode)
        self._scanned: dict[int, tuple[str, str]] | None = None  # scan mode: channel -> topic
        self._scan_problems: list[str] = []
        self._reader = None
        target = self.path if self.path.is_file() or self.metadata else self.files[0]
        if target is not self.path and len(self.files) > 1:
            raise BagReadError(self.path, "several storage files and no metadata.yaml")
        # an MCAP whose footer or summary is damaged is read from its records, not its index
        summary_damage = [f"{file.name}: {problem}; reading it record by record"
                          for file in self.files if file.suffix == ".mcap"
                          and (problem := mcap_scan.summary_damage(str(file)))]
        opening_problems += summary_damage
        try:
            if summary_damage:
                raise BagReadError(self.path, "; ".join(summary_damage))
            reader = Reader(target)
            reader.open()
            self._reader = reader
            connections = list(reader.connections)
            self.start_ns = reader.start_time if reader.message_count else 0
            self.end_ns = reader.end_time - 1 if reader.message_count else 0
            self.message_count = reader.message_count
            self.ros_distro = reader.ros_distro or self.metadata.get("ros_distro") or ""
        except Exception as error:  # rosbags and sqlite errors alike
            if self.storage != "mcap":
                raise self._open_error(error) from None
            connections = self._scan_open()
        self.storage_connections = connections
        distro = distro or self._distro()
        self.typestore, typestore_problems = build_typestore(connections, distro)
        self.problems = opening_problems + self._scan_problems + typestore_problems
        self.distro = distro
        self.topics = self._topics(connections)
        self.problems += self._metadata_disagreements()
        if self.fault is None and self.storage == "sqlite3":
            for file in self.files:
                if position := _sqlite_truncation(file):
                    self.fault = BagReadError(file, "the file is shorter than its header "
                                                    "declares (cut short)", position)

    # --- opening -------------------------------------------------------------------------------
    @property
    def storage(self) -> str:
        return "mcap" if self.files[0].suffix == ".mcap" else "sqlite3"

    def storage_counts(self) -> dict[str, int] | None:
        """Messages per topic as the storage files record them, independent of metadata.yaml
        (what a record scan found, the MCAP summary statistics, the sqlite3 rows); None where
        the storage records no counts."""
        if self._scanned is not None:
            return {topic: info.count for topic, info in self.topics.items()}
        counts: dict[str, int] = {}
        for file in self.files:
            if file.suffix == ".mcap":
                found = mcap_scan.summary_counts(str(file))
            else:
                found = sqlite_counts(file)
            if found is None:
                return None
            for topic, count in found.items():
                counts[topic] = counts.get(topic, 0) + count
        return counts

    def _metadata_disagreements(self) -> list[str]:
        """Where metadata.yaml and the storage disagree on what the bag holds."""
        held = self.storage_counts() if self.metadata else None
        if held is None:
            return []
        problems = []
        declared = self.metadata.get("message_count")
        if isinstance(declared, int) and declared != sum(held.values()):
            problems.append(f"metadata.yaml says {declared} messages, the storage holds "
                            f"{sum(held.values())}")
        for entry in self.metadata.get("topics_with_message_count") or []:
            try:
                topic = entry["topic_metadata"]["name"]
                count = int(entry["message_count"])
            except (KeyError, TypeError, ValueError):
                problems.append(f"metadata.yaml has a malformed topic entry: {str(entry)[:80]}")
                continue
            if count != held.get(topic, 0):
                problems.append(f"metadata.yaml says {count} messages on {topic}, the storage "
                                f"holds {held.get(topic, 0)}")
        return problems

    def _distro(self) -> str:
        if self.ros_distro in DISTRO_STORES:
            return self.ros_distro
        version = self.metadata.get("version")
        if version is not None and int(version) <= 5:
            return "humble"  # metadata v5 (Humble and older) bags embed no definitions
        return DEFAULT_DISTRO

    def _open_error(self, error: Exception) -> BagReadError:
        file = self.files[0] if len(self.files) == 1 else self.path
        position = None
        for candidate in self.files:
            if candidate.suffix == ".db3" and (position := _sqlite_truncation(candidate)):
                file = candidate
                break
        return BagReadError(file, f"cannot open: {error}", position)

    def _scan_open(self) -> list[Connection]:
        """MCAP without a usable index: take channels and counts from a record scan."""
        schemas, channels, counts = {}, {}, {}
        start, end, total = None, 0, 0
        for file in self.files:
            try:
                for record in mcap_scan.scan(str(file)):
                    if isinstance(record, mcap_scan.Schema):
                        schemas[record.id] = record
                    elif isinstance(record, mcap_scan.Channel):
                        channels[record.id] = record
                    else:
                        counts[record.channel_id] = counts.get(record.channel_id, 0) + 1
                        start = record.log_time if start is None else min(start, record.log_time)
                        end = max(end, record.log_time)
                        total += 1
            except mcap_scan.McapFault as fault:
                self.fault = BagReadError(file, fault.problem, f"byte {fault.offset}")
                break
        if not channels and self.fault is not None:
            raise self.fault
        connections = []
        for channel in channels.values():
            schema = schemas.get(channel.schema_id)
            kind = {"ros2msg": MessageDefinitionFormat.MSG, "ros2idl": MessageDefinitionFormat.IDL}
            try:
                msgdef = MessageDefinition(kind.get(schema.encoding, MessageDefinitionFormat.NONE),
                                           schema.data.decode()) if schema else \
                    MessageDefinition(MessageDefinitionFormat.NONE, "")
            except UnicodeDecodeError:
                self._scan_problems.append(f"the definition of {schema.name} for "
                                           f"{channel.topic} is not text; using the built-in one")
                msgdef = MessageDefinition(MessageDefinitionFormat.NONE, "")
            qos = parse_qos(channel.metadata.get("offered_qos_profiles", "") or [])
            connections.append(Connection(
                channel.id, channel.topic, schema.name if schema else "", msgdef,
                channel.metadata.get("topic_type_hash", ""), counts.get(channel.id, 0),
                ConnectionExtRosbag2(channel.message_encoding, qos), None))
        self._scanned = {c.id: (c.topic, c.msgtype) for c in connections}
        self.start_ns, self.end_ns, self.message_count = start or 0, end, total
        self.ros_distro = self.metadata.get("ros_distro", "") or ""
        return connections

    def _topics(self, connections: list[Connection]) -> dict[str, TopicInfo]:
        topics: dict[str, TopicInfo] = {}
        for connection in connections:
            info = topics.get(connection.topic)
            if info is None:
                info = topics[connection.topic] = TopicInfo(
                    connection.topic, connection.msgtype, 0,
                    connection.ext.serialization_format,
                    known=connection.msgtype in self.typestore.fielddefs)
            elif info.msgtype != connection.msgtype:
                self.problems.append(f"{connection.topic} was recorded with types "
                                     f"{info.msgtype} and {connection.msgtype}; reading "
                                     f"only {info.msgtype}")
                continue
            info.count += connection.msgcount
            info.qos.extend(connection.ext.offered_qos_profiles)
            info.connections.append(connection)
        return topics

    # --- reading -------------------------------------------------------------------------------
    def messages(self, topics: Iterable[str] | None = None, start_ns: int | None = None,
                 stop_ns: int | None = None) -> Iterator[BagMessage]:
        """Messages of `topics` (all when None) with start_ns <= log time < stop_ns, in log-time
        order (file order when scanning a damaged MCAP). Raises BagReadError where the bag is
        damaged, after every message before that point."""
        wanted = set(self.topics) if topics is None else set(topics)
        missing = wanted - set(self.topics)
        if missing:
            raise BagError(f"{self.path} has no topic {', '.join(sorted(missing))} "
                           f"(it has {', '.join(sorted(self.topics))})")
        if self._scanned is not None:
            yield from self._scan_messages(wanted, start_ns, stop_ns)
            return
        connections = [c for t in wanted for c in self.topics[t].connections]
        if not connections:
            return
        count, last = 0, None
        iterator = self._reader.messages(connections, start=start_ns, stop=stop_ns)
        while True:
            try:
                connection, log_time, data = next(iterator)
            except StopIteration:
                return
            except Exception as error:  # rosbags, apsw, zstd, struct: all mean damage here
                raise self._read_error(error, count, last) from None
            count, last = count + 1, log_time
            yield BagMessage(connection.topic, connection.msgtype, log_time, data)

    def _scan_messages(self, wanted, start_ns, stop_ns) -> Iterator[BagMessage]:
        for file in self.files:
            try:
                for record in mcap_scan.scan(str(file)):
                    if not isinstance(record, mcap_scan.Message):
                        continue
                    topic, msgtype = self._scanned.get(record.channel_id, (None, None))
                    if topic in wanted and (start_ns is None or record.log_time >= start_ns) \
                            and (stop_ns is None or record.log_time < stop_ns):
                        yield BagMessage(topic, msgtype, record.log_time, record.data)
            except mcap_scan.McapFault:
                raise self.fault from None

    def _read_error(self, error: Exception, count: int, last: int | None) -> BagReadError:
        after = f"message {count + 1} of the selection" + (
            f", after log time {last} ns" if last is not None else "")
        for file in self.files:
            if file.suffix == ".mcap" and (fault := mcap_scan.first_fault(str(file))):
                return BagReadError(file, fault.problem, f"byte {fault.offset}; {after}")
        file = self.files[0] if len(self.files) == 1 else self.path
        return BagReadError(file, f"unreadable ({error})", after)

    def deserialize(self, message: BagMessage):
        """The message as a rosbags dataclass of the bag's own definition of its type."""
        try:
            return self.typestore.deserialize_cdr(message.data, message.msgtype)
        except KeyError:
            raise MessageDecodeError(f"{message.topic}: no definition of {message.msgtype} in "
                                     f"the bag or the {self.distro} typestore") from None
        except Exception as error:
            raise MessageDecodeError(f"{message.topic} at log time {message.log_time} ns: "
                                     f"cannot deserialize {message.msgtype} ({error})") from None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
