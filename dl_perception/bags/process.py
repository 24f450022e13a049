"""`dl-perception process`: run the perception nodes a parameters file configures over a whole
bag, without DDS, as fast as the models go.

Each configured network node (its frame processor, dl_perception.processors) reads its camera
topic from the bag and writes the messages the node would publish, computed by the same code
the node runs. Its side inputs (depth's /camera/camera_info, online NetVLAD's odometry) are read
from the bag too and handed to it in log-time order, before the frames logged after them.
Outputs are written with the input frame's timestamp: its header stamp (the log time when the
stamp is zero), so header-less outputs such as std_msgs/Float32 carry the stamp of the frame
they came from in their bag timestamp. Frames are processed one by one in log-time
order, so the result is deterministic. Damaged input ends the run with the error, and the output
bag is still closed, holding everything produced before the damage.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from ..core import rosmsg
from ..core.imaging import DEFAULT_MAX_PIXELS, ImageDecodeError, decode
from ..core.progress import progress
from ..processors import PROCESSOR_MODULES, FrameProcessor, node_parameters, processor_class
from ..core.stats import FrameStats
from .reader import BagError, BagReader, BagReadError, MessageDecodeError
from .writer import BagWriter


@dataclass
class NodeRun:
    node: str
    processor: FrameProcessor
    input_topic: str
    stats: FrameStats = field(default_factory=FrameStats)
    outputs: int = 0


@dataclass
class ProcessResult:
    bag: str
    out: str
    runs: list[NodeRun] = field(default_factory=list)
    frames: int = 0  # input messages read on the processed topics
    outputs: Counter = field(default_factory=Counter)  # topic -> messages written
    output_types: dict = field(default_factory=dict)
    copied: Counter = field(default_factory=Counter)
    copied_types: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was skipped, and why
    frame_times_s: list = field(default_factory=list)  # wall time of each input frame's turn
    elapsed_s: float = 0.0
    fault: BagReadError | None = None

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0


def plan_runs(config: str, reader: BagReader, nodes: list[str] | None = None,
              image_topic: str | None = None) -> tuple[list[NodeRun], list[str]]:
    """The node runs the parameters file asks for and the bag allows, and notes on the rest."""
    sections = node_parameters(config)
    if nodes:
        unknown = [n for n in nodes if n not in sections]
        if unknown:
            raise ValueError(f"{config} does not configure {unknown} (it has {list(sections)})")
        sections = {n: p for n, p in sections.items() if n in nodes}
    runs, notes = [], []
    for node, params in sections.items():
        cls = processor_class(node)
        if cls is None:
            notes.append(f"{node}: no offline processor (not a camera network: offline "
                         f"processing covers {', '.join(sorted(PROCESSOR_MODULES))}; replay the "
                         f"bag to this node and record instead); skipped")
            continue
        topic = image_topic or cls.input_topic(params)
        info = reader.topics.get(topic)
        if info is None:
            notes.append(f"{node}: input topic {topic} is not in {reader.path} (it has "
                         f"{', '.join(sorted(reader.topics)) or 'no topics'}); skipped")
            continue
        if info.msgtype not in rosmsg.IMAGE_TYPES or not info.known:
            notes.append(f"{node}: {topic} holds {info.msgtype}, not a readable "
                         f"{' or '.join(rosmsg.IMAGE_TYPES)}; skipped")
            continue
        runs.append(NodeRun(node, cls.from_params(params), topic))
    return runs, notes


def process_bag(bag: str, config: str, out: str, *, nodes: list[str] | None = None,
                image_topic: str | None = None, copy_inputs: bool = False,
                copy_topics: tuple[str, ...] = (), storage: str = "mcap",
                show_progress: bool | None = None, on_note=None) -> ProcessResult:
    result = ProcessResult(bag, out)

    def note(text: str) -> None:
        result.notes.append(text)
        if on_note:
            on_note(text)

    with BagReader(bag) as reader:
        runs, notes = plan_runs(config, reader, nodes, image_topic)
        for text in reader.problems + notes:
            note(text)
        if not runs:
            raise BagError(f"nothing to process in {bag}: " + "; ".join(notes))
        result.runs = runs
        by_topic: dict[str, list[NodeRun]] = {}
        for run in runs:
            by_topic.setdefault(run.input_topic, []).append(run)
        observers = side_input_runs(runs, reader, note)
        copies = set(copy_topics) | (set(by_topic) if copy_inputs else set())
        for topic in sorted(copies):
            if topic not in reader.topics or not reader.topics[topic].known:
                note(f"cannot copy {topic}: " + ("not in the bag" if topic not in reader.topics
                                                 else "its type has no definition"))
                copies.discard(topic)
        total = sum(reader.topics[t].count for t in by_topic)
        bar = progress(total=total, desc="process", unit="frame",
                       enabled=show_progress is not False)
        started = time.perf_counter()
        try:
            with BagWriter(out, storage=storage) as writer:
                _run(reader, writer, runs, by_topic, observers, copies, result, bar, note)
        finally:
            result.elapsed_s = time.perf_counter() - started  # closing the bag included
        if result.fault is None:
            result.fault = reader.fault  # damage found on opening that reading did not meet
    return result


def side_input_runs(runs: list[NodeRun], reader: BagReader, note) -> dict[str, list[NodeRun]]:
    """Side-input topic -> the runs that read it, for the topics the bag holds (a missing one
    is noted; the node runs without it, as it would in a graph where nobody publishes it)."""
    observers: dict[str, list[NodeRun]] = {}
    for run in runs:
        for topic, msgtype in run.processor.side_inputs().items():
            info = reader.topics.get(topic)
            if info is None or info.msgtype != msgtype:
                note(f"{run.node}: side input {topic} ({msgtype}) is not in {reader.path}; "
                     "processed without it")
                continue
            observers.setdefault(topic, []).append(run)
    return observers


def _observe(message, runs: list[NodeRun], note) -> None:
    try:
        side = rosmsg.deserialize(message.data, message.msgtype)
    except Exception as error:  # a damaged side message is dropped as a node drops it
        note(f"dropped the message at log time {message.log_time} ns on {message.topic}: "
             f"{error!r}")
        return
    for run in runs:
        run.processor.observe(message.topic, side)


def _run(reader, writer, runs, by_topic, observers, copies, result, bar, note) -> None:
    for run in runs:
        for topic, msgtype in run.processor.outputs.items():
            if topic in copies:
                raise BagError(f"{run.node} writes {topic}, which is also copied")
            writer.add_connection(topic, msgtype)
            result.output_types[topic] = msgtype
    for topic in sorted(copies):
        info = reader.topics[topic]
        writer.add_connection(topic, info.msgtype, qos=info.qos, typestore=reader.typestore)
        result.copied_types[topic] = info.msgtype
    drops_listed = 0

    def drop_note(text: str) -> None:  # list the first drops, count the rest
        nonlocal drops_listed
        drops_listed += 1
        if drops_listed <= 10:
            note(text + ("" if drops_listed < 10 else "; further drops are only counted"))

    last = time.perf_counter()
    try:
        for message in reader.messages(set(by_topic) | set(observers) | copies):
            if message.topic in copies:
                writer.write(message.topic, message.log_time, message.data)
            if message.topic in observers:
                _observe(message, observers[message.topic], note)
            if message.topic in by_topic:
                result.frames += 1
                _process_frame(reader, message, by_topic[message.topic], writer, drop_note)
                bar.update()
                now = time.perf_counter()
                result.frame_times_s.append(now - last)  # reading and writing included
                last = now
    except BagReadError as fault:
        result.fault = fault
    finally:
        bar.close()
        result.outputs = Counter({t: writer.counts[t] for t in result.output_types})
        result.copied = Counter({t: writer.counts[t] for t in copies})


def _process_frame(reader: BagReader, message, runs: list[NodeRun], writer: BagWriter,
                   note) -> None:
    for run in runs:
        run.stats.frame_received()
    max_pixels = min(int(run.processor.params.get("max_pixels", DEFAULT_MAX_PIXELS))
                     for run in runs)
    try:
        msg = reader.deserialize(message)
        stamp = msg.header.stamp
        if stamp.sec < 0 or not 0 <= stamp.nanosec < 1_000_000_000:
            raise ImageDecodeError("invalid_stamp", f"invalid stamp {stamp.sec} s "
                                                    f"{stamp.nanosec} ns")
        image = decode(msg, max_pixels)
    except (MessageDecodeError, ImageDecodeError) as error:
        reason = getattr(error, "reason", "corrupt")
        for run in runs:
            run.stats.drop(reason)
        note(f"dropped the frame at log time {message.log_time} ns on {message.topic}: {error}")
        return
    stamp = rosmsg.stamp_ns(msg.header.stamp) or message.log_time
    header = rosmsg.header(stamp, msg.header.frame_id)
    for run in runs:
        started = time.perf_counter()
        try:
            outputs = run.processor.process(image, header)
        except ImageDecodeError as error:
            run.stats.drop(error.reason)
            note(f"{run.node} dropped the frame stamped {stamp} ns: {error}")
            continue
        except Exception as error:  # one bad frame must not end the run (as in the node)
            run.stats.drop("error")
            note(f"{run.node} failed on the frame stamped {stamp} ns: {error!r}")
            continue
        for output in outputs:
            writer.write(output.topic, stamp, output.message)
        run.outputs += len(outputs)
        run.stats.frame_done(time.perf_counter() - started)
