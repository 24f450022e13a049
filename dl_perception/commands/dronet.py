"""DroNet commands: convert dronet-keras / pulp-dronet, train dronet, eval dronet, bench dronet."""
from __future__ import annotations

from .common import add_device_arg, device_of, write_json


def convert(args) -> int:
    from ..models.dronet_convert import dronet_keras
    model, info = dronet_keras(args.json, args.weights)
    model.save(args.out, info=info)
    print(f"wrote {args.out} (dronet, converted from {args.weights})")
    return 0


def convert_pulp(args) -> int:
    from ..models.dronet_convert import pulp_dronet
    model, info = pulp_dronet(args.weights, args.crop_anchor)
    model.save(args.out, info=info)
    print(f"wrote {args.out} (dronet, {info['flavour']} layout 'pulp', converted from {args.weights})")
    return 0


def train(args) -> int:
    from ..training.dronet import DroNetTrainConfig, train_dronet
    overrides = {k: v for k, v in vars(args).items()
                 if k in DroNetTrainConfig.__dataclass_fields__ and v is not None}
    model = train_dronet(args.data, args.out, DroNetTrainConfig(**overrides), device_of(args),
                         init_weights=args.init, resume=args.resume,
                         collision_only=args.collision_data or [])
    print(f"wrote {args.out}: best held-out epoch {model.checkpoint_info.get('epoch')}, "
          f"{model.checkpoint_info.get('validation')}")
    return 0


def evaluate(args) -> int:
    from ..evaluation.dronet import evaluate_table, format_table
    from ..core.paths import resolve_weights
    weights = [resolve_weights("dronet", w) for w in (args.weights or [""])]
    rows = evaluate_table(weights, args.data, device_of(args), per_frame_path=args.per_frame,
                          roc_path=args.roc)
    print(f"DroNet evaluation, {len(weights)} checkpoint(s) on {len(args.data)} dataset(s)")
    print(format_table(rows))
    for path in (args.per_frame, args.roc):
        if path:
            print(f"wrote {path}")
    write_json(args.json, {"weights": weights, "data": args.data, "rows": rows})
    return 0


def bench(args) -> int:
    from .. import models
    from ..bench.models import bench_frames, bench_model, print_table
    from ..core.paths import resolve_weights

    weights = resolve_weights("dronet", args.weights or "")
    device = device_of(args)
    frames = bench_frames(args.frames)
    rows = [{"path": "model (preprocess+forward)", **bench_model(
        models.load(weights, expected="dronet"), frames, device)}]
    if not args.no_ros:
        from ..ros.bench.node_path import bench_node_path

        parameters = {"weights": weights, "device": str(device)}
        # MultiThreadedExecutor(2) measured ~100x slower here: a short run shows it
        for executor, count in (("single", args.frames), ("multi", max(10, args.frames // 10))):
            rows.append({"path": f"node ({executor}-threaded executor)", **bench_node_path(
                "dronet_node", parameters, "std_msgs/msg/Float32",
                "/dl_perception/dronet/collision_probability", frames, count,
                executor_kind=executor)})
        for row in rows[1:]:
            row["ratio_to_model"] = row["fps"] / rows[0]["fps"]
    print(f"DroNet benchmark, 320x240 rgb8 frames, batch 1, device {device}")
    print_table(rows, ["path", "frames", "fps", "latency_ms_p50", "latency_ms_p99",
                       "ratio_to_model"])
    write_json(args.json, {"device": str(device), "rows": rows})
    return 0


def register(verbs) -> None:
    c = verbs["convert"].add_parser("dronet-keras", help="official DroNet release (Keras JSON + HDF5)")
    c.add_argument("--json", required=True, help="model_struct.json")
    c.add_argument("--weights", required=True, help="model_weights.h5")
    c.add_argument("--out", required=True, help="output checkpoint (.safetensors)")
    c.set_defaults(func=convert)

    c = verbs["convert"].add_parser(
        "pulp-dronet", help="PULP-DroNet v2 (GAPflow, NEMO/DORY) or v3 ResBlock PyTorch state_dict")
    c.add_argument("--weights", required=True, help="the .pth state_dict")
    c.add_argument("--out", required=True, help="output checkpoint (.safetensors)")
    c.add_argument("--crop-anchor", dest="crop_anchor", choices=("bottom", "centre"),
                   help="rows of the 200x200 crop of a 324x244 frame (default: bottom for v2, "
                        "centre for v3, as upstream)")
    c.set_defaults(func=convert_pulp)

    t = verbs["train"].add_parser("dronet", help="DroNet: steering MSE + collision BCE, hard mining")
    t.add_argument("--data", nargs="+", required=True,
                   help="dataset folder(s), each optionally FOLDER@START:END (fractions)")
    t.add_argument("--out", required=True, help="output checkpoint")
    t.add_argument("--collision-data", dest="collision_data", nargs="+", metavar="DATASET",
                   help="more datasets used for their collision labels only (e.g. simulator "
                        "recordings beside real steering data)")
    t.add_argument("--init", help="start from this checkpoint")
    t.add_argument("--resume", action="store_true",
                   help="continue a killed run from OUT.resume.pt (same arguments)")
    for name, kind in (("epochs", int), ("batch_size", int), ("learning_rate", float),
                       ("collision_start_epoch", float), ("collision_ramp_epochs", float),
                       ("hard_mining_start_epoch", float), ("hard_mining_ramp_epochs", float),
                       ("shift_fraction", float), ("flip_probability", float),
                       ("photometric", float), ("val_fraction", float), ("seed", int)):
        t.add_argument("--" + name.replace("_", "-"), dest=name, type=kind)
    t.add_argument("--val-split", dest="val_split", choices=("random", "tail"),
                   help="held-out frames for choosing the epoch: random (default) or the last "
                        "--val-fraction of each dataset (sequences)")
    t.add_argument("--distill-collision", dest="distill_collision", nargs="+", metavar="TEACHER",
                   help="frames without a collision label learn the mean probability of these "
                        "checkpoints")
    t.add_argument("--distill-steering", dest="distill_steering", nargs="+", metavar="TEACHER",
                   help="steering target = --distill-steering-weight x these checkpoints' mean "
                        "steering + the rest x the label")
    t.add_argument("--distill-steering-weight", dest="distill_steering_weight", type=float)
    t.add_argument("--freeze", nargs="+", metavar="PREFIX",
                   help="parameter-name prefixes to keep fixed, e.g. conv1 blocks collision")
    add_device_arg(t)
    t.set_defaults(func=train)

    e = verbs["eval"].add_parser(
        "dronet", help="EVA/RMSE (steering), accuracy/F1/ROC-AUC (collision): one row per "
                       "dataset and checkpoint, beside a constant baseline")
    e.add_argument("--weights", nargs="+",
                   help="checkpoint(s); default: the shipped one (shipped:sim: the simulator's)")
    e.add_argument("--data", nargs="+", required=True,
                   help="dataset folder(s), each one row; FOLDER@START:END takes a fraction "
                        "range, A,B joins folders into one row")
    e.add_argument("--per-frame", dest="per_frame", metavar="CSV",
                   help="write every frame's labels and outputs here")
    e.add_argument("--roc", metavar="PNG", help="draw the collision ROC curves here")
    e.add_argument("--json", help="also write the metrics here")
    add_device_arg(e)
    e.set_defaults(func=evaluate)

    b = verbs["bench"].add_parser("dronet", help="model alone vs. through the ROS node")
    b.add_argument("--weights", help="checkpoint (default: the shipped one)")
    b.add_argument("--frames", type=int, default=200)
    b.add_argument("--no-ros", action="store_true", help="model only")
    b.add_argument("--json")
    add_device_arg(b)
    b.set_defaults(func=bench)
