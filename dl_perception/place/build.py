"""Global descriptors of images in batches, and place databases built from a source."""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch

from .database import PlaceDatabase, model_fingerprint
from .sources import PlaceFrame


def describe_pixels(model, pixels: np.ndarray, device: torch.device, batch_size: int = 32,
                    output: str = "descriptor") -> np.ndarray:
    """N x H x W x 3 uint8 images already at the model's input size -> N x D descriptors
    (`output` "vlad": the NetVLAD vectors before whitening)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            batch = model.to_tensor(pixels[start:start + batch_size]).to(device)
            out.append(model(batch)[output].float().cpu().numpy())
    if not out:
        return np.zeros((0, model.descriptor_dim if output == "descriptor" else model.vlad_dim),
                        np.float32)
    return np.concatenate(out)


def describe_rgb(model, images: Iterable[np.ndarray], device: torch.device,
                 batch_size: int = 32) -> np.ndarray:
    """Any-size RGB uint8 images -> N x D descriptors."""
    pixels = [model.prepare_pixels(rgb) for rgb in images]
    if not pixels:
        return np.zeros((0, model.descriptor_dim), np.float32)
    return describe_pixels(model, np.stack(pixels), device, batch_size)


def build_database(model, source: Iterable[PlaceFrame], device: torch.device,
                   frame_id: str = "map", min_distance: float = 0.0, index_kind: str = "auto",
                   batch_size: int = 32, log: Callable[[str], None] | None = None) -> PlaceDatabase:
    """Describe every frame of `source` (or, with `min_distance` > 0, only frames at least that
    far from the previously kept one) and collect them in a database."""
    database = PlaceDatabase(dim=model.descriptor_dim, model=model_fingerprint(model),
                             frame_id=frame_id, index_kind=index_kind)
    pending: list[PlaceFrame] = []
    last_kept = None

    def flush():
        if pending:
            database.add(describe_pixels(model, np.stack([f.rgb for f in pending]), device,
                                         batch_size),
                         [f.position for f in pending], [f.quaternion for f in pending],
                         [f.stamp for f in pending], [f.name for f in pending])
            pending.clear()
            if log:
                log(f"  {len(database)} places")

    for frame in source:
        if min_distance > 0 and last_kept is not None and np.isfinite(frame.position).all() \
                and np.linalg.norm(frame.position - last_kept) < min_distance:
            continue
        if np.isfinite(frame.position).all():
            last_kept = frame.position
        frame.rgb = model.prepare_pixels(frame.rgb)
        pending.append(frame)
        if len(pending) >= 8 * batch_size:
            flush()
    flush()
    return database
