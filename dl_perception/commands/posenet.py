"""PoseNet commands: train posenet, eval posenet, bench posenet."""
from __future__ import annotations

from .common import add_device_arg, device_of, print_metrics, write_json

# settings of the loss and architecture that `--init` takes from the checkpoint unless given
INHERITED = ("preset", "aux_heads", "learned_weighting", "beta", "norm")


def _sources(args, paths: list[str], split: str):
    from ..datasets.poses import open_posed_images

    return [open_posed_images(p, split=args.split or split, image_topic=args.image_topic,
                              pose_topic=args.pose_topic, max_pose_gap=args.max_pose_gap,
                              frame_id=args.frame_id) for p in paths]


def train(args) -> int:
    import json
    import os

    from ..core.checkpoint import read_metadata
    from ..training.common import refuse_evaluation_worlds
    from ..training.posenet import PoseNetTrainConfig, train_posenet

    if args.epochs is not None and args.epochs < 1:
        raise ValueError("--epochs must be at least 1")
    for path in args.data + (args.val_data or []):
        refuse_evaluation_worlds(path if os.path.isdir(path) else os.path.dirname(path))
    # continuing a model: its architecture and loss stay those it was trained with unless given
    inherited = {}
    if args.init:
        info = json.loads(read_metadata(args.init).get("info", "{}"))
        inherited = {k: v for k, v in info.get("train_config", {}).items() if k in INHERITED}
    overrides = {k: v for k, v in vars(args).items()
                 if k in PoseNetTrainConfig.__dataclass_fields__ and v is not None}
    cfg = PoseNetTrainConfig(**{**inherited, **overrides})
    model = train_posenet(_sources(args, args.data, "train"), args.out, cfg, device_of(args),
                          val_sources=_sources(args, args.val_data, "train") if args.val_data
                          else None, init_weights=args.init, resume=args.resume)
    print(f"wrote {args.out}: epoch {model.checkpoint_info['epoch']}, validation "
          f"{model.checkpoint_info.get('validation')}")
    return 0


def evaluate(args) -> int:
    from ..evaluation.posenet import evaluate_posenet
    from ..core.paths import resolve_weights

    weights = resolve_weights("posenet", args.weights or "")
    metrics = evaluate_posenet(weights, _sources(args, args.data, "test"), device_of(args))
    print_metrics(f"PoseNet evaluation of {weights} on {', '.join(args.data)}", metrics)
    write_json(args.json, metrics)
    return 0


def bench(args) -> int:
    from .. import models
    from ..bench.models import bench_model, print_table, synthetic_frames

    device = device_of(args)
    frames = synthetic_frames(min(args.frames, 50))
    frames = (frames * (args.frames // len(frames) + 1))[: args.frames]
    rows = []
    for preset in ("cpu", "paper"):
        model = models.create("posenet", preset)
        rows.append({"preset": preset, "crop": "x".join(map(str, model.config.crop)),
                     "parameters_M": sum(p.numel() for p in model.parameters()) / 1e6,
                     **bench_model(model, frames, device)})
    for row in rows:
        row["fps_ratio_to_paper"] = row["fps"] / rows[-1]["fps"]
    print(f"PoseNet benchmark, 320x240 rgb8 frames, preprocess + forward, batch 1, device {device}")
    print_table(rows, ["preset", "crop", "parameters_M", "frames", "fps", "latency_ms_p50",
                       "latency_ms_p99", "fps_ratio_to_paper"])
    write_json(args.json, {"device": str(device), "rows": rows})
    return 0


def _add_source_args(parser) -> None:
    parser.add_argument("--split", choices=("train", "test"),
                        help="Cambridge / 7-Scenes list to read (default: train for training, "
                             "test for evaluation)")
    parser.add_argument("--image-topic", default="/camera/image_raw", help="bags: image topic")
    parser.add_argument("--pose-topic", default="/ground_truth/odometry",
                        help="bags: PoseStamped, PoseWithCovarianceStamped, TransformStamped or "
                             "Odometry topic")
    parser.add_argument("--max-pose-gap", type=float, default=0.1,
                        help="bags: an image is labelled only when pose messages lie within this "
                             "many seconds before and after it (s)")
    parser.add_argument("--frame-id", help="scene frame of the poses (default: what the data says)")


def register(verbs) -> None:
    t = verbs["train"].add_parser(
        "posenet", help="PoseNet: camera pose regression on one scene",
        description="Train PoseNet on sequence folders, Cambridge Landmarks or 7-Scenes folders, "
                    "or rosbag2 recordings (image + pose topic) of one scene.")
    t.add_argument("--data", nargs="+", required=True, help="dataset folders or bags")
    t.add_argument("--val-data", nargs="+", help="validation data (default: a random share of "
                                                 "--data, see --val-fraction)")
    t.add_argument("--out", required=True, help="output checkpoint")
    t.add_argument("--init", help="continue (resume or fine-tune) from this checkpoint: its scene "
                                  "normalisation, preset and loss settings are kept; the "
                                  "learning rate schedule starts afresh from --learning-rate")
    t.add_argument("--resume", action="store_true",
                   help="continue a killed run from OUT.resume.pt (same arguments); every epoch "
                        "also goes to OUT.history.csv and OUT.loss.png")
    t.add_argument("--preset", choices=("cpu", "paper"))
    t.add_argument("--aux-heads", action="store_true", default=None,
                   help="the paper's two auxiliary pose regressors (weight 0.3)")
    t.add_argument("--learned-weighting", action="store_true", default=None,
                   help="learn the position/orientation weighting (Kendall & Cipolla 2017) "
                        "instead of --beta")
    t.add_argument("--beta", type=float, help="orientation weight (paper: 120-750 indoor, "
                                              "250-2000 outdoor; default 500)")
    t.add_argument("--norm", choices=("l2", "l1"), help="loss norm (default l2, the 2015 paper)")
    for name, kind in (("epochs", int), ("batch_size", int), ("learning_rate", float),
                       ("weight_decay", float), ("val_fraction", float), ("seed", int)):
        t.add_argument("--" + name.replace("_", "-"), dest=name, type=kind)
    _add_source_args(t)
    add_device_arg(t)
    t.set_defaults(func=train)

    e = verbs["eval"].add_parser(
        "posenet", help="median position / rotation error, share within 0.5 m and 5 degrees")
    e.add_argument("--weights", help="checkpoint (default: the shipped one)")
    e.add_argument("--data", nargs="+", required=True, help="dataset folders or bags")
    e.add_argument("--json", help="also write the metrics here")
    _add_source_args(e)
    add_device_arg(e)
    e.set_defaults(func=evaluate)

    b = verbs["bench"].add_parser("posenet", help="cpu preset vs. the paper's GoogLeNet")
    b.add_argument("--frames", type=int, default=100)
    b.add_argument("--json")
    add_device_arg(b)
    b.set_defaults(func=bench)
