"""launch, info, demo, bench launch."""
from __future__ import annotations

import json

from .common import write_json


def launch(args) -> int:
    from ..ros.launcher import launch as run_launch
    return run_launch(args.config, only=args.nodes.split(",") if args.nodes else None,
                      single_process=args.single_process, executor=args.executor,
                      duration=args.duration, ros_args=args.ros_args, check=args.check)


def info(args) -> int:
    from ..core.checkpoint import load_checkpoint, save_checkpoint
    checkpoint = load_checkpoint(args.checkpoint)
    if args.set:  # provenance notes (purpose, licence, how it was made); tensors are untouched
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise SystemExit(f"--set wants KEY=VALUE, got {item!r}")
            checkpoint.info[key] = value
        save_checkpoint(args.out or args.checkpoint, checkpoint)
    count = sum(t.numel() for t in checkpoint.state_dict.values() if t.is_floating_point())
    print(json.dumps({"model": checkpoint.model, "float_values": count,
                      "config": checkpoint.config, "preprocessing": checkpoint.preprocessing,
                      "info": checkpoint.info}, indent=2))
    return 0


def demo(args) -> int:
    from ..ros.demo import run_demo
    return run_demo(args.out, args.duration, args.weights, args.world_seed)


def bench_launch(args) -> int:
    from ..ros.bench.launch import run
    rows = run(args.lift_frames)
    write_json(args.json, {"rows": rows})
    return 0 if all(row["status"] == 0 for row in rows) else 1


def register(verbs) -> None:
    top = verbs["top"]
    p = top.add_parser("launch", help="start the nodes a ROS parameters YAML configures",
                       epilog="ROS arguments go after '--', e.g. -- -r /camera/image_raw:=/cam "
                              "or -- -r __ns:=/drone1")
    p.add_argument("config", help="ROS 2 parameters file, e.g. config/perception.yaml")
    p.add_argument("--nodes", help="comma-separated nodes to start (default: every configured "
                                   "one; a node without a section starts with its defaults)")
    p.add_argument("--single-process", dest="single_process", action="store_true",
                   help="all nodes in this process on one executor (default: a process each)")
    p.add_argument("--executor", choices=("single", "multi"), default="single",
                   help="with --single-process: SingleThreadedExecutor or MultiThreadedExecutor(2)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--check", action="store_true",
                   help="only check the file: unknown nodes and parameters fail (status 1)")
    p.set_defaults(func=launch, ros_process=True)

    b = verbs["bench"].add_parser("launch", help="a fast node beside a slow one: a process each "
                                                 "vs --single-process (counts, not times)")
    b.add_argument("--lift-frames", dest="lift_frames", type=int, default=5,
                   help="LIFT outputs to count over (after one warm-up frame)")
    b.add_argument("--json")
    b.set_defaults(func=bench_launch)

    p = top.add_parser("info", help="print what a checkpoint holds")
    p.add_argument("checkpoint")
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE",
                   help="add or replace these info entries (e.g. purpose=..., licence=...)")
    p.add_argument("--out", help="with --set: write the result here instead of in place")
    p.set_defaults(func=info)

    p = top.add_parser("demo", help="fly the simulator with DroNet and show the results")
    p.add_argument("--out", default="demo_output")
    p.add_argument("--duration", type=float, default=40.0, help="seconds of flight")
    p.add_argument("--world-seed", dest="world_seed", type=int, default=0)
    p.add_argument("--weights", help="DroNet checkpoint (default: the shipped simulator one)")
    p.set_defaults(func=demo)
