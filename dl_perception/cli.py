"""The `dl-perception` command. Each subcommand imports what it needs when it runs, so `--help`
and light commands start fast and the core commands never load rclpy."""
from __future__ import annotations

import argparse
import json
import os
import sys


def _device(args):
    from .device import select_device
    return select_device(args.device)


def _write_json(path: str | None, payload: dict) -> None:
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
        print(f"wrote {path}")


# --- launch -------------------------------------------------------------------------------------
def cmd_launch(args) -> int:
    from .ros.launcher import launch
    return launch(args.config, only=args.nodes.split(",") if args.nodes else None,
                  executor=args.executor, duration=args.duration, ros_args=args.ros_args)


# --- convert ------------------------------------------------------------------------------------
def cmd_convert_dronet(args) -> int:
    from .convert import dronet_keras
    model, info = dronet_keras(args.json, args.weights)
    model.save(args.out, info=info)
    print(f"wrote {args.out} (dronet, converted from {args.weights})")
    return 0


# --- train --------------------------------------------------------------------------------------
def cmd_train_dronet(args) -> int:
    from .training.dronet import DroNetTrainConfig, train_dronet
    overrides = {k: v for k, v in vars(args).items()
                 if k in DroNetTrainConfig.__dataclass_fields__ and v is not None}
    cfg = DroNetTrainConfig(**overrides)
    model = train_dronet(args.data, args.out, cfg, _device(args), init_weights=args.init)
    print(f"wrote {args.out}: best validation {model.checkpoint_info.get('validation')}")
    return 0


# --- eval ---------------------------------------------------------------------------------------
def cmd_eval_dronet(args) -> int:
    from .evaluation.dronet import evaluate_dronet
    metrics = evaluate_dronet(args.weights, args.data, _device(args))
    print(f"DroNet evaluation of {args.weights} on {', '.join(args.data)}")
    for key, value in metrics.items():
        print(f"  {key:22s} {value:.4f}" if isinstance(value, float) else f"  {key:22s} {value}")
    _write_json(args.json, metrics)
    return 0


# --- bench --------------------------------------------------------------------------------------
def cmd_bench_dronet(args) -> int:
    from . import models
    from .bench import bench_model, print_table, synthetic_frames
    from .ros.node_base import resolve_weights

    weights = resolve_weights("dronet", args.weights or "")
    device = _device(args)
    frames = synthetic_frames(min(args.frames, 50))
    frames = (frames * (args.frames // len(frames) + 1))[: args.frames]
    rows = [{"path": "model (preprocess+forward)", **bench_model(
        models.load(weights, expected="dronet"), frames, device)}]
    if not args.no_ros:
        from rclpy.parameter import Parameter
        from std_msgs.msg import Float32

        from .ros.dronet_node import DroNetNode
        from .ros.node_path_bench import bench_node_path
        # MultiThreadedExecutor(2) measured ~100x slower here: a short run shows it
        for executor, count in (("single", args.frames), ("multi", max(10, args.frames // 10))):
            def factory():
                return DroNetNode(parameter_overrides=[
                    Parameter("weights", value=weights), Parameter("device", value=str(device))])
            rows.append({"path": f"node ({executor}-threaded executor)", **bench_node_path(
                factory, Float32, "/dl_perception/dronet/collision_probability", frames,
                count, executor_kind=executor)})
        for row in rows[1:]:
            row["ratio_to_model"] = row["fps"] / rows[0]["fps"]
    print(f"DroNet benchmark, 320x240 rgb8 frames, batch 1, device {device}")
    print_table(rows, ["path", "frames", "fps", "latency_ms_p50", "latency_ms_p99",
                       "ratio_to_model"])
    _write_json(args.json, {"device": str(device), "rows": rows})
    return 0


# --- info ---------------------------------------------------------------------------------------
def cmd_info(args) -> int:
    from .checkpoint import load_checkpoint
    checkpoint = load_checkpoint(args.checkpoint)
    count = sum(t.numel() for t in checkpoint.state_dict.values() if t.is_floating_point())
    print(json.dumps({"model": checkpoint.model, "float_values": count, "config": checkpoint.config,
                      "preprocessing": checkpoint.preprocessing, "info": checkpoint.info},
                     indent=2))
    return 0


# --- demo ---------------------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from .demo import run_demo
    return run_demo(args.out, args.duration, args.weights)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dl-perception", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def device_arg(p):
        p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")

    p = sub.add_parser("launch", help="start the nodes a ROS parameters YAML configures")
    p.add_argument("config", help="ROS 2 parameters file, e.g. config/perception.yaml")
    p.add_argument("--nodes", help="comma-separated subset of the configured nodes")
    p.add_argument("--executor", choices=("single", "multi"), default="single")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.set_defaults(func=cmd_launch)
    p.epilog = "ROS arguments go after '--', e.g. -- -r /camera/image_raw:=/cam"

    p = sub.add_parser("convert", help="convert foreign weights to a dl_perception checkpoint")
    conv = p.add_subparsers(dest="format", required=True)
    c = conv.add_parser("dronet-keras", help="official DroNet release (Keras JSON + HDF5)")
    c.add_argument("--json", required=True, help="model_struct.json")
    c.add_argument("--weights", required=True, help="model_weights.h5")
    c.add_argument("--out", required=True, help="output checkpoint (.safetensors)")
    c.set_defaults(func=cmd_convert_dronet)

    p = sub.add_parser("train", help="train a network")
    train = p.add_subparsers(dest="model", required=True)
    t = train.add_parser("dronet", help="DroNet: steering MSE + collision BCE, hard mining")
    t.add_argument("--data", nargs="+", required=True, help="dataset folder(s)")
    t.add_argument("--out", required=True, help="output checkpoint")
    t.add_argument("--init", help="start from this checkpoint")
    for name, kind in (("epochs", int), ("batch_size", int), ("learning_rate", float),
                       ("collision_start_epoch", float), ("collision_ramp_epochs", float),
                       ("hard_mining_start_epoch", float), ("hard_mining_ramp_epochs", float),
                       ("val_fraction", float), ("seed", int)):
        t.add_argument("--" + name.replace("_", "-"), dest=name, type=kind)
    device_arg(t)
    t.set_defaults(func=cmd_train_dronet)

    p = sub.add_parser("eval", help="evaluate a network")
    ev = p.add_subparsers(dest="model", required=True)
    e = ev.add_parser("dronet", help="EVA/RMSE (steering), accuracy/F1/ROC-AUC (collision)")
    e.add_argument("--weights", required=True)
    e.add_argument("--data", nargs="+", required=True)
    e.add_argument("--json", help="also write the metrics here")
    device_arg(e)
    e.set_defaults(func=cmd_eval_dronet)

    p = sub.add_parser("bench", help="benchmarks (ratios against a baseline in the same run)")
    bench = p.add_subparsers(dest="target", required=True)
    b = bench.add_parser("dronet", help="model alone vs. through the ROS node")
    b.add_argument("--weights", help="checkpoint (default: the shipped one)")
    b.add_argument("--frames", type=int, default=200)
    b.add_argument("--no-ros", action="store_true", help="model only")
    b.add_argument("--json")
    device_arg(b)
    b.set_defaults(func=cmd_bench_dronet)

    p = sub.add_parser("info", help="print what a checkpoint holds")
    p.add_argument("checkpoint")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="run the stack on the built-in source and show the results")
    p.add_argument("--out", default="demo_output")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of simulated flight")
    p.add_argument("--weights", help="DroNet checkpoint (default: the shipped one)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = build_parser().parse_args(argv[:len(argv) - len(ros_args) - (1 if "--" in argv else 0)])
    args.ros_args = ros_args
    from .checkpoint import CheckpointError
    try:
        return args.func(args) or 0
    except (CheckpointError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
