"""soak: a camera node under hostile frames for minutes, with its memory sampled."""
from __future__ import annotations

from .common import write_json


def soak(args) -> int:
    from ..ros.soak import run_soak
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    print(f"soak: {args.node} (raw and compressed transports), {args.rate:g} Hz of hostile "
          f"frames (every {args.sound_every}th sound) for {args.duration:g} s")
    report = run_soak(args.node, duration=args.duration, rate=args.rate, warmup=args.warmup,
                      sample_every=args.sample_every, sound_every=args.sound_every,
                      seed=args.seed,
                      on_sample=lambda t, rss: print(f"  t={t:6.1f} s  RSS {rss:7.1f} MiB",
                                                     flush=True))
    for transport, row in report["transports"].items():
        drops = ", ".join(f"{reason} {count}" for reason, count in sorted(row["drops"].items()))
        print(f"{transport:10s} received {row['received']}, processed {row['processed']}, "
              f"dropped: {drops or 'none'}")
    print(f"RSS after {report['warmup_s']:g} s warm-up {report['rss_mib_after_warmup']:.1f} MiB, "
          f"at the end {report['rss_mib_end']:.1f} MiB, peak {report['rss_mib_peak']:.1f} MiB, "
          f"slope {report['rss_mib_per_min_after_warmup']:+.2f} MiB/min")
    write_json(args.json, report)
    return 0


def register(verbs) -> None:
    p = verbs["top"].add_parser("soak", help="run a camera node under hostile frames and "
                                             "sample its memory (ROS)")
    p.add_argument("--node", default="dronet_node",
                   help="camera node: dronet_node, depth_node, lift_node, netvlad_node, ...")
    p.add_argument("--duration", type=float, default=180.0, help="seconds (default 180)")
    p.add_argument("--rate", type=float, default=30.0, help="frames/s on each transport")
    p.add_argument("--warmup", type=float, default=20.0,
                   help="seconds before the memory baseline (allocator and model warm-up)")
    p.add_argument("--sample-every", dest="sample_every", type=float, default=5.0)
    p.add_argument("--sound-every", dest="sound_every", type=int, default=3,
                   help="every Nth frame is a sound 320x240 scene, the rest hostile")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--json", help="also write the report here")
    p.set_defaults(func=soak)
