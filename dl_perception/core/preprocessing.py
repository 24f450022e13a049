"""Declarative preprocessing: what a network does to a decoded frame before its first layer is
data (`PreprocessSpec`), run by one implementation on the host (OpenCV/numpy, one frame) and on a
device (torch, a batch of uploaded RGB frames), and compared with the spec a checkpoint stores.

The steps, in order:
1. colour: "gray" keeps the source's depth (uint8, uint16 or float grey) until scaling, as the
   keypoint and steering networks need 16-bit cameras; "rgb" converts to 8-bit RGB first.
2. resize: "none"; "fixed" to `size` (width, height); "cover": aspect kept, scaled so that the
   image covers the box `size` / `view` (`view`: the centred fraction of the image the box is)
   and is at least `crop` large.
3. crop: `crop` (width, height) out of the resized image, columns centred, rows centred or at
   the bottom (`crop_rows`).
4. scale to [0, 1] (1/255 for 8 bits, 1/65535 for 16 bits, float kept), float32 N x C x H x W.
Those four make the batch `host` and `device` return (what every model's `forward` takes). The
network's own input stage follows, first thing inside `forward` (`NetworkInput`, one module for
every network that uses it; its constants follow the model's dtype and device):
5. channels: "as_is", or "luma" (ITU-R BT.601 luma of the RGB batch, one channel).
6. normalize: "none"; "fixed" (minus `mean`, divided by `std`, per channel; their averages for a
   luma channel); "image" (each image minus its own mean, divided by its own standard deviation
   + IMAGE_STD_EPSILON, so a flat image stays flat instead of becoming amplified noise).

Interpolation: "linear" (OpenCV INTER_LINEAR), "area" (INTER_AREA, also when enlarging), or
"area_or_linear" (area when the resized image has fewer pixels, bilinear when more).
Steps 5-6 are part of the weights' meaning; they are data here so that a checkpoint's stored spec
states them and is compared with the model's (NetVLAD's cpu preset: luma + per-image
standardisation; depth and PoseNet: fixed mean/std, still applied by their own `forward`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from . import tensor_preprocess as tp
from .checkpoint import CheckpointError
from .imaging import DecodedImage, ImageDecodeError, gray_scale_factor, to_gray, to_rgb8

SPEC_VERSION = 1
COLORS = ("gray", "rgb")
RESIZES = ("none", "fixed", "cover")
INTERPOLATIONS = ("linear", "area", "area_or_linear")
CROP_ROWS = ("centre", "bottom")
CHANNELS = ("as_is", "luma")
NORMALIZATIONS = ("none", "fixed", "image")
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as OpenCV's RGB2GRAY
IMAGE_STD_EPSILON = 1e-2
_CV_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


@dataclass(frozen=True)
class PreprocessSpec:
    color: str
    resize: str = "none"
    size: tuple[int, int] | None = None  # fixed: the target; cover: the box to cover
    view: float = 1.0  # cover: the box is this centred fraction of the resized image
    interpolation: str = "linear"
    crop: tuple[int, int] | None = None  # (width, height); None = the whole resized image
    crop_rows: str = "centre"
    channels: str = "as_is"  # the network's input stage (NetworkInput)
    normalize: str = "none"
    mean: tuple[float, ...] | None = None  # normalize "fixed": per channel of the batch
    std: tuple[float, ...] | None = None

    def __post_init__(self):
        def pair(value):
            return None if value is None else (int(value[0]), int(value[1]))

        def floats(value):
            return None if value is None else tuple(float(v) for v in value)
        object.__setattr__(self, "size", pair(self.size))
        object.__setattr__(self, "crop", pair(self.crop))
        object.__setattr__(self, "view", float(self.view))
        object.__setattr__(self, "mean", floats(self.mean))
        object.__setattr__(self, "std", floats(self.std))
        problems = [f"{name} '{value}' is not one of {allowed}" for name, value, allowed in (
            ("color", self.color, COLORS), ("resize", self.resize, RESIZES),
            ("interpolation", self.interpolation, INTERPOLATIONS),
            ("crop_rows", self.crop_rows, CROP_ROWS), ("channels", self.channels, CHANNELS),
            ("normalize", self.normalize, NORMALIZATIONS)) if value not in allowed]
        if self.channels == "luma" and self.color != "rgb":
            problems.append("channels 'luma' needs color 'rgb'")
        if (self.normalize == "fixed") != (self.mean is not None and self.std is not None):
            problems.append("normalize 'fixed' and a mean and std go together")
        if self.normalize == "fixed" and self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std) or len(self.mean) != (1 if self.color == "gray" else 3):
                problems.append(f"mean {self.mean} and std {self.std} need one value per "
                                f"{self.color} channel")
            if min(self.std) <= 0:
                problems.append(f"std {self.std} is not positive")
        if self.resize != "none" and self.size is None:
            problems.append(f"resize '{self.resize}' needs a size")
        if self.resize == "cover" and self.crop is None:
            problems.append("resize 'cover' needs a crop (the network's input size)")
        if not 0.0 < self.view <= 1.0:
            problems.append(f"view {self.view} is not in (0, 1]")
        for name, value in (("size", self.size), ("crop", self.crop)):
            if value is not None and min(value) <= 0:
                problems.append(f"{name} {value} is not positive")
        if problems:
            raise ValueError("preprocessing spec: " + "; ".join(problems))

    # --- geometry ---------------------------------------------------------------------------
    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the frame after the resize step."""
        if self.resize == "none":
            return width, height
        box_w, box_h = self.size
        if self.resize == "fixed":
            return box_w, box_h
        scale = max(box_w / (self.view * width), box_h / (self.view * height))
        crop_w, crop_h = self.crop
        return max(crop_w, int(round(width * scale))), max(crop_h, int(round(height * scale)))

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(left, top, width, height) of the crop in the resized frame."""
        resized_w, resized_h = self.resized_size(width, height)
        if self.crop is None:
            return 0, 0, resized_w, resized_h
        crop_w, crop_h = self.crop
        top = resized_h - crop_h if self.crop_rows == "bottom" else (resized_h - crop_h) // 2
        return (resized_w - crop_w) // 2, top, crop_w, crop_h

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the network input made from a width x height frame."""
        return self.crop_box(width, height)[2:]

    def _interpolation(self, width: int, height: int) -> str:
        if self.interpolation != "area_or_linear":
            return self.interpolation
        resized_w, resized_h = self.resized_size(width, height)
        return "area" if resized_w * resized_h < width * height else "linear"

    # --- running ----------------------------------------------------------------------------
    def host(self, image: DecodedImage) -> torch.Tensor:
        """One decoded frame -> 1 x C x H x W float32 on the CPU (OpenCV)."""
        if image.height == 0 or image.width == 0:
            raise ImageDecodeError("empty", f"image has zero size ({image.width}x{image.height})")
        pixels = to_gray(image) if self.color == "gray" else to_rgb8(image.pixels, image.encoding)
        width, height = image.width, image.height
        resized_w, resized_h = self.resized_size(width, height)
        if (resized_w, resized_h) != (width, height):
            pixels = cv2.resize(pixels, (resized_w, resized_h),
                                interpolation=_CV_INTERPOLATION[self._interpolation(width, height)])
        left, top, crop_w, crop_h = self.crop_box(width, height)
        pixels = pixels[top:top + crop_h, left:left + crop_w]
        if self.color == "gray":  # grey of any depth: times its factor (float32, as before)
            scaled = pixels.astype(np.float32) * np.float32(gray_scale_factor(pixels))
            return torch.from_numpy(np.ascontiguousarray(scaled))[None, None]
        # 8-bit RGB: divided by 255 in float32 (x / 255 and x * (1 / 255) differ in the last bit)
        return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float().div_(255.0)[None]

    def device(self, frames: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W uint8 RGB frames on any device (tensor_preprocess.upload) -> the batch
        `host` makes of them one by one, on that device: within OpenCV's fixed-point rounding (a
        grey level now and then), except where "area" enlarges an axis (OpenCV interpolates
        bilinearly there, tensor_preprocess blends cell overlaps: up to 8 levels at a few
        pixels, as the models' own two paths today)."""
        height, width = frames.shape[-2:]
        if height == 0 or width == 0:
            raise ImageDecodeError("empty", f"frames have zero size ({width}x{height})")
        pixels = tp.gray(frames) if self.color == "gray" else frames
        resized_w, resized_h = self.resized_size(width, height)
        pixels = tp.resize(pixels, resized_w, resized_h, self._interpolation(width, height))
        return tp.crop(pixels, *self.crop_box(width, height)) / 255.0

    def network_input(self) -> "NetworkInput":
        """Steps 5-6 as a module for the model to run first in its `forward`."""
        return NetworkInput(self)

    # --- checkpoints ------------------------------------------------------------------------
    def to_metadata(self) -> dict:
        """What a checkpoint stores (JSON): the spec's fields and its version."""
        fields = dataclasses.asdict(self)
        fields.update({name: list(getattr(self, name)) if getattr(self, name) else None
                       for name in ("size", "crop", "mean", "std")})
        return {"spec_version": SPEC_VERSION, **fields}

    @classmethod
    def from_metadata(cls, metadata: dict) -> "PreprocessSpec":
        version = metadata.get("spec_version")
        if version != SPEC_VERSION:
            raise ValueError(f"preprocessing spec version {version!r}, this code reads "
                             f"{SPEC_VERSION}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(metadata) - names - {"spec_version"})
        if unknown:
            raise ValueError(f"preprocessing spec: unknown fields {unknown}")
        missing = sorted(names - set(metadata))
        if missing:  # a default would hide what the checkpoint does not say
            raise ValueError(f"preprocessing spec: missing fields {missing}")
        return cls(**{k: v for k, v in metadata.items() if k in names})

    def differences(self, other: "PreprocessSpec") -> list[str]:
        """'field: this vs other' for every field that differs."""
        return [f"{f.name}: {getattr(self, f.name)!r} vs {getattr(other, f.name)!r}"
                for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(other, f.name)]


class NetworkInput(nn.Module):
    """The spec's channels and normalize steps on a batch of `host`/`device` output. Its
    constants are buffers outside the state dict: they follow the model's `.to()` (dtype, device)
    and add no checkpoint keys."""

    def __init__(self, spec: PreprocessSpec):
        super().__init__()
        self.channels, self.normalize = spec.channels, spec.normalize
        self.register_buffer("luma_weights", torch.tensor(LUMA_WEIGHTS, dtype=torch.float32)
                             .view(1, 3, 1, 1), persistent=False)
        mean, std = (spec.mean, spec.std) if spec.normalize == "fixed" else ((0.0,), (1.0,))
        mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        if spec.channels == "luma":  # one channel: the averages of the RGB statistics
            mean, std = mean.mean(), std.mean()
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.channels == "luma":
            batch = (batch * self.luma_weights).sum(1, keepdim=True)
        if self.normalize == "image":
            mean = batch.mean(dim=(1, 2, 3), keepdim=True)
            std = batch.std(dim=(1, 2, 3), keepdim=True)
            return (batch - mean) / (std + IMAGE_STD_EPSILON)
        if self.normalize == "fixed":
            return (batch - self.mean) / self.std
        return batch


# Keys of the prose `preprocessing_info` that checkpoints written before the spec hold, with
# what each says about the spec (the rest of the prose repeats the config).
def _legacy_claims(prose: dict) -> dict:
    claims = {}
    color = str(prose.get("color", ""))
    if color:
        # NetVLAD's "grey (BT.601 luma of rgb)": an RGB input whose luma the network takes
        claims["color"] = "gray" if color.startswith("gray") else "rgb"
        if color.startswith("grey") and "luma" in color:
            claims["channels"] = "luma"
    normalize = prose.get("normalize")
    if isinstance(normalize, str) and normalize.startswith("per image"):
        claims["normalize"] = "image"
    elif isinstance(normalize, dict) and {"mean", "std"} <= set(normalize):
        claims.update(normalize="fixed", mean=tuple(float(v) for v in normalize["mean"]),
                      std=tuple(float(v) for v in normalize["std"]))
    elif {"mean", "std"} <= set(prose):  # depth's prose
        claims.update(normalize="fixed", mean=tuple(float(v) for v in prose["mean"]),
                      std=tuple(float(v) for v in prose["std"]))
    if "resize_to_wh" in prose:
        claims["size"] = tuple(int(v) for v in prose["resize_to_wh"])
    for key in ("crop_wh", "input_size_wh"):
        if key in prose:
            claims["crop"] = tuple(int(v) for v in prose[key])
    if "view_crop" in prose:
        claims["view"] = float(prose["view_crop"])
    return claims


def preprocessing_mismatch(stored: dict, expected: PreprocessSpec) -> list[str]:
    """Why a checkpoint's stored preprocessing does not fit the model's spec (empty: it fits).
    A stored spec must equal the model's field for field; a checkpoint from before the spec
    (prose only) must agree where its prose states a colour, size, crop, view, channels or
    normalisation."""
    if "spec_version" in stored:
        try:
            return PreprocessSpec.from_metadata(stored).differences(expected)
        except (TypeError, ValueError) as error:
            return [f"unreadable stored spec: {error}"]
    return [f"{name}: {value!r} vs {getattr(expected, name)!r}"
            for name, value in _legacy_claims(stored).items() if value != getattr(expected, name)]


def require_preprocessing(stored: dict, expected: PreprocessSpec, source: str) -> None:
    """The loader's check: a CheckpointError naming every field where the checkpoint's stored
    preprocessing (`source`: its path or name) differs from the model's spec."""
    problems = preprocessing_mismatch(stored, expected)
    if problems:
        raise CheckpointError(f"{source}: preprocessing does not match the model's: "
                              + "; ".join(problems))


__all__ = ["IMAGE_STD_EPSILON", "LUMA_WEIGHTS", "NetworkInput", "PreprocessSpec",
           "preprocessing_mismatch", "require_preprocessing", "SPEC_VERSION"]
