"""Depth commands: train depth, eval depth, bench depth."""
from __future__ import annotations

from .common import add_device_arg, device_of, write_json

FORMAT_HELP = ("dataset layout: auto (default), sequence, nyu, kitti, tum, visp or middlebury "
               "(docs/depth.md)")


def train(args) -> int:
    from ..training.depth import DepthTrainConfig, train_depth
    overrides = {k: v for k, v in vars(args).items()
                 if k in DepthTrainConfig.__dataclass_fields__ and v is not None}
    stages = tuple(s for s in args.stages.split(",") if s)
    unknown = [s for s in stages if s not in ("coarse", "fine")]
    if unknown or not stages:
        raise ValueError(f"--stages takes coarse, fine or coarse,fine (got '{args.stages}')")
    model = train_depth(args.data, args.out, DepthTrainConfig(**overrides), device_of(args),
                        fmt=args.format, init_weights=args.init, stages=stages,
                        video_dirs=args.video, posed_dirs=args.posed, resume=args.resume,
                        sparse_dirs=args.sparse)
    info = model.checkpoint_info
    print(f"wrote {args.out}: {info.get('stack')} stack epoch {info.get('epoch')}, "
          f"validation {info.get('validation')}")
    return 0


def evaluate(args) -> int:
    from ..core.paths import resolve_weights
    from ..evaluation.depth import evaluate_depth, format_report
    weights = resolve_weights("depth", args.weights or "")
    result = evaluate_depth(weights, args.data, device_of(args), fmt=args.format,
                            stride=args.stride, min_depth=args.min_depth,
                            max_depth=args.max_depth, baseline=args.baseline,
                            error_maps=args.error_maps, error_maps_per_set=args.error_maps_per_set,
                            doffs=args.doffs)
    print(f"Depth evaluation of {weights} on {', '.join(args.data)}")
    print(format_report(result))
    write_json(args.json, result)
    return 0


def bench(args) -> int:
    from .. import models
    from ..bench.models import bench_frames, bench_model, print_table
    from ..core.paths import resolve_weights

    weights = resolve_weights("depth", args.weights or "")
    device = device_of(args)
    frames = bench_frames(args.frames)
    model = models.load(weights, expected="depth")
    rows = [{"path": "model (preprocess+forward)", **bench_model(model, frames, device)},
            {"path": "model + depth image 320x240", **bench_model(
                model, frames, device, postprocess=lambda out, frame: model.depth_on_image(
                    out["log_depth"][0, 0].cpu().numpy(), frame.width, frame.height))}]
    if not args.no_ros:
        from ..ros.bench.node_path import bench_node_path

        rows.append({"path": "node (single-threaded executor)", **bench_node_path(
            "depth_node", {"weights": weights, "device": str(device)}, "sensor_msgs/msg/Image",
            "/dl_perception/depth/image", frames, args.frames)})
    paper = models.create("depth", "paper")
    paper_frames = frames[: max(5, args.frames // 10)]
    rows.append({"path": "paper preset model (random weights)",
                 **bench_model(paper, paper_frames, device)})
    for row in rows[1:]:
        row["ratio_to_model"] = row["fps"] / rows[0]["fps"]
    config = model.config
    print(f"Depth benchmark ({weights}), 320x240 rgb8 frames, batch 1, device {device}; "
          f"network input {config.input_size[0]}x{config.input_size[1]}, paper preset "
          f"{paper.config.input_size[0]}x{paper.config.input_size[1]}")
    print_table(rows, ["path", "frames", "fps", "latency_ms_p50", "latency_ms_p99",
                       "ratio_to_model"])
    write_json(args.json, {"device": str(device), "rows": rows})
    return 0


def register(verbs) -> None:
    t = verbs["train"].add_parser(
        "depth", help="Eigen et al. 2014: coarse then fine stack, scale-invariant loss")
    t.add_argument("--data", nargs="+", required=True,
                   help="dataset folder(s): sequences (or folders of them), NYU- or KITTI-style")
    t.add_argument("--format", default="auto", help=FORMAT_HELP)
    t.add_argument("--out", required=True, help="output checkpoint")
    t.add_argument("--init", help="start from this checkpoint (e.g. to train only the fine stack)")
    t.add_argument("--video", nargs="+", help="folder(s) of consecutive real frames: "
                   "self-supervised reprojection loss with a learnt pose network")
    t.add_argument("--posed", nargs="+", help="folder(s) of <scene>/cameras.csv + images/ (known "
                   "cameras, e.g. strecha_mvs): reprojection loss with the true poses")
    t.add_argument("--sparse", nargs="+", help="dataset folder(s) of real images with sparse "
                   "metric depth (e.g. scripts/make_strecha_depth.py): --real-batch of them "
                   "join every step (scale-invariant loss)")
    t.add_argument("--select-on", dest="select_on", choices=("combined", "simulator", "relative"),
                   help="checkpoint choice per stack: combined (default: simulator validation "
                        "abs rel + held-out posed photometric error + held-out sparse-depth "
                        "median-scaled abs rel), simulator (abs rel) or relative (combined with "
                        "the simulator frames' scale-invariant log RMSE instead of abs rel)")
    t.add_argument("--resume", action="store_true",
                   help="continue a killed run from OUT.resume.pt (same arguments)")
    t.add_argument("--stages", default="coarse,fine", help="coarse,fine (default), coarse or fine")
    t.add_argument("--preset", choices=("cpu", "paper", "paper_kitti"))
    t.add_argument("--no-flip", dest="flip", action="store_false", default=None)
    t.add_argument("--lr-schedule", choices=("constant", "cosine"),
                   help="constant (default) or cosine decay to 0 over each stage")
    for name, kind in (("coarse_epochs", int), ("fine_epochs", int), ("batch_size", int),
                       ("optimizer", str), ("lr_scale", float), ("adam_lr", float),
                       ("loss_lambda", float), ("max_scale", float), ("rotation_deg", float),
                       ("color_range", float), ("val_fraction", float), ("frame_stride", int),
                       ("seed", int), ("grey_probability", float), ("real_batch", int),
                       ("video_weight", float), ("video_offset", int),
                       ("video_focal_ratio", float), ("posed_weight", float),
                       ("posed_val_scenes", str), ("pose_lr", float),
                       ("sparse_weight", float)):
        t.add_argument("--" + name.replace("_", "-"), dest=name, type=kind)
    add_device_arg(t)
    t.set_defaults(func=train)

    e = verbs["eval"].add_parser(
        "depth", help="abs/sq rel, RMSE, RMSE log, scale-invariant, delta thresholds")
    e.add_argument("--weights", help="checkpoint (default: the shipped real-camera one; "
                   "shipped:sim: the simulator's)")
    e.add_argument("--data", nargs="+", required=True, help="dataset folder(s)")
    e.add_argument("--format", default="auto", help=FORMAT_HELP)
    e.add_argument("--stride", type=int, default=1, help="evaluate every n-th frame")
    e.add_argument("--min-depth", type=float, default=0.0, help="mask ground truth below (m)")
    e.add_argument("--max-depth", type=float, default=0.0,
                   help="mask ground truth beyond (m); 0 = no cap")
    e.add_argument("--baseline", choices=("constant", "none"), default="constant",
                   help="also score the median ground-truth depth everywhere on the same pixels "
                        "(default constant)")
    e.add_argument("--error-maps", help="write error-map pictures (image, ground truth, "
                                        "prediction, abs rel per pixel) into this folder")
    e.add_argument("--error-maps-per-set", type=int, default=4,
                   help="pictures per dataset folder, evenly spaced (default 4)")
    e.add_argument("--doffs", type=float, default=0.0,
                   help="disparity offset of uncalibrated Middlebury-style pairs: depth is "
                        "proportional to 1 / (d + doffs) (default 0)")
    e.add_argument("--json", help="also write the metrics here")
    add_device_arg(e)
    e.set_defaults(func=evaluate)

    b = verbs["bench"].add_parser("depth", help="model alone vs. through the ROS node")
    b.add_argument("--weights", help="checkpoint (default: the shipped one)")
    b.add_argument("--frames", type=int, default=100)
    b.add_argument("--no-ros", action="store_true", help="model only")
    b.add_argument("--json")
    add_device_arg(b)
    b.set_defaults(func=bench)
