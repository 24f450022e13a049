"""bench stack: the five networks on one camera stream, engine against the naive baseline."""
from __future__ import annotations

from .common import add_device_arg, write_json

TABLE = ["path", "frames", "fps", "latency_ms_p50", "latency_ms_p99", "peak_memory_mb", "ratio"]


def bench(args) -> int:
    from ..bench.models import print_table
    from ..engine import EngineOptions
    from ..bench.stack import STACK, generated_frames, run_stack_bench, sequence_frames

    width, height = args.size
    frames = (sequence_frames(args.sequence, args.frames, width, height) if args.sequence
              else generated_frames(args.frames, width, height))
    options = EngineOptions(device=args.device, precision=args.precision,
                            channels_last=args.channels_last, batch_size=args.batch_size,
                            workers=args.workers, compile=args.compile,
                            preprocess=args.preprocess)
    names = args.models.split(",") if args.models else list(STACK)
    result = run_stack_bench(args.preset, frames, options, names, rate=args.rate,
                             peak=not args.no_peak, per_model=not args.no_per_model,
                             rounds=args.rounds)
    print_table(result["rows"], TABLE)
    print("outputs of the engine against the baseline:")
    for name, row in result["outputs_vs_naive"].items():
        print(f"  {name:8s} {row['kind']:9s} deviation {row['deviation']:.2e} "
              f"(tolerance {row['tolerance']:g}) {'ok' if row['within_tolerance'] else 'OVER'}")
    if "fixed_rate" in result:
        fixed = result["fixed_rate"]
        print(f"fixed rate {fixed['rate_hz']:.2f} Hz: {fixed['processed']} processed, "
              f"{fixed['drop_share']:.1%} dropped, latency p50 {fixed['latency_ms_p50']:.1f} ms "
              f"p99 {fixed['latency_ms_p99']:.1f} ms")
    if "peak" in result:
        peak = result["peak"]["peak_hz"]
        print("peak rate with < 5% drops: " + (f"{peak:.2f} Hz" if peak else "none probed"))
    print(f"stack throughput: engine {result['stack_ratio']:.2f}x the naive baseline")
    if args.ros:
        from ..ros.bench.stack import bench_ros_stack
        result["ros"] = bench_ros_stack(frames, rate=args.ros_rate, duration=args.ros_duration,
                                        config=args.ros_config)
        ros = result["ros"]
        print(f"ROS path ({', '.join(ros['nodes'])} in one process): {ros['sent']} frames at "
              f"{ros['rate_hz']:.2f} Hz, complete outputs for {ros['complete']} "
              f"({ros['complete_share']:.0%}), latency p50 {ros['latency_ms_p50']} ms")
        for name, reason in ros["skipped"].items():
            print(f"  {name} not started: {reason}")
    write_json(args.json, result)
    return 0


def register(verbs) -> None:
    b = verbs["bench"].add_parser(
        "stack", help="all five networks: engine vs naive baseline (the default of `bench`)")
    b.add_argument("--preset", default="cpu", choices=("cpu", "paper"),
                   help="model configurations (paper: the GPU configuration)")
    b.add_argument("--frames", type=int, default=16)
    b.add_argument("--rounds", type=int, default=2,
                   help="alternations of baseline and engine (both see the same load)")
    b.add_argument("--size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    b.add_argument("--sequence", help="recorded sequence folder to take frames from "
                                      "(default: generated frames)")
    b.add_argument("--models", help="comma-separated subset of dronet,lift,netvlad,posenet,depth")
    b.add_argument("--batch-size", dest="batch_size", type=int, default=0,
                   help="frames per batch (0: 16 on CUDA, 2 on the CPU)")
    b.add_argument("--preprocess", default="auto", choices=("auto", "device", "host"),
                   help="auto: on the device on CUDA, OpenCV per frame on the CPU")
    b.add_argument("--workers", type=int, default=0, help="CPU worker threads (0: one per core)")
    b.add_argument("--precision", default="auto", choices=("auto", "fp32", "reduced"))
    b.add_argument("--channels-last", dest="channels_last", default="auto",
                   choices=("auto", "on", "off"))
    b.add_argument("--compile", action="store_true", help="torch.compile the batchable models")
    b.add_argument("--rate", type=float, help="also run the fixed-rate mode at this rate (Hz)")
    b.add_argument("--no-peak", dest="no_peak", action="store_true",
                   help="skip the peak-throughput search")
    b.add_argument("--no-per-model", dest="no_per_model", action="store_true",
                   help="skip the per-model rows")
    b.add_argument("--ros", action="store_true", help="also measure the ROS path (rclpy nodes)")
    b.add_argument("--ros-config", dest="ros_config", default="config/perception.yaml",
                   help="parameters file configuring the nodes of the ROS path")
    b.add_argument("--ros-rate", dest="ros_rate", type=float, default=1.0)
    b.add_argument("--ros-duration", dest="ros_duration", type=float, default=15.0)
    b.add_argument("--json", help="write the full result here")
    add_device_arg(b)
    b.set_defaults(func=bench)
