"""Preprocessing on torch tensors, on whichever device holds the frames.

The engine uploads each frame once (N x 3 x H x W uint8 RGB) and every model prepares its input
from that one tensor (`PerceptionModel.preprocess_tensor`). The steps mirror the OpenCV ones of
the models' `preprocess`, including the rounding to uint8 after each step, so both paths agree to
within OpenCV's fixed-point interpolation (a grey level now and then); the engine reports the
resulting output difference per model.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

# ITU-R BT.601 luma, as OpenCV's RGB2GRAY
GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def upload(frames: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """HxWx3 uint8 RGB frames of one size -> N x 3 x H x W uint8 on `device`: one copy per
    frame into a (pinned, for CUDA) staging tensor and one non-blocking transfer."""
    stacked = torch.from_numpy(np.stack(frames))
    if device.type == "cuda":
        stacked = stacked.pin_memory().to(device, non_blocking=True)
    return stacked.permute(0, 3, 1, 2)


def gray(frames: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W RGB (0..255) -> N x 1 x H x W grey levels, rounded like uint8 OpenCV."""
    weights = torch.tensor(GRAY_WEIGHTS, dtype=torch.float32, device=frames.device)
    return torch.einsum("nchw,c->nhw", frames.float(), weights).round_()[:, None]


@functools.lru_cache(maxsize=64)
def _area_weights(source: int, target: int, device: str) -> torch.Tensor:
    """target x source matrix averaging the source cells each target cell covers (fractional
    overlaps at the ends): OpenCV's INTER_AREA (when enlarging, a target cell inside one source
    cell copies it and one straddling two blends them)."""
    scale = source / target
    starts = np.arange(target) * scale
    ends = starts + scale
    cells = np.arange(source)
    overlap = np.clip(np.minimum(ends[:, None], cells[None] + 1)
                      - np.maximum(starts[:, None], cells[None]), 0, None)
    return torch.from_numpy((overlap / scale).astype(np.float32)).to(device)


def resize(frames: torch.Tensor, width: int, height: int, mode: str) -> torch.Tensor:
    """N x C x H x W (0..255, float or uint8) -> N x C x height x width, rounded like uint8.
    mode "area": box averaging (OpenCV's INTER_AREA); "linear": bilinear without antialiasing
    (OpenCV's INTER_LINEAR, pixel centres aligned)."""
    frames = frames.float()
    if frames.shape[-2:] == (height, width):
        return frames
    if mode == "area":
        rows = _area_weights(frames.shape[-2], height, str(frames.device))
        cols = _area_weights(frames.shape[-1], width, str(frames.device))
        out = torch.einsum("yh,nchw,xw->ncyx", rows, frames, cols)
    elif mode == "linear":
        out = F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False,
                            antialias=False)
    else:
        raise ValueError(f"unknown resize mode '{mode}'")
    return out.round_().clamp_(0, 255)


def crop(frames: torch.Tensor, left: int, top: int, width: int, height: int) -> torch.Tensor:
    return frames[..., top:top + height, left:left + width]
