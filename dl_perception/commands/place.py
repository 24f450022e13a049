"""NetVLAD place recognition commands: train netvlad, place build-db, place info, eval place,
bench place."""
from __future__ import annotations

from .common import add_device_arg, device_of, print_metrics, write_json


def train(args) -> int:
    from ..training.netvlad import NetVLADTrainConfig, train_netvlad
    overrides = {k: v for k, v in vars(args).items()
                 if k in NetVLADTrainConfig.__dataclass_fields__ and v is not None}
    if len(args.val_db or ()) != len(args.val_queries or ()):
        raise ValueError("--val-db and --val-queries go together, one query set per database "
                         f"(got {len(args.val_db or ())} and {len(args.val_queries or ())})")
    validation = list(zip(args.val_db or (), args.val_queries or ()))
    device = device_of(args)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    model = train_netvlad(args.data, args.out, NetVLADTrainConfig(**overrides), device,
                          preset=args.preset, init_weights=args.init, validation=validation,
                          model_overrides={k: v for k, v in (("pca_dim", args.pca_dim),
                                                             ("whitening_power",
                                                              args.whitening_power))
                                           if v is not None},
                          backbone_weights=args.init_backbone, resume=args.resume)
    print(f"wrote {args.out} (netvlad, {model.descriptor_dim}-D descriptors)")
    return 0


def _weights(args) -> str:
    """--weights, else the shipped checkpoint (without importing the ROS layer)."""
    import os

    from ..core.checkpoint import CheckpointError
    from ..core.paths import shipped_weights
    if args.weights:
        return os.path.expanduser(args.weights)
    if not os.path.isfile(shipped_weights("netvlad")):
        raise CheckpointError(f"no netvlad weights are shipped at {shipped_weights('netvlad')}; "
                              "give --weights (see `dl-perception train netvlad`)")
    return shipped_weights("netvlad")


def _load_model(args):
    from .. import models
    return models.load(_weights(args), expected="netvlad")


def build_db(args) -> int:
    import numpy as np

    from ..place.build import build_database
    from ..place.sources import BagSource, FolderSource

    if bool(args.data) == bool(args.bag):
        raise ValueError("give exactly one of --data FOLDER or --bag BAG")
    device = device_of(args)
    model = _load_model(args).to(device)
    if args.bag:
        source = BagSource(args.bag, args.image_topic, args.pose_topic or None,
                           max_pose_gap=args.max_pose_gap)
    else:
        source = FolderSource(args.data)
    frame_id = args.frame_id or source.frame_id
    print(f"describing {len(source)} images of {args.bag or args.data} on {device}")
    database = build_database(model, source, device, frame_id=frame_id,
                              min_distance=args.min_distance, index_kind=args.index, log=print)
    database.save(args.out)
    posed = int(np.isfinite(database.positions).all(axis=1).sum())
    print(f"wrote {args.out}: {len(database)} places ({database.dim}-D, index {args.index}, "
          f"{posed} with positions), frame '{frame_id}'")
    if source.skipped:
        print(f"skipped {source.skipped} images that could not be decoded")
    if getattr(source, "truncated", None):
        print(f"warning: the bag ends early ({source.truncated}); kept what was read")
    return 0


def info(args) -> int:
    import json

    import numpy as np

    from ..place.database import PlaceDatabase
    database = PlaceDatabase.load(args.database)
    posed = int(np.isfinite(database.positions).all(axis=1).sum())
    print(json.dumps({"places": len(database), "dim": database.dim, "frame_id": database.frame_id,
                      "index": database.index_kind, "with_positions": posed,
                      "model": database.model}, indent=2))
    return 0


def evaluate(args) -> int:
    from ..evaluation.place import RECALL_AT, evaluate_place
    weights = _weights(args)
    metrics = evaluate_place(weights, args.database, args.queries, device_of(args),
                             threshold=args.threshold, ground_truth=args.ground_truth,
                             baseline=args.baseline, plot=args.plot)
    print_metrics(f"NetVLAD place recognition: {weights}\n  database {args.database}\n"
                  f"  queries  {args.queries}",
                  {k: v for k, v in metrics.items() if k != "baseline_pixels"})
    if "baseline_pixels" in metrics:
        print("descriptor  " + "  ".join(f"R@{n:<4d}" for n in RECALL_AT))
        for label, row in (("netvlad", metrics), ("pixels", metrics["baseline_pixels"])):
            print(f"{label:10s}  " + "  ".join(f"{row[f'recall_at_{n}']:.4f}" for n in RECALL_AT))
    write_json(args.json, metrics)
    return 0


def bench(args) -> int:
    from ..bench.models import bench_place_search, print_table, synthetic_frames
    device = device_of(args)
    model = _load_model(args)
    frames = synthetic_frames(args.queries)
    result = bench_place_search(model, frames, args.places, device)
    print(f"NetVLAD place search, {args.places} places, {result['queries']} queries (320x240 rgb8, "
          f"batch 1), device {device}; per query = extraction {result['extract_ms_p50']:.2f} ms "
          "(p50) + search")
    print_table(result["rows"], ["index", "places", "dim", "build_s", "search_ms_p50",
                                 "search_ms_p99", "search_share", "top1_as_exact"])
    write_json(args.json, {"device": str(device), **result})
    return 0


def register(verbs) -> None:
    t = verbs["train"].add_parser("netvlad", help="NetVLAD: weakly supervised triplet ranking")
    t.add_argument("--data", nargs="+", required=True,
                   help="sequence folders, image folders with places.csv, or named real sets "
                   "(nordland:summer:0-2149, udacity, strecha; docs/place_recognition.md)")
    t.add_argument("--out", required=True, help="output checkpoint")
    t.add_argument("--preset", default="cpu", choices=("cpu", "paper", "depth"))
    t.add_argument("--init", help="start from this checkpoint")
    t.add_argument("--init-backbone", help="depth checkpoint (`train depth`) whose Coarse 1-4 "
                   "the depth preset's backbone starts from")
    t.add_argument("--val-db", nargs="+", help="validation database folder(s) or set(s); the "
                   "mean Recall@1 over all validation pairs picks the epoch")
    t.add_argument("--val-queries", nargs="+", help="validation query folder(s), one per --val-db")
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--pca-dim", type=int, help="whitening dimension (default: the preset's; 0 = none)")
    t.add_argument("--whitening-power", type=float, help="divide each principal direction by its "
                   "standard deviation to this power: 1 = PCA whitening (default), 0 = plain PCA")
    for name, kind in (("epochs", int), ("queries_per_epoch", int), ("batch_size", int),
                       ("num_negatives", int), ("negative_pool", int),
                       ("positive_radius", float), ("negative_radius", float),
                       ("margin", float), ("learning_rate", float), ("weight_decay", float),
                       ("cache_refresh", int), ("kmeans_images", int), ("pca_images", int),
                       ("pretrain_epochs", int), ("pretrain_steps", int), ("pretrain_batch", int),
                       ("pretrain_temperature", float), ("seed", int)):
        t.add_argument("--" + name.replace("_", "-"), dest=name, type=kind)
    t.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                   help="no augmentation in the triplet epochs")
    t.add_argument("--resume", action="store_true",
                   help="continue a killed run from its last finished epoch (same arguments)")
    add_device_arg(t)
    t.set_defaults(func=train)

    place = verbs["top"].add_parser("place", help="place databases for NetVLAD").add_subparsers(
        dest="target", required=True, metavar="TARGET")
    b = place.add_parser("build-db", help="describe a recording's images into a place database")
    b.add_argument("--data", help="sequence folder or image folder with places.csv")
    b.add_argument("--bag", help="ROS 1/2 bag (sqlite3 or MCAP)")
    b.add_argument("--image-topic", default="/camera/image_raw")
    b.add_argument("--pose-topic", default="/odom",
                   help="nav_msgs/Odometry, PoseStamped or PoseWithCovarianceStamped; '' = none")
    b.add_argument("--max-pose-gap", type=float, default=0.5,
                   help="s; images farther than this from a pose get no position")
    b.add_argument("--frame-id", help="frame of the positions (default: the pose messages' "
                   "frame, 'map' for folders)")
    b.add_argument("--min-distance", type=float, default=0.0,
                   help="m; keep a frame only this far from the previous kept one")
    b.add_argument("--index", default="auto", choices=("auto", "flat", "hnsw"))
    b.add_argument("--weights", help="NetVLAD checkpoint (default: the shipped one)")
    b.add_argument("--out", required=True)
    add_device_arg(b)
    b.set_defaults(func=build_db)

    i = place.add_parser("info", help="what a place database holds")
    i.add_argument("database")
    i.set_defaults(func=info)

    e = verbs["eval"].add_parser("place", help="Recall@1/5/10/20 of NetVLAD place recognition")
    e.add_argument("--weights", help="NetVLAD checkpoint (default: the shipped one)")
    e.add_argument("--database", required=True, help="database file, or a folder or named set "
                   "(e.g. cohog:match, nordland:summer:2576-3575) to build it from")
    e.add_argument("--queries", required=True, help="query folder (sequence or places.csv) or "
                   "named set (cohog:query, nordland:winter:2576-3575)")
    e.add_argument("--threshold", type=float,
                   help="a database place this close to the query is correct (metres; frames "
                   "for nordland); default: same place id when both sets have ids, else 5")
    e.add_argument("--ground-truth", help=".npy/.json/.pkl: correct database indices per query "
                   "(VPR-Bench ground_truth_new.npy rows [query, [refs]], or one list per query)")
    e.add_argument("--baseline", choices=("pixels",),
                   help="also rank by a grey 32x24 thumbnail (zero mean, L2) in the same run")
    e.add_argument("--plot", help="write the precision-recall curves here (PNG)")
    e.add_argument("--json", help="also write the metrics here")
    add_device_arg(e)
    e.set_defaults(func=evaluate)

    s = verbs["bench"].add_parser("place", help="search vs. extraction time per query")
    s.add_argument("--weights", help="NetVLAD checkpoint (default: the shipped one)")
    s.add_argument("--places", type=int, default=10_000)
    s.add_argument("--queries", type=int, default=200)
    s.add_argument("--json")
    add_device_arg(s)
    s.set_defaults(func=bench)
