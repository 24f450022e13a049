"""rosbag2 commands: replay, record, process, bag info, bag from-images, bench process,
bench replay."""
from __future__ import annotations

import os
import sys

from .common import write_json


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


def replay(args) -> int:
    from ..ros.replay import ReplayOptions, run_replay
    return run_replay(ReplayOptions.from_args(args), ros_args=args.ros_args)


def record(args) -> int:
    from ..ros.record import run_record
    return run_record(args.topics, args.out, storage=args.storage, all_topics=args.all,
                      duration=args.duration, ros_args=args.ros_args)


def print_process_result(result) -> None:
    from ..bench.models import print_table

    print_table([{
        "node": run.node, "input": run.input_topic, "frames": run.stats.received,
        "processed": run.stats.processed, "drops": sum(run.stats.drops.values()),
        "outputs": run.outputs,
        "processing_ms_p50": run.stats.summary()["processing_ms"]["p50"],
    } for run in result.runs], ["node", "input", "frames", "processed", "drops", "outputs",
                                "processing_ms_p50"])
    rows = [{"topic": t, "type": result.output_types[t], "messages": n}
            for t, n in result.outputs.items()]
    rows += [{"topic": f"{t} (copied)", "type": result.copied_types[t], "messages": n}
             for t, n in result.copied.items()]
    print_table(rows, ["topic", "type", "messages"])
    written = sum(result.outputs.values()) + sum(result.copied.values())
    print(f"processed {result.frames} frames in {result.elapsed_s:.2f} s "
          f"({result.frames_per_s:.1f} frames/s); wrote {result.out} ({written} messages)")


def process(args) -> int:
    from collections import Counter

    from ..bags.process import process_bag
    result = process_bag(args.bag, args.config, args.out,
                         nodes=args.nodes.split(",") if args.nodes else None,
                         image_topic=args.image_topic, copy_inputs=args.copy_inputs,
                         copy_topics=tuple(args.copy or ()), storage=args.storage,
                         on_note=_warn)
    print_process_result(result)
    if result.fault is not None:
        print(f"error: {result.fault}; the {result.frames} frames before it are in {args.out}",
              file=sys.stderr)
        return 1
    if not any(run.stats.processed for run in result.runs):
        drops = Counter()
        for run in result.runs:
            drops.update(run.stats.drops)
        reasons = ", ".join(f"{reason} {count}" for reason, count in drops.most_common())
        print(f"error: nothing processed: {result.frames} frames read from {args.bag}"
              + (f", every one dropped ({reasons})" if reasons else ""), file=sys.stderr)
        return 1
    return 0


def bag_info(args) -> int:
    from ..bags import BagReader
    from ..bags.info import describe, describe_ros1
    if args.bag.endswith(".bag") and os.path.isfile(args.bag):
        print(describe_ros1(args.bag))
        return 0
    with BagReader(args.bag) as reader:
        print(describe(reader))
        if not args.verify:
            return 0
        from ..bags.verify import verify_bag
        verification = verify_bag(reader)
    print(f"{'Verified:':<19}{'; '.join(verification.checked)}")
    for problem in verification.problems:
        print(f"damage: {problem}")
    count = len(verification.problems)
    print("verify: OK" if verification.ok else
          f"verify: FAILED ({count} problem{'s' if count != 1 else ''})")
    return 0 if verification.ok else 1


def bag_reindex(args) -> int:
    from ..bags.reindex import reindex
    result = reindex(args.bag)
    if result.kept_damaged is not None:
        print(f"repaired {result.storage_file.name}: {result.messages} messages readable before "
              f"the damage (the damaged original is kept as {result.kept_damaged.name})")
    print(f"wrote {args.bag}/metadata.yaml: {result.messages} messages in "
          f"{result.storage_file.name}")
    return 0


def bag_from_images(args) -> int:
    from ..bags.from_images import images_to_bag
    start = None if args.start is None else int(round(args.start * 1e9))
    result = images_to_bag(args.folder, args.out, rate_hz=args.rate, tum_list=args.tum,
                           start_ns=start, calibration=args.camera_info, encoding=args.encoding,
                           compressed=args.compressed, topic=args.topic, frame_id=args.frame_id,
                           storage=args.storage,
                           on_drop=lambda path, why: _warn(f"skipped {path}: {why}"))
    topics = ", ".join(f"{t} ({n})" for t, n in result.topics.items())
    print(f"wrote {args.out}: {result.frames} frames over "
          f"{(result.end_ns - result.start_ns) / 1e9:.3f} s on {topics}"
          + (f"; skipped {len(result.dropped)} unreadable files" if result.dropped else ""))
    return 0


def bench_process(args) -> int:
    from ..bench.bags import bench_process as run
    from ..bench.models import print_table
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    report = run(frames=args.frames, weights=args.weights, device=args.device, bag=args.bag,
                 rounds=args.rounds)
    print(f"process vs model alone, DroNet, {report['frames']} frames of {report['source']}, "
          f"device {report['device']}, {report['threads']} torch threads, {args.rounds} rounds")
    print_table(report["rows"], ["path", "frames", "fps", "frame_ms_p50", "fps_at_p50",
                                 "ratio_to_model"])
    write_json(args.json, report)
    return 0


def bench_replay(args) -> int:
    from ..bench.models import print_table
    from ..ros.bench.bags import bench_replay as run
    report = run(duration=args.duration, bag=args.bag, ros_args=args.ros_args)
    print(f"replay timing at rate 1.0 over {report['duration_s']:.1f} s of {report['source']}, "
          f"player in its own process: |receive time - the time the bag's timestamps "
          f"schedule|")
    print_table(report["timing"], ["topic", "messages", "received", "error_ms_p50",
                                   "error_ms_p95", "error_ms_max"])
    print("publishing as fast as possible, one subscriber in the same process")
    print_table(report["throughput"], ["path", "messages", "msgs_per_s", "ratio_to_raw"])
    write_json(args.json, report)
    return 0


def _add_storage(parser) -> None:
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap",
                        help="storage of the written bag (default mcap)")


def register(verbs) -> None:
    top = verbs["top"]
    p = top.add_parser(
        "replay", help="publish a rosbag2 bag's topics with their recorded timing (and /clock)",
        epilog="ROS arguments go after '--' (or --ros-args), e.g. -- -p use_sim_time:=false")
    p.add_argument("bag", help="bag directory, .mcap or .db3 file")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1)")
    p.add_argument("--start-offset", type=float, default=0.0, metavar="SECONDS",
                   help="start this many seconds into the bag")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="play only this many seconds of the bag")
    p.add_argument("--loop", action="store_true", help="play again from the start at the end")
    p.add_argument("--topics", nargs="+", metavar="TOPIC", help="play only these topics")
    p.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                   help="publish topic FROM as TO (repeatable)")
    p.add_argument("--qos-profile-overrides-path", metavar="YAML",
                   help="QoS per topic, as for `ros2 bag play` (topic: {reliability: reliable, "
                        "durability: volatile, history: keep_last, depth: 10})")
    p.add_argument("--delay", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long before the first message (lets subscribers discover "
                        "the publishers)")
    p.add_argument("--clock-rate", type=float, default=40.0, metavar="HZ",
                   help="publish bag time on /clock at this rate (0: no /clock)")
    p.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SECONDS",
                   help="before --delay, wait up to this long until every played topic has a "
                        "subscriber (0: don't wait)")
    p.set_defaults(func=replay, ros_process=True)

    p = top.add_parser("record", help="record topics to a rosbag2 bag (mcap by default)",
                       epilog="ROS arguments go after '--' (or --ros-args)")
    p.add_argument("topics", nargs="*", metavar="TOPIC")
    p.add_argument("--all", action="store_true", help="record every topic that appears")
    p.add_argument("--out", required=True, help="bag directory to create")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    _add_storage(p)
    p.set_defaults(func=record, ros_process=True)

    p = top.add_parser("process", help="run the configured perception models over a bag "
                                       "(no DDS) and write their outputs to a bag")
    p.add_argument("bag", help="input bag")
    p.add_argument("--config", required=True, help="ROS 2 parameters file, e.g. "
                                                   "config/perception.yaml")
    p.add_argument("--out", required=True, help="output bag directory to create")
    p.add_argument("--nodes", help="comma-separated subset of the configured nodes")
    p.add_argument("--image-topic", help="read frames from this topic instead of the nodes' "
                                         "camera topic")
    p.add_argument("--copy-inputs", action="store_true",
                   help="also copy the input image topics to the output bag")
    p.add_argument("--copy", nargs="+", metavar="TOPIC", help="also copy these topics")
    _add_storage(p)
    p.set_defaults(func=process)

    bag = top.add_parser("bag", help="inspect and make rosbag2 bags").add_subparsers(
        dest="target", required=True, metavar="TARGET")
    p = bag.add_parser("info", help="topics, types, counts and duration (as `ros2 bag info`)")
    p.add_argument("bag")
    p.add_argument("--verify", action="store_true",
                   help="also read and check every record (MCAP: chunk and summary CRCs; "
                        "sqlite3: integrity check); exit status 1 when damaged")
    p.set_defaults(func=bag_info)
    p = bag.add_parser("reindex", help="rebuild metadata.yaml (and repair a cut-short MCAP) of "
                                       "a bag whose recorder was killed")
    p.add_argument("bag", help="bag directory")
    p.set_defaults(func=bag_reindex)
    p = bag.add_parser("from-images", help="a folder of frames -> a bag of sensor_msgs/Image")
    p.add_argument("folder", help="folder of images (png, jpg, ...) or of a TUM sequence")
    p.add_argument("--out", required=True, help="bag directory to create")
    timing = p.add_mutually_exclusive_group(required=True)
    timing.add_argument("--rate", type=float, metavar="HZ",
                        help="stamp frames at this rate, in file-name order")
    timing.add_argument("--tum", metavar="LIST", help="TUM RGB-D list ('timestamp file' lines, "
                                                      "e.g. rgb.txt)")
    p.add_argument("--start", type=float, metavar="SECONDS",
                   help="stamp of the first frame with --rate (default: now)")
    p.add_argument("--camera-info", metavar="YAML",
                   help="camera_calibration YAML; adds CameraInfo beside every frame")
    p.add_argument("--encoding", choices=("rgb8", "bgr8", "mono8"), default="rgb8")
    p.add_argument("--compressed", action="store_true",
                   help="write sensor_msgs/CompressedImage on TOPIC/compressed")
    p.add_argument("--topic", default="/camera/image_raw")
    p.add_argument("--frame-id", default="camera_optical_frame")
    _add_storage(p)
    p.set_defaults(func=bag_from_images)

    b = verbs["bench"].add_parser("process", help="process frames/s vs the model alone")
    b.add_argument("--frames", type=int, default=200)
    b.add_argument("--bag", help="process this bag's /camera/image_raw (default: synthetic)")
    b.add_argument("--weights", help="DroNet checkpoint (default: the shipped one)")
    b.add_argument("--device", default="cpu")
    b.add_argument("--rounds", type=int, default=3)
    b.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    b.add_argument("--json")
    b.set_defaults(func=bench_process)

    b = verbs["bench"].add_parser("replay", help="replay timing error at rate 1 and the raw "
                                                 "publishing path vs deserialising")
    b.add_argument("--duration", type=float, default=5.0, help="seconds of bag to play")
    b.add_argument("--bag", help="play this bag (default: synthetic images + Float32)")
    b.add_argument("--json")
    b.set_defaults(func=bench_replay)
