"""LIFT and visual-odometry commands: train lift, eval features, eval vo, bench lift."""
from __future__ import annotations

from .common import add_device_arg, device_of, write_json


def _threads(args) -> None:
    if getattr(args, "threads", None):
        import torch
        torch.set_num_threads(args.threads)


def train(args) -> int:
    from ..training.lift import STAGES, LIFTTrainConfig, train_lift
    overrides = {k: v for k, v in vars(args).items()
                 if k in LIFTTrainConfig.__dataclass_fields__ and v is not None}
    if "image_size" in overrides:
        overrides["image_size"] = list(overrides["image_size"])
    _threads(args)
    stages = tuple(args.stages.split(",")) if args.stages else STAGES
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise SystemExit(f"error: unknown stage(s) {unknown} (stages: {', '.join(STAGES)})")
    model = train_lift(args.images or [], args.sequences or [], args.out,
                       LIFTTrainConfig(**overrides), device_of(args), init_weights=args.init,
                       stages=stages, scene_folders=args.scenes or [],
                       track_cache=args.track_cache, resume=args.resume)
    stages_info = model.checkpoint_info.get("stages", {})
    print(f"wrote {args.out}: " + ", ".join(
        f"{name} validation {info.get('validation')}" for name, info in stages_info.items()))
    return 0


def eval_features(args) -> int:
    if not args.pairs and not args.poses:
        raise SystemExit("error: give --pairs and/or --poses")
    _threads(args)
    from ..evaluation.features import (LIFTExtractor, OpenCVExtractor, evaluate_features,
                                       format_report)
    extractors = []
    if not args.no_lift:
        from .. import models
        from ..core.paths import resolve_weights
        weights = resolve_weights("lift", args.weights or "")
        detection = {name: value for name, value in (("score_smoothing", args.score_smoothing),
                                                     ("edge_ratio", args.edge_ratio))
                     if value is not None}
        for name, value in detection.items():
            if not value >= 0:
                raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 0 (0 = off), got {value}")
        extractors.append(LIFTExtractor(models.load(weights, expected="lift"), device_of(args),
                                        args.max_keypoints, **detection))
        print(f"LIFT weights: {weights}" + "".join(f", {k} {v}" for k, v in detection.items()))
    extractors += [OpenCVExtractor("SIFT", args.max_keypoints),
                   OpenCVExtractor("ORB", args.max_keypoints)]
    result = evaluate_features(args.pairs or [], extractors, args.threshold,
                               pose_scenes=args.poses or [], pose_gap=args.pose_gap)
    print(format_report(result))
    write_json(args.json, result)
    return 0


def _extractor(args):
    """(name, rgb -> (keypoints, descriptors)) for the chosen features."""
    import hashlib

    import cv2
    import numpy as np
    if args.features != "lift":
        from ..evaluation.features import OpenCVExtractor
        opencv = OpenCVExtractor(args.features.upper(), args.max_keypoints)
        if opencv.metric != "l2":
            raise ValueError("VO matches float descriptors: use lift or sift")
        return args.features, lambda rgb: opencv(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    from .. import models
    from ..evaluation.features import LIFTExtractor
    from ..core.paths import resolve_weights
    weights = resolve_weights("lift", args.weights or "")
    with open(weights, "rb") as handle:  # the name tells weights apart (feature cache key)
        weights_digest = hashlib.sha1(handle.read()).hexdigest()[:12]
    lift = LIFTExtractor(models.load(weights, expected="lift"), device_of(args),
                         args.max_keypoints)

    def extract(rgb):
        points, descriptors = lift(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        return points, np.asarray(descriptors, np.float32)
    return f"lift ({weights}, sha1 {weights_digest})", extract


def _depth_predictor(args):
    """depth_node's computation for `--depth model`: the depth network's metric depth on the
    frame's own grid (NaN where the network does not look)."""
    from .. import models
    from ..core.imaging import DecodedImage
    from ..core.paths import resolve_weights
    weights = resolve_weights("depth", args.depth_weights or "")
    model = models.load(weights, expected="depth").to(device_of(args)).eval()
    return weights, lambda rgb: model.predict_image(DecodedImage(rgb, "rgb8"))


def eval_vo(args) -> int:
    _threads(args)
    from ..evaluation.vo import evaluate_vo, format_vo_report
    name, extract = _extractor(args)
    use_depth = args.depth == "recorded"
    predict_depth = None
    if args.depth == "model":
        depth_weights, predict_depth = _depth_predictor(args)
        scale = f"metric scale from the depth network ({depth_weights}), as depth_node gives it"
    elif use_depth:
        scale = "metric scale from the recorded depth images"
    else:
        scale = "monocular (up to scale)"
    print(f"VO on {name} features, {scale}")
    cache = None
    if args.feature_cache:  # keyed by what makes the features: method, weights, budget
        import hashlib
        cache = (args.feature_cache,
                 hashlib.sha1(f"{name} {args.max_keypoints}".encode()).hexdigest()[:12])
    result = evaluate_vo(args.sequences, extract, args.out, use_depth=use_depth,
                         max_frames=args.max_frames, target_percent=args.target,
                         feature_cache=cache, predict_depth=predict_depth,
                         alignment=args.align)
    print(format_vo_report(result))
    print(f"trajectories (TUM format) and plots (<sequence>.trajectory.png) in {args.out}")
    write_json(args.json, {"features": name, "depth": args.depth, **result})
    return 0


def bench(args) -> int:
    import cv2
    import torch

    from .. import models
    from ..bench.models import bench_features, print_table, synthetic_frames
    from ..core.imaging import DecodedImage, to_gray
    from ..core.paths import resolve_weights

    _threads(args)
    weights = resolve_weights("lift", args.weights or "")
    device = device_of(args)
    model = models.load(weights, expected="lift").to(device).eval()
    settings = model.default_settings(max_keypoints=args.max_keypoints)
    frames = [DecodedImage(cv2.resize(f.pixels, (args.width, args.height)), "rgb8")
              for f in synthetic_frames(min(args.frames, 20))]
    frames = (frames * (args.frames // len(frames) + 1))[: args.frames]

    def lift(frame):
        with torch.inference_mode():
            out = model(model.preprocess(frame).to(device), settings=settings)
        return len(out["descriptors"].cpu())

    def lift_detector(frame):
        with torch.inference_mode():
            return len(model.detect(model.preprocess(frame).to(device), settings)[0].cpu())
    sift_detector = cv2.SIFT_create(nfeatures=args.max_keypoints)

    def sift(frame):
        return len(sift_detector.detectAndCompute(to_gray(frame), None)[0])
    rows = [{"path": "OpenCV SIFT (baseline)", **bench_features(sift, frames)},
            {"path": "LIFT model (detect+orient+describe)", **bench_features(lift, frames)},
            {"path": "LIFT detector only", **bench_features(lift_detector, frames)}]
    if not args.no_ros:
        from ..ros.bench.node_path import bench_node_path

        parameters = {"weights": weights, "device": str(device),
                      "max_keypoints": args.max_keypoints}
        node = bench_node_path("lift_node", parameters, "sensor_msgs/msg/PointCloud2",
                               "/dl_perception/features", frames, len(frames),
                               timeout_per_frame=30.0)
        node["keypoints_per_s"] = node["fps"] * rows[1]["keypoints_per_frame"]
        rows.append({"path": "lift_node (single-threaded executor)", **node})
    for row in rows:
        row["ratio_to_sift"] = row["fps"] / rows[0]["fps"]
    print(f"LIFT benchmark ({weights}), {args.width}x{args.height} rgb8 frames, up to "
          f"{args.max_keypoints} keypoints, device {device}, {torch.get_num_threads()} threads")
    print_table(rows, ["path", "frames", "fps", "keypoints_per_frame", "keypoints_per_s",
                       "latency_ms_p50", "ratio_to_sift"])
    write_json(args.json, {"device": str(device), "rows": rows})
    return 0


def register(verbs) -> None:
    e = verbs["eval"].add_parser(
        "features", help="repeatability, matching score, MMA, homography accuracy and relative-pose "
        "AUC vs SIFT and ORB")
    e.add_argument("--pairs", nargs="+", help="homography pair sets: folders of <name>A, <name>B, "
                   "<name>_H_A_to_B.derived.txt (../shared/data/homography) or HPatches-style "
                   "sequences (../shared/data/churchill_homography)")
    e.add_argument("--poses", nargs="+", help="relative-pose scenes: folders with images/ and "
                   "cameras.csv (a held-out ../shared/data/strecha_mvs scene)")
    e.add_argument("--pose-gap", type=int, default=3,
                   help="pose pairs: views up to this far apart in capture order")
    e.add_argument("--weights", help="LIFT checkpoint (default: the shipped one)")
    e.add_argument("--max-keypoints", type=int, default=1000, help="budget for every method")
    e.add_argument("--threshold", type=float, default=3.0, help="correctness threshold (px)")
    e.add_argument("--score-smoothing", type=float,
                   help="LIFT detection: Gaussian sigma on each level's score map (default: the "
                   "weights' config, off)")
    e.add_argument("--edge-ratio", type=float,
                   help="LIFT detection: drop maxima on ridges of the score (default: the "
                   "weights' config, off)")
    e.add_argument("--no-lift", action="store_true", help="baselines only")
    e.add_argument("--json", help="also write every number here")
    e.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    add_device_arg(e)
    e.set_defaults(func=eval_features)

    v = verbs["eval"].add_parser(
        "vo", help="visual odometry on sequences: TUM trajectories, ATE/RPE with evo")
    v.add_argument("--sequences", nargs="+", required=True, help="sequence folder(s)")
    v.add_argument("--out", default="vo_output", help="folder for the TUM trajectories")
    v.add_argument("--features", choices=("lift", "sift"), default="lift")
    v.add_argument("--weights", help="LIFT checkpoint (default: the shipped one)")
    v.add_argument("--depth", choices=("none", "recorded", "model"), default="none",
                   help="none: monocular, up to scale; recorded: the sequence's depth images "
                        "stand in for depth_node (metric scale); model: the depth network's "
                        "depth, as depth_node publishes it (metric scale)")
    v.add_argument("--depth-weights", help="depth checkpoint for --depth model (default: the "
                   "shipped one)")
    v.add_argument("--align", choices=("auto", "sim3", "se3"), default="auto",
                   help="trajectory alignment before the errors: auto = Sim(3) for monocular "
                        "runs, SE(3) for metric ones")
    v.add_argument("--max-keypoints", type=int, default=1000)
    v.add_argument("--max-frames", type=int, help="only the first N frames of each sequence")
    v.add_argument("--feature-cache", help="folder keeping each sequence's features, so that "
                   "another run (e.g. --depth recorded after --depth none) skips the network")
    v.add_argument("--target", type=float, default=2.0, help="ATE RMSE target, %% of path")
    v.add_argument("--json")
    v.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    add_device_arg(v)
    v.set_defaults(func=eval_vo)

    b = verbs["bench"].add_parser("lift", help="keypoints/s and frames/s, vs OpenCV SIFT")
    b.add_argument("--weights", help="checkpoint (default: the shipped one)")
    b.add_argument("--frames", type=int, default=30)
    b.add_argument("--width", type=int, default=640)
    b.add_argument("--height", type=int, default=480)
    b.add_argument("--max-keypoints", type=int, default=500)
    b.add_argument("--no-ros", action="store_true", help="model only")
    b.add_argument("--json")
    b.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    add_device_arg(b)
    b.set_defaults(func=bench)

    t = verbs["train"].add_parser(
        "lift", help="LIFT: descriptor, orientation, detector stages on pairs with known geometry")
    t.add_argument("--images", nargs="+", help="image folder(s): random homography pairs")
    t.add_argument("--sequences", nargs="+", help="sequence folder(s): depth + pose pairs")
    t.add_argument("--scenes", nargs="+", help="multi-view scene folder(s) with images/ and "
                   "cameras.csv (../shared/data/strecha_mvs/<scene>): tracks of real 3D points")
    t.add_argument("--track-cache", help="folder keeping each scene's tracks (built once)")
    t.add_argument("--resume", action="store_true", help="go on from the state saved beside --out")
    t.add_argument("--out", required=True, help="output checkpoint (.safetensors)")
    t.add_argument("--init", help="start from this checkpoint")
    t.add_argument("--stages", help="comma-separated subset of descriptor,orientation,detector,"
                                    "covariance (covariance runs only with --covariance-steps)")
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--image-size", dest="image_size", type=int, nargs=2, metavar=("W", "H"),
                   help="size of the training pairs (default 320 240)")
    for name, kind in (("preset", str), ("descriptor_steps", int), ("orientation_steps", int),
                       ("detector_steps", int), ("batch_size", int), ("learning_rate", float),
                       ("margin", float), ("pairs_in_memory", int), ("refresh_every", int),
                       ("validate_every", int), ("validation_pairs", int), ("seed", int),
                       ("scene_fraction", float), ("keypoints_per_pair", int),
                       ("images_per_folder", int), ("detector_offset", float),
                       ("alpha_classification", float), ("alpha_overlap", float),
                       ("alpha_pair", float), ("covariance_steps", int),
                       ("covariance_learning_rate", float), ("covariance_anchor", float)):
        t.add_argument("--" + name.replace("_", "-"), dest=name, type=kind)
    t.add_argument("--descriptor-orientation", dest="descriptor_orientation",
                   choices=("known", "learned"),
                   help="descriptor patches at the known rotation (default, the paper's) or at "
                        "the orientation network's angles (fine-tuning to its real errors)")
    add_device_arg(t)
    t.set_defaults(func=train)
