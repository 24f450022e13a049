"""`dl-perception bag info --verify`: read every record of a bag and check it, beyond what opening
a bag checks.

MCAP: every record parsed in file order, every chunk's CRC (where the writer filled it in),
the footer and the summary CRC, and the counts found against the summary and metadata.yaml.
sqlite3: the file's length against its header, SQLite's `PRAGMA integrity_check`, and the rows
per topic against metadata.yaml.
"""
from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, field

from . import mcap_scan
from .reader import BagReader, _sqlite_truncation

MAX_INTEGRITY_ROWS = 20  # SQLite lists at most this many problems


@dataclass
class Verification:
    checked: list[str] = field(default_factory=list)  # what was checked, for the report
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _verify_mcap(file, result: Verification) -> dict[str, int] | None:
    """Messages per topic in the records, None when a damaged record stopped the scan."""
    counts: dict[str, int] = {}
    channels: dict[int, str] = {}
    records = 0
    try:
        for record in mcap_scan.scan(str(file)):
            records += 1
            if isinstance(record, mcap_scan.Channel):
                channels[record.id] = record.topic
            elif isinstance(record, mcap_scan.Message):
                topic = channels.get(record.channel_id, f"channel {record.channel_id}")
                counts[topic] = counts.get(topic, 0) + 1
    except mcap_scan.McapFault as fault:
        result.problems.append(f"{file.name}: {fault.problem} at byte {fault.offset} "
                               f"(after {records} sound records)")
        counts = None
    result.checked.append(f"{file.name}: {records} records, chunk CRCs")
    if problem := mcap_scan.summary_damage(str(file)):
        result.problems.append(f"{file.name}: {problem}")
    else:
        result.checked.append(f"{file.name}: footer and summary CRC")
        summary = mcap_scan.summary_counts(str(file))
        if counts is not None and summary is not None and summary != counts:
            result.problems.append(f"{file.name}: the summary counts {summary} messages per "
                                   f"topic, the records hold {counts}")
    return counts


def _verify_sqlite(file, result: Verification) -> dict[str, int] | None:
    if truncation := _sqlite_truncation(file):
        result.problems.append(f"{file.name}: cut short: {truncation}")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{file}?mode=ro", uri=True)) as db:
            rows = [row[0] for row in db.execute(
                f"PRAGMA integrity_check({MAX_INTEGRITY_ROWS})")]
            counts: dict[str, int] = {}
            for name, count in db.execute(
                    "SELECT topics.name, count(messages.id) FROM topics LEFT JOIN messages ON "
                    "messages.topic_id = topics.id GROUP BY topics.id"):
                counts[name] = counts.get(name, 0) + count
            # integrity_check skips the row data itself: reading every row finds a bad page
            for _ in db.execute("SELECT length(data) FROM messages"):
                pass
    except sqlite3.Error as error:
        result.problems.append(f"{file.name}: SQLite: {error}")
        return None
    if rows != ["ok"]:
        result.problems.append(f"{file.name}: SQLite integrity check: {'; '.join(rows)}")
    result.checked.append(f"{file.name}: SQLite integrity check, every row read")
    return counts


def verify_bag(reader: BagReader) -> Verification:
    """Every record of every storage file checked (what opening the bag found is in
    reader.problems and reader.fault; these checks cover it)."""
    result = Verification()
    counts: dict[str, int] | None = {}
    for file in reader.files:
        found = _verify_mcap(file, result) if file.suffix == ".mcap" else \
            _verify_sqlite(file, result)
        if found is None or counts is None:
            counts = None  # a scan stopped by damage: its counts say nothing more
            continue
        for topic, count in found.items():
            counts[topic] = counts.get(topic, 0) + count
    if reader.metadata and counts is not None:
        declared = {}
        for entry in reader.metadata.get("topics_with_message_count") or []:
            try:
                declared[entry["topic_metadata"]["name"]] = int(entry["message_count"])
            except (KeyError, TypeError, ValueError):
                continue
        if declared != counts:
            problem = (f"metadata.yaml declares {declared} messages per topic, the storage "
                       f"holds {counts}")
            if problem not in result.problems:
                result.problems.append(problem)
        result.checked.append("metadata.yaml counts")
    return result
