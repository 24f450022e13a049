"""Simulator commands: sim (the ROS node), sim record, sim export-sdf, eval closed-loop,
bench sim."""
from __future__ import annotations

from .common import write_json


def _seeds(text: str) -> list[int]:
    """'1000-1004' or '3,5,9' -> a list of seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        if "-" in part.strip()[1:]:
            low, high = part.split("-")
            seeds.extend(range(int(low), int(high) + 1))
        else:
            seeds.append(int(part))
    if not seeds or min(seeds) < 0:
        raise ValueError(f"invalid seed list '{text}'")
    return seeds


def run_node(args) -> int:
    from ..ros.node_base import run_nodes
    from ..ros.sim_node import SimNode

    overrides = []
    for name in ("world_seed", "preset", "route"):
        if getattr(args, name) is not None:
            overrides += ["-p", f"{name}:={getattr(args, name)}"]
    return run_nodes([lambda: SimNode("sim_node")],
                     args=["dl-perception", "--ros-args", *overrides, *args.ros_args],
                     duration=args.duration)


def record(args) -> int:
    from ..sim.recording import RecordConfig, record as run_record
    from ..sim.scene import CameraSpec

    cfg = RecordConfig(world_seed=args.world_seed, out=args.out, preset=args.preset,
                       route=args.route, route_seed=args.route_seed, frames=args.frames,
                       rate_hz=args.rate, world_size=args.world_size, perturb=args.perturb,
                       bag=not args.no_bag, pilot_weights=args.pilot_weights,
                       randomize=args.randomize,
                       camera=CameraSpec(args.width, args.height, args.hfov))
    print(f"recording world {cfg.world_seed} ({cfg.preset}, route {cfg.route}) to {cfg.out}")
    summary = run_record(cfg)
    print(f"wrote {summary['frames']} frames ({summary['distance_m']:.1f} m, "
          f"{summary['duration_s']:.1f} s simulated, {summary['collisions']} collisions, "
          f"collision labels {summary['collision_label_fraction']:.1%}"
          + (f", {summary['expert_takeovers']} expert takeovers" if cfg.pilot_weights else "")
          + f") to {cfg.out}"
          + (f" and {cfg.out}/bag" if cfg.bag else "") + f" in {summary['wall_time_s']:.0f} s")
    return 0


def record_rooms(args) -> int:
    from ..sim.rooms import record_rooms as run_rooms
    summary = run_rooms(args.out, args.seed, args.rooms, args.frames_per_room, args.width,
                        args.height, close_ups=args.close_ups)
    print(f"wrote {summary['frames']} frames of {summary['rooms']} rooms to {args.out}")
    return 0


def export_sdf(args) -> int:
    from ..sim.sdf import write_world_sdf
    write_world_sdf(args.world_seed, args.out, args.world_size)
    print(f"wrote {args.out} (world {args.world_seed})")
    return 0


def closed_loop(args) -> int:
    from ..bench.models import print_table
    from ..sim.closed_loop import ClosedLoopConfig, evaluate_closed_loop

    from ..core.paths import resolve_weights
    # the simulator's own checkpoint unless told otherwise: this measures flying the simulator
    weights = resolve_weights("dronet", args.weights or "shipped:sim")
    cfg = ClosedLoopConfig(seeds=_seeds(args.seeds), cap_m=args.cap, preset=args.preset,
                           max_time_s=args.max_time, weights=weights,
                           policies=args.policies.split(","))
    result = evaluate_closed_loop(cfg, log=print)
    print(f"\nmean distance flown before the first collision (cap {cfg.cap_m:g} m), worlds "
          f"{args.seeds}, preset {cfg.preset}")
    print_table(result["rows"], ["policy", *[f"seed_{s}" for s in cfg.seeds], "mean_m",
                                 "collided", "ratio_to_straight"])
    write_json(args.json, result)
    return 0


def bench(args) -> int:
    from ..bench.models import print_table
    from ..ros.bench.sim import bench_sim

    rows = bench_sim(args.frames, args.world_seed)
    print(f"simulator benchmark: {rows[0]['width']}x{rows[0]['height']} RGB + depth, "
          f"world {args.world_seed}")
    print_table(rows, ["path", "frames", "fps", "ratio_to_render"])
    node = rows[1]
    print(f"a subscriber in another process received {node['received_rgb']} RGB and "
          f"{node['received_depth']} depth frames of the {node['published_total']} published, "
          f"using {node['subscriber_cpu_ms_per_frame']:.2f} ms of CPU per frame")
    write_json(args.json, {"rows": rows})
    return 0


def register(verbs) -> None:
    p = verbs["top"].add_parser(
        "sim", help="run the simulator node (ROS), or record / export a world",
        epilog="ROS arguments go after '--', e.g. -- -p camera_rate_hz:=15.0")
    p.add_argument("--world-seed", dest="world_seed", type=int)
    p.add_argument("--preset", choices=("day", "dusk", "changed"))
    p.add_argument("--route", choices=("loop", "figure8", "random"))
    p.add_argument("--duration", type=float, help="stop after this many (wall) seconds")
    p.set_defaults(func=run_node, ros_process=True)
    sub = p.add_subparsers(dest="action", metavar="ACTION")

    r = sub.add_parser("record", help="fly the expert and write a sequence folder + rosbag2")
    r.add_argument("--world-seed", dest="world_seed", type=int, required=True)
    r.add_argument("--out", required=True, help="output folder (sequence layout)")
    r.add_argument("--preset", choices=("day", "dusk", "changed"), default="day")
    r.add_argument("--route", choices=("loop", "figure8", "random"), default="loop")
    r.add_argument("--route-seed", dest="route_seed", type=int, default=0)
    r.add_argument("--frames", type=int, default=600)
    r.add_argument("--rate", type=float, default=10.0, help="camera frames per simulated second")
    r.add_argument("--world-size", dest="world_size", type=float, default=64.0)
    r.add_argument("--perturb", type=float, default=0.0,
                   help="fraction of the flight with a perturbed yaw command (labels stay the "
                        "expert's): 0.4 for DroNet training data")
    r.add_argument("--pilot-weights", dest="pilot_weights",
                   help="DroNet checkpoint that flies instead of the expert (DAgger: the labels "
                        "stay the expert's; it takes over near obstacles and when stalled)")
    r.add_argument("--width", type=int, default=320)
    r.add_argument("--height", type=int, default=240)
    r.add_argument("--hfov", type=float, default=90.0, help="horizontal field of view (deg)")
    r.add_argument("--no-bag", action="store_true", help="skip OUT/bag (about 0.5 MB per frame)")
    r.add_argument("--randomize", action="store_true",
                   help="domain randomisation seeded by the world and route seeds: photo "
                        "textures, clutter shapes, lighting and sky, field of view (replaces "
                        "--hfov), height, pitch, exposure, blur, noise, grey cameras "
                        "(docs/simulator.md)")
    r.set_defaults(func=record)

    rr = sub.add_parser("record-rooms", help="randomised rooms seen from random camera poses: "
                                             "one sequence folder per room (depth training data)")
    rr.add_argument("--seed", type=int, required=True, help="first room's seed")
    rr.add_argument("--rooms", type=int, default=10)
    rr.add_argument("--frames-per-room", dest="frames_per_room", type=int, default=12)
    rr.add_argument("--width", type=int, default=320)
    rr.add_argument("--height", type=int, default=240)
    rr.add_argument("--close-ups", dest="close_ups", action="store_true",
                    help="aim every view at a table top, object or the floor 0.2-1.2 m ahead, "
                         "looking down 15-70 deg (near scenes)")
    rr.add_argument("--out", required=True, help="output folder (one room_<seed> per room)")
    rr.set_defaults(func=record_rooms)

    x = sub.add_parser("export-sdf", help="write a world as a Gazebo (gz-sim) SDF world")
    x.add_argument("--world-seed", dest="world_seed", type=int, required=True)
    x.add_argument("--world-size", dest="world_size", type=float, default=64.0)
    x.add_argument("--out", required=True)
    x.set_defaults(func=export_sdf)

    e = verbs["eval"].add_parser(
        "closed-loop", help="distance flown before the first collision: expert, DroNet, straight")
    e.add_argument("--seeds", default="1000-1004", help="world seeds, e.g. 1000-1004")
    e.add_argument("--cap", type=float, default=300.0, help="distance cap (m)")
    e.add_argument("--max-time", dest="max_time", type=float, default=300.0,
                   help="simulated seconds per flight")
    e.add_argument("--preset", choices=("day", "dusk", "changed"), default="day")
    e.add_argument("--weights", help="DroNet checkpoint (default: shipped:sim, the simulator's)")
    e.add_argument("--policies", default="expert,dronet,straight")
    e.add_argument("--json")
    e.set_defaults(func=closed_loop)

    b = verbs["bench"].add_parser("sim", help="simulator publish rate vs the bare render rate")
    b.add_argument("--frames", type=int, default=1000,
                   help="frames per path; fewer are noisier on a loaded machine")
    b.add_argument("--world-seed", dest="world_seed", type=int, default=0)
    b.add_argument("--json")
    b.set_defaults(func=bench)
