"""Helpers shared by command modules."""
from __future__ import annotations

import json
import os


def add_device_arg(parser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def device_of(args):
    from ..core.device import select_device
    return select_device(args.device)


def write_json(path: str | None, payload: dict) -> None:
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
        print(f"wrote {path}")


def print_metrics(title: str, metrics: dict) -> None:
    print(title)
    for key, value in metrics.items():
        print(f"  {key:24s} {value:.4f}" if isinstance(value, float) else f"  {key:24s} {value}")
