"""LIFT and visual-odometry commands: train lift, eval features, eval vo, bench lift."""
from __future__ import annotations

from .common import add_device_arg, device_of, write_json


def train(args) -> int:
    import torch

    from ..training.lift import STAGES, LIFTTrainConfig, train_lift
    overrides = {k: v for k, v in vars(args).items()
                 if k in LIFTTrainConfig.__dataclass_fields__ and v is not None}
    if "image_size" in overrides:
        overrides["image_size"] = list(overrides["image_size"])
    if args.threads:
        torch.set_num_threads(args.threads)
    stages = tuple(args.stages.split(",")) if args.stages else STAGES
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise SystemExit(f"error: unknown stage(s) {unknown} (stages: {', '.join(STAGES)})")
    model = train_lift(args.images or [], args.sequences or [], args.out,
                       LIFTTrainConfig(**overrides), device_of(args), init_weights=args.init,
                       stages=stages)
    stages_info = model.checkpoint_info.get("stages", {})
    print(f"wrote {args.out}: " + ", ".join(
        f"{name} validation {info.get('validation')}" for name, info in stages_info.items()))
    return 0


def eval_features(args) -> int:
    from ..evaluation.features import (LIFTExtractor, OpenCVExtractor, evaluate_features,
                                       format_report)
    extractors = []
    if not args.no_lift:
        from .. import models
        from ..ros.node_base import resolve_weights
        weights = resolve_weights("lift", args.weights or "")
        extractors.append(LIFTExtractor(models.load(weights, expected="lift"), device_of(args),
                                        args.max_keypoints))
        print(f"LIFT weights: {weights}")
    extractors += [OpenCVExtractor("SIFT", args.max_keypoints),
                   OpenCVExtractor("ORB", args.max_keypoints)]
    result = evaluate_features(args.pairs, extractors, args.threshold)
    print(format_report(result))
    write_json(args.json, result)
    return 0


def register(verbs) -> None:
    e = verbs["eval"].add_parser(
        "features", help="repeatability, matching score, MMA, homography accuracy vs SIFT and ORB")
    e.add_argument("--pairs", required=True, help="folder of <name>A, <name>B, "
                   "<name>_H_A_to_B.derived.txt (e.g. ../shared/data/homography)")
    e.add_argument("--weights", help="LIFT checkpoint (default: the shipped one)")
    e.add_argument("--max-keypoints", type=int, default=1000, help="budget for every method")
    e.add_argument("--threshold", type=float, default=3.0, help="correctness threshold (px)")
    e.add_argument("--no-lift", action="store_true", help="baselines only")
    e.add_argument("--json", help="also write every number here")
    add_device_arg(e)
    e.set_defaults(func=eval_features)

    t = verbs["train"].add_parser(
        "lift", help="LIFT: descriptor, orientation, detector stages on pairs with known geometry")
    t.add_argument("--images", nargs="+", help="image folder(s): random homography pairs")
    t.add_argument("--sequences", nargs="+", help="sequence folder(s): depth + pose pairs")
    t.add_argument("--out", required=True, help="output checkpoint (.safetensors)")
    t.add_argument("--init", help="start from this checkpoint")
    t.add_argument("--stages", help="comma-separated subset of descriptor,orientation,detector")
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--image-size", dest="image_size", type=int, nargs=2, metavar=("W", "H"),
                   help="size of the training pairs (default 320 240)")
    for name, kind in (("preset", str), ("descriptor_steps", int), ("orientation_steps", int),
                       ("detector_steps", int), ("batch_size", int), ("learning_rate", float),
                       ("margin", float), ("pairs_in_memory", int), ("refresh_every", int),
                       ("validate_every", int), ("validation_pairs", int), ("seed", int)):
        t.add_argument("--" + name.replace("_", "-"), dest=name, type=kind)
    add_device_arg(t)
    t.set_defaults(func=train)
