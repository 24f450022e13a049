"""LIFT: Learned Invariant Feature Transform (Yi, Trulls, Lepetit, Fua, ECCV 2016).

Three networks joined by spatial transformers, so detection, orientation and description form
one differentiable pipeline:

* detector: one convolution followed by TILDE's piecewise-linear (generalised hinging
  hyperplane, GHH) activation, giving a score map. Training takes the keypoint location with a
  soft argmax over the map of a patch; at run time the map is computed on an image pyramid and
  keypoints come from non-maximum suppression over space and scale plus top-k.
* orientation estimator (Yi et al., CVPR 2016): 64x64 patch -> conv 5x5/10, 5x5/20, 3x3/50 with
  max pooling, two GHH fully connected layers -> a 2-vector; the angle is its atan2.
* descriptor (Simo-Serra et al., ICCV 2015): 64x64 patch -> conv 7x7/32, 6x6/64, 5x5/128, each
  followed by tanh, L2 pooling (2, 3, 4) and, after the first two, local subtractive
  normalisation -> 128-D, L2-normalised.

Geometry conventions: pixel coordinates with (0, 0) at the centre of the top-left pixel, angles in
radians in the image plane (x right, y down), `scale` = the keypoint's characteristic scale sigma
in pixels of the input image. The descriptor and orientation patches cover a square of side
`support * sigma`; the detector sees keypoints of sigma = `detector_sigma` in its own frame, so a
pyramid level downsampled by f yields keypoints of sigma = detector_sigma * f.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..core.preprocessing import PreprocessSpec
from ..core.device import REDUCED_PRECISION
from .base import PerceptionModel
from .outputs import KeypointOutputs


@dataclass
class LIFTConfig:
    patch_size: int = 64  # orientation and descriptor input (pixels)
    support: float = 12.0  # patch side / keypoint sigma (SIFT's descriptor window is 12 sigma)
    detector_filter: int = 25  # TILDE-style convolution kernel
    ghh_sum: int = 4  # GHH: planes summed with alternating signs ...
    ghh_max: int = 4  # ... each the max of this many linear responses
    detector_sigma: float = 2.0  # keypoint sigma in the detector's frame (pixels)
    detector_search: int = 24  # soft-argmax window of a training patch (detector frame)
    softargmax_strength: float = 10.0
    orientation_channels: list = field(default_factory=lambda: [10, 20, 50])
    orientation_hidden: int = 100
    descriptor_channels: list = field(default_factory=lambda: [32, 64, 128])
    descriptor_dim: int = 128
    # run-time detection defaults (lift_node parameters override them)
    # factor 0.5 = the image upsampled twice (as SIFT's first octave): keypoints that shrink in
    # another view under zoom are still found
    scales: list = field(default_factory=lambda: [2 ** (i / 2) for i in range(-2, 7)])
    max_keypoints: int = 1000
    score_threshold: float = 0.0
    nms_radius: int = 3  # pixels of the pyramid level
    min_contrast: float = 0.01  # local std (0..1 intensities) below which nothing is detected
    border: int = 8  # pixels of the input image kept free of keypoints
    # opt-in (docs/lift.md): each level's score map smoothed (Gaussian sigma, level pixels)
    # before its maxima are taken, and maxima on ridges dropped (ratio of the score's principal
    # curvatures above edge_ratio): better-localised but fewer keypoints; 0 = off
    score_smoothing: float = 0.0
    edge_ratio: float = 0.0


@dataclass(frozen=True)
class DetectionSettings:
    """What a caller may change between frames without touching the weights: an argument of
    `forward` and `detect`, never state of the model."""

    max_keypoints: int
    score_threshold: float
    nms_radius: int
    scales: tuple
    min_contrast: float
    border: int
    score_smoothing: float
    edge_ratio: float


# --------------------------------------------------------------------------------------------
# spatial transformer: differentiable crops at (x, y, sigma, angle)

def image_pyramid(image: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """1xCxHxW -> [image, /2, /4, ...] by 2x2 averaging (pixel j of level l+1 covers pixels
    2j, 2j+1 of level l, so centres map as x_l = (x + 0.5) / 2**l - 0.5)."""
    pyramid = [image]
    for _ in range(levels - 1):
        if min(pyramid[-1].shape[-2:]) < 4:
            break
        pyramid.append(F.avg_pool2d(pyramid[-1], 2, ceil_mode=True))
    return pyramid


def sample_patches(pyramid: list[torch.Tensor], centers: torch.Tensor, sigmas: torch.Tensor,
                   angles: torch.Tensor, size: int, support: float,
                   image_index: torch.Tensor | None = None) -> torch.Tensor:
    """Crop N rotated, scaled square patches (side `support * sigma` pixels, `size` samples) by
    bilinear sampling from the pyramid level whose pixel best matches the sampling step, so large
    patches are not aliased. Differentiable in centres, sigmas and angles. The pyramid tensors may
    hold several images (batch B); `image_index` (N,) says which one each patch comes from."""
    n = centers.shape[0]
    batch, channels = pyramid[0].shape[:2]
    if n == 0:
        return centers.new_zeros((0, channels, size, size))
    if image_index is None:
        image_index = torch.zeros(n, dtype=torch.long, device=centers.device)
    step = support * sigmas / size  # input pixels per patch pixel
    level = torch.clamp(torch.floor(torch.log2(step.detach().clamp(min=1e-6))), 0,
                        len(pyramid) - 1).long()
    offsets = (torch.arange(size, dtype=centers.dtype, device=centers.device) + 0.5 - size / 2)
    oy, ox = torch.meshgrid(offsets, offsets, indexing="ij")  # size x size
    cos, sin = torch.cos(angles)[:, None, None], torch.sin(angles)[:, None, None]
    scaled = step[:, None, None]
    # patch x axis along the angle: p = c + step * R(angle) [ox, oy]
    px = centers[:, 0, None, None] + scaled * (cos * ox - sin * oy)
    py = centers[:, 1, None, None] + scaled * (sin * ox + cos * oy)
    # the B images of a level are the depth slices of one volume: trilinear sampling at a slice
    # centre is bilinear sampling of that image, so each level takes a single call
    slice_z = ((image_index.to(centers.dtype) + 0.5) / batch) * 2 - 1
    parts, order = [], []
    for lev in torch.unique(level).tolist():
        picked = torch.nonzero(level == lev).squeeze(1)
        source = pyramid[lev]
        height, width = source.shape[-2:]
        factor = 2.0 ** lev
        gx = ((px[picked] + 0.5) / factor) / width * 2 - 1  # align_corners=False normalisation
        gy = ((py[picked] + 0.5) / factor) / height * 2 - 1
        if batch == 1:  # plain bilinear sampling: half the work of the trilinear path
            grid = torch.stack([gx, gy], dim=-1).reshape(1, -1, size, 2)  # 1 x n_l*size x size x 2
            sampled = F.grid_sample(source, grid, mode="bilinear", padding_mode="border",
                                    align_corners=False)  # 1 x C x n_l*size x size
            parts.append(sampled[0].reshape(channels, -1, size, size).transpose(0, 1))
            order.append(picked)
            continue
        gz = slice_z[picked, None, None].expand_as(gx)
        grid = torch.stack([gx, gy, gz], dim=-1)[None]  # 1 x n_l x size x size x 3
        volume = source.transpose(0, 1)[None]  # 1 x C x B x H x W
        sampled = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border",
                                align_corners=False)  # 1 x C x n_l x size x size
        parts.append(sampled[0].transpose(0, 1))
        order.append(picked)
    out = torch.cat(parts)
    return out[torch.argsort(torch.cat(order))]


# --------------------------------------------------------------------------------------------
# building blocks

class GHH(nn.Module):
    """Generalised hinging hyperplanes (TILDE): channels grouped as (out, sum, max); output =
    sum_s delta_s max_m x[out, s, m] with delta alternating +1, -1. Piecewise linear, and any
    convex-minus-convex function can be approximated with enough planes."""

    def __init__(self, num_sum: int, num_max: int):
        super().__init__()
        self.num_sum, self.num_max = num_sum, num_max
        delta = torch.tensor([1.0 if s % 2 == 0 else -1.0 for s in range(num_sum)])
        self.register_buffer("delta", delta, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        group = self.num_sum * self.num_max
        if shape[1] % group:
            raise ValueError(f"GHH needs a multiple of {group} channels, got {shape[1]}")
        x = x.reshape(shape[0], shape[1] // group, self.num_sum, self.num_max, *shape[2:])
        x = x.amax(dim=3)  # no indices: ~10x faster than max(dim).values on a CPU
        delta = self.delta.reshape(1, 1, -1, *([1] * (len(shape) - 2)))
        return (x * delta).sum(dim=2)


class Detector(nn.Module):
    """One convolution + GHH -> a single-channel score map (valid convolution)."""

    def __init__(self, config: LIFTConfig):
        super().__init__()
        self.conv = nn.Conv2d(1, config.ghh_sum * config.ghh_max, config.detector_filter)
        self.ghh = GHH(config.ghh_sum, config.ghh_max)
        self._init_rotation_symmetric(config.detector_sigma)

    @torch.no_grad()
    def _init_rotation_symmetric(self, sigma: float) -> None:
        """Start from random mixtures of centred Gaussians (difference-of-Gaussians-like,
        zero mean): responses that turn with the image, so training starts from a detector whose
        maxima are repeatable under rotation instead of from arbitrary filters."""
        size = self.conv.kernel_size[0]
        coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        radius2 = coords[None, :] ** 2 + coords[:, None] ** 2
        widths = sigma * torch.tensor([0.5, 0.71, 1.0, 1.41, 2.0])
        bases = torch.exp(-radius2[None] / (2 * widths[:, None, None] ** 2))
        bases = bases / bases.sum(dim=(1, 2), keepdim=True)
        mix = torch.randn(self.conv.out_channels, len(widths))
        kernels = torch.einsum("ok,kij->oij", mix, bases)
        kernels = kernels - kernels.mean(dim=(1, 2), keepdim=True)
        kernels = kernels / kernels.flatten(1).norm(dim=1)[:, None, None]
        self.conv.weight.copy_(kernels[:, None])
        self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ghh(self.conv(x))


class OrientationNet(nn.Module):
    def __init__(self, config: LIFTConfig):
        super().__init__()
        c1, c2, c3 = config.orientation_channels
        self.conv1 = nn.Conv2d(1, c1, 5)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.conv3 = nn.Conv2d(c2, c3, 3)
        side = config.patch_size
        for kernel in (5, 5, 3):
            side = (side - kernel + 1) // 2
        group = config.ghh_sum * config.ghh_max
        self.fc1 = nn.Linear(c3 * side * side, config.orientation_hidden * group)
        self.fc2 = nn.Linear(config.orientation_hidden, 2 * group)
        self.ghh = GHH(config.ghh_sum, config.ghh_max)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """N x 1 x P x P -> N x 2 unit vectors (cos, sin of the orientation)."""
        x = standardize(patches)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        x = self.ghh(self.fc1(x.flatten(1)))
        x = self.ghh(self.fc2(x))
        return F.normalize(x, dim=1, eps=1e-8)


class SubtractiveNorm(nn.Module):
    """Local subtractive normalisation: subtract the Gaussian-weighted mean over a 5x5
    neighbourhood and all channels (weights renormalised at the borders)."""

    def __init__(self, size: int = 5, sigma: float = 1.0):
        super().__init__()
        coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
        kernel = torch.outer(g, g)
        self.register_buffer("kernel", (kernel / kernel.sum())[None, None], persistent=False)
        self.pad = size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        local = F.conv2d(mean, self.kernel, padding=self.pad)
        coverage = F.conv2d(torch.ones_like(mean), self.kernel, padding=self.pad)
        return x - local / coverage


def box_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over a window x window neighbourhood (stride 1, same size, the part inside the image
    at the borders), as two 1-D passes: the same numbers as one 2-D pooling at half the cost."""
    half = window // 2
    x = F.avg_pool2d(x, (1, window), 1, (0, half), count_include_pad=False)
    return F.avg_pool2d(x, (window, 1), 1, (half, 0), count_include_pad=False)


def box_max(x: torch.Tensor, window: int) -> torch.Tensor:
    """Maximum over a window x window neighbourhood (stride 1, same size), as two 1-D passes."""
    half = window // 2
    return F.max_pool2d(F.max_pool2d(x, (1, window), 1, (0, half)), (window, 1), 1, (half, 0))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of BxCxHxW maps (replicated borders, same size)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-taps ** 2 / (2 * sigma * sigma))
    kernel = (kernel / kernel.sum()).repeat(x.shape[1], 1, 1, 1)  # C x 1 x 1 x K
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel, groups=x.shape[1])
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"),
                    kernel.transpose(2, 3), groups=x.shape[1])


def l2_pool(x: torch.Tensor, kernel: int) -> torch.Tensor:
    return torch.sqrt(F.avg_pool2d(x * x, kernel) * (kernel * kernel) + 1e-8)


def standardize(patches: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per patch (illumination invariance); flat patches stay ~0."""
    mean = patches.mean(dim=(1, 2, 3), keepdim=True)
    std = patches.std(dim=(1, 2, 3), keepdim=True)
    return (patches - mean) / (std + 1e-2)


class DescriptorNet(nn.Module):
    def __init__(self, config: LIFTConfig):
        super().__init__()
        c1, c2, c3 = config.descriptor_channels
        if c3 != config.descriptor_dim:
            raise ValueError("the last descriptor layer has descriptor_dim channels")
        self.conv1 = nn.Conv2d(1, c1, 7)
        self.conv2 = nn.Conv2d(c1, c2, 6)
        self.conv3 = nn.Conv2d(c2, c3, 5)
        self.norm = SubtractiveNorm()
        side = config.patch_size
        for kernel, pool in ((7, 2), (6, 3), (5, 4)):
            side = (side - kernel + 1) // pool
        if side != 1:
            raise ValueError(f"patch_size {config.patch_size} does not reduce to 1x1")

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """N x 1 x P x P -> N x 128, L2-normalised."""
        x = standardize(patches)
        x = self.norm(l2_pool(torch.tanh(self.conv1(x)), 2))
        x = self.norm(l2_pool(torch.tanh(self.conv2(x)), 3))
        x = l2_pool(torch.tanh(self.conv3(x)), 4)
        return F.normalize(x.flatten(1), dim=1)


# --------------------------------------------------------------------------------------------
# the model

def soft_argmax(scores: torch.Tensor, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """N x 1 x H x W score maps -> (N x 2 expected (x, y) under softmax(strength * score), in map
    pixels; N softmax-weighted scores, LIFT's soft max-pooling used by the classification loss)."""
    n, _, height, width = scores.shape
    flat = scores.reshape(n, -1)
    weights = torch.softmax(strength * flat, dim=1)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=scores.dtype, device=scores.device),
                            torch.arange(width, dtype=scores.dtype, device=scores.device),
                            indexing="ij")
    x = (weights * xs.reshape(1, -1)).sum(1)
    y = (weights * ys.reshape(1, -1)).sum(1)
    return torch.stack([x, y], dim=1), (weights * flat).sum(1)


def _subpixel(score: torch.Tensor, yy: torch.Tensor, xx: torch.Tensor):
    """Offsets (-0.5..0.5) of the maxima at (yy, xx) from a parabola through each one and its two
    neighbours along x and along y; a coarse pyramid level would otherwise quantise keypoint
    positions to its pixel size."""
    height, width = score.shape
    finite = torch.where(torch.isfinite(score), score, torch.zeros_like(score))

    def offset(minus, centre, plus):
        curvature = minus - 2 * centre + plus
        value = 0.5 * (minus - plus) / torch.where(curvature < 0, curvature, -torch.ones_like(curvature))
        usable = (curvature < 0)
        return torch.where(usable, value.clamp(-0.5, 0.5), torch.zeros_like(value))
    centre = finite[yy, xx]
    xm, xp = (xx - 1).clamp(0, width - 1), (xx + 1).clamp(0, width - 1)
    ym, yp = (yy - 1).clamp(0, height - 1), (yy + 1).clamp(0, height - 1)
    ok_x = torch.isfinite(score[yy, xm]) & torch.isfinite(score[yy, xp])
    ok_y = torch.isfinite(score[ym, xx]) & torch.isfinite(score[yp, xx])
    sub_x = torch.where(ok_x, offset(finite[yy, xm], centre, finite[yy, xp]), torch.zeros_like(centre))
    sub_y = torch.where(ok_y, offset(finite[ym, xx], centre, finite[yp, xx]), torch.zeros_like(centre))
    return sub_x, sub_y


def _is_peak(score: torch.Tensor, yy: torch.Tensor, xx: torch.Tensor, ratio: float) -> torch.Tensor:
    """True where the maximum at (yy, xx) is a peak rather than a point on a ridge: the score's
    Hessian there (finite differences) has a ratio of principal curvatures below `ratio`, the
    test SIFT applies to its difference of Gaussians. Along a ridge a maximum can sit anywhere,
    so it moves between views. Maxima next to masked (-inf) pixels pass."""
    height, width = score.shape
    ym, yp = (yy - 1).clamp(0, height - 1), (yy + 1).clamp(0, height - 1)
    xm, xp = (xx - 1).clamp(0, width - 1), (xx + 1).clamp(0, width - 1)
    centre = score[yy, xx]
    dxx = score[yy, xp] - 2 * centre + score[yy, xm]
    dyy = score[yp, xx] - 2 * centre + score[ym, xx]
    dxy = (score[yp, xp] - score[yp, xm] - score[ym, xp] + score[ym, xm]) / 4
    trace, det = dxx + dyy, dxx * dyy - dxy * dxy
    peak = (det > 0) & (trace * trace < (ratio + 1) ** 2 / ratio * det)
    return peak | ~torch.isfinite(trace * trace + det)


class LIFT(PerceptionModel):
    name = "lift"
    Config = LIFTConfig
    outputs = KeypointOutputs(fields={
        "keypoints": "N x 2 pixel coordinates, strongest first", "scales": "N sigma (px)",
        "orientations": "N radians", "scores": "N detector scores",
        "descriptors": "N x 128, unit length"})
    # checkpoint configs are refused outside these (models/base.py); sizes bound the memory
    config_bounds = {"patch_size": (8, 256), "support": (1.0, 100.0), "detector_filter": (1, 101),
                     "ghh_sum": (1, 16), "ghh_max": (1, 16), "detector_sigma": (0.1, 100.0),
                     "detector_search": (1, 512), "softargmax_strength": (0.0, 1e4),
                     "orientation_channels": (1, 1024), "orientation_hidden": (1, 4096),
                     "descriptor_channels": (1, 1024), "descriptor_dim": (1, 4096),
                     "scales": (1 / 64, 64.0), "max_keypoints": (1, 100_000),
                     "score_threshold": (-1e6, 1e6), "nms_radius": (0, 64),
                     "min_contrast": (0.0, 1.0), "border": (0, 1024),
                     "score_smoothing": (0.0, 10.0), "edge_ratio": (0.0, 1e3)}
    batchable = False
    presets = {
        # CPU default: smaller detector kernel and descriptor/orientation widths, four octaves
        "cpu": {"detector_filter": 15, "orientation_channels": [8, 16, 32],
                "orientation_hidden": 32, "descriptor_channels": [16, 32, 128],
                "max_keypoints": 500},
        "paper": {},
    }

    def __init__(self, config: LIFTConfig):
        super().__init__(config)
        self.detector = Detector(config)
        self.orientation = OrientationNet(config)
        self.descriptor = DescriptorNet(config)

    def default_settings(self, **changes) -> DetectionSettings:
        """The config's detection settings, with `changes` (DetectionSettings fields)."""
        config = self.config
        return DetectionSettings(**{
            "max_keypoints": config.max_keypoints, "score_threshold": config.score_threshold,
            "nms_radius": config.nms_radius, "scales": tuple(config.scales),
            "min_contrast": config.min_contrast, "border": config.border,
            "score_smoothing": config.score_smoothing, "edge_ratio": config.edge_ratio,
            **changes})

    # --- preprocessing ------------------------------------------------------------------------

    @property
    def detector_patch(self) -> int:
        """Side of a detector training patch: the soft-argmax window plus the filter's margin."""
        return self.config.detector_search + self.config.detector_filter - 1

    # --- pieces used by training and run time -------------------------------------------------
    def score_map(self, images: torch.Tensor) -> torch.Tensor:
        """Same-size score map (reflect padding) of BxCxHxW images."""
        pad = self.config.detector_filter // 2
        padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
        return self.detector(padded)

    # How the patch networks run (`forward` arguments the engine measures): patches per pass,
    # 0 = all at once (on a CPU, 32-64 at a time keep every activation in cache: measured 1.8x
    # faster than all 500 at once, with the same numbers); "reduced" = bf16 on a CPU / fp16 on
    # CUDA for the orientation and descriptor networks only, the detector (which decides the
    # keypoints) staying fp32.
    EXECUTION_CHOICES = {"patch_batch": [0, 256, 64, 32], "patch_precision": ["fp32", "reduced"]}

    def execution_choices(self) -> dict[str, list]:
        return self.EXECUTION_CHOICES

    @staticmethod
    def _patch_network_precision(device: torch.device, precision: str):
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=REDUCED_PRECISION.get(device.type, torch.bfloat16))

    def orient(self, pyramid, centers, sigmas, image_index=None,
               precision: str = "fp32") -> torch.Tensor:
        """Orientation (radians) of keypoints, from upright patches."""
        zero = torch.zeros_like(sigmas)
        patches = sample_patches(pyramid, centers, sigmas, zero, self.config.patch_size,
                                 self.config.support, image_index)
        with self._patch_network_precision(patches.device, precision):
            vector = self.orientation(patches).float()
        return torch.atan2(vector[:, 1], vector[:, 0])

    def describe(self, pyramid, centers, sigmas, angles, image_index=None,
                 precision: str = "fp32") -> torch.Tensor:
        patches = sample_patches(pyramid, centers, sigmas, angles, self.config.patch_size,
                                 self.config.support, image_index)
        with self._patch_network_precision(patches.device, precision):
            return self.descriptor(patches).float()

    def pyramid_for(self, images: torch.Tensor, max_sigma: float) -> list[torch.Tensor]:
        step = self.config.support * max_sigma / self.config.patch_size
        return image_pyramid(images, max(1, int(math.floor(math.log2(max(step, 1.0)))) + 1))

    # --- run time -----------------------------------------------------------------------------
    def detect(self, image: torch.Tensor, settings: DetectionSettings | None = None):
        """1x1xHxW image -> (keypoints N x 2, sigmas N, scores N), strongest first."""
        s = settings or self.default_settings()
        height, width = image.shape[-2:]
        empty = (image.new_zeros((0, 2)), image.new_zeros(0), image.new_zeros(0))
        maps, factors, scales_used = [], [], []
        for factor in sorted(s.scales):
            h, w = int(round(height / factor)), int(round(width / factor))
            if min(h, w) < self.config.detector_filter:
                break
            level = image if (h, w) == (height, width) else F.interpolate(
                image, size=(h, w), mode="bilinear", align_corners=False, antialias=factor > 1)
            score = self.score_map(level)
            if s.score_smoothing > 0:
                score = gaussian_blur(score, s.score_smoothing)
            score = score[0, 0]
            # no keypoints where the image is (locally) flat: black, saturated, textureless
            window = max(3, int(round(2 * self.config.detector_sigma)) * 2 + 1)
            mean, mean_sq = box_mean(torch.cat([level, level * level], dim=1), window)[0]
            flat = (mean_sq - mean * mean).clamp(min=0).sqrt() < s.min_contrast
            score = score.masked_fill(flat, float("-inf"))
            maps.append(score)
            factors.append((width / w, height / h))
            scales_used.append(factor)
        if not maps:
            return empty
        keypoints, sigmas, scores = [], [], []
        radius = max(1, int(s.nms_radius))
        for index, score in enumerate(maps):
            h, w = score.shape
            neighbours = {}  # scale neighbours, resampled to this grid
            for other in (index - 1, index + 1):
                if 0 <= other < len(maps):
                    neighbours[other] = F.interpolate(maps[other][None, None], size=(h, w),
                                                      mode="bilinear", align_corners=False)[0, 0]
            local_max = box_max(torch.stack([score, *neighbours.values()]).amax(dim=0)[None, None],
                                2 * radius + 1)[0, 0]
            fx, fy = factors[index]
            border_x = max(s.border / fx, self.config.detector_filter / 2)
            border_y = max(s.border / fy, self.config.detector_filter / 2)
            ys, xs = torch.meshgrid(torch.arange(h, device=score.device),
                                    torch.arange(w, device=score.device), indexing="ij")
            keep = ((score >= local_max) & torch.isfinite(score) & (score > s.score_threshold)
                    & (xs >= border_x) & (xs < w - border_x)
                    & (ys >= border_y) & (ys < h - border_y))
            yy, xx = torch.nonzero(keep, as_tuple=True)
            if s.edge_ratio > 0:
                peak = _is_peak(score, yy, xx, s.edge_ratio)
                yy, xx = yy[peak], xx[peak]
            if len(yy) == 0:
                continue
            sub_x, sub_y = _subpixel(score, yy, xx)
            # level pixel centres -> input pixel coordinates
            keypoints.append(torch.stack([(xx.to(image.dtype) + sub_x + 0.5) * fx - 0.5,
                                          (yy.to(image.dtype) + sub_y + 0.5) * fy - 0.5], dim=1))
            level_sigma = self.config.detector_sigma * math.sqrt(fx * fy)
            if self.scale_interpolation:
                sigmas.append(level_sigma * self._scale_offset(score, neighbours, index, scales_used, yy, xx))
            else:
                sigmas.append(torch.full((len(yy),), level_sigma, dtype=image.dtype, device=image.device))
            scores.append(score[yy, xx])
        if not keypoints:
            return empty
        keypoints, sigmas, scores = torch.cat(keypoints), torch.cat(sigmas), torch.cat(scores)
        order = torch.argsort(scores, descending=True)[: max(0, int(s.max_keypoints))]
        return keypoints[order], sigmas[order], scores[order]

    scale_interpolation = True

    @staticmethod
    def _scale_offset(score, neighbours, index, scales, yy, xx) -> torch.Tensor:
        """Factor on a level's sigma from a parabola through the scores of the level and its two
        scale neighbours at each keypoint (log-scale), as SIFT interpolates its scale: the
        levels are sqrt(2) apart, so without it a keypoint's scale is off by up to 19 %."""
        centre = score[yy, xx]
        ones = torch.ones_like(centre)
        if index - 1 not in neighbours or index + 1 not in neighbours:
            return ones
        below, above = neighbours[index - 1][yy, xx], neighbours[index + 1][yy, xx]
        curvature = below - 2 * centre + above
        usable = (curvature < 0) & torch.isfinite(below) & torch.isfinite(above)
        offset = 0.5 * (below - above) / torch.where(usable, curvature, -ones)
        offset = torch.where(usable, offset.clamp(-0.5, 0.5), torch.zeros_like(offset))
        step_up = math.log(scales[index + 1] / scales[index])
        step_down = math.log(scales[index] / scales[index - 1])
        return torch.exp(offset * torch.where(offset > 0, step_up * ones, step_down * ones))

    def forward(self, batch: torch.Tensor, settings: DetectionSettings | None = None,
                patch_batch: int = 0, patch_precision: str = "fp32") -> dict[str, torch.Tensor]:
        """One image (1x1xHxW, intensities in [0, 1]) -> keypoints (N x 2, pixels), scales (N,
        sigma in pixels), orientations (N, radians), scores (N), descriptors (N x 128).
        `settings`: this call's detection settings (default: the config's); `patch_batch`,
        `patch_precision`: how the patch networks run (EXECUTION_CHOICES)."""
        if batch.shape[0] != 1 or batch.shape[1] != 1:
            raise ValueError(f"LIFT takes one grayscale image (1x1xHxW), got {tuple(batch.shape)}")
        if patch_batch not in self.EXECUTION_CHOICES["patch_batch"] or \
                patch_precision not in self.EXECUTION_CHOICES["patch_precision"]:
            raise ValueError(f"lift: no execution choice patch_batch={patch_batch!r}, "
                             f"patch_precision={patch_precision!r} (have {self.EXECUTION_CHOICES})")
        keypoints, sigmas, scores = self.detect(batch, settings)
        if len(keypoints) == 0:
            return {"keypoints": keypoints, "scales": sigmas, "orientations": sigmas.clone(),
                    "scores": scores,
                    "descriptors": batch.new_zeros((0, self.config.descriptor_dim))}
        pyramid = self.pyramid_for(batch, float(sigmas.max()))
        angles, descriptors = [], []
        step = patch_batch or len(keypoints)
        for part in (slice(start, start + step) for start in range(0, len(keypoints), step)):
            angles.append(self.orient(pyramid, keypoints[part], sigmas[part],
                                      precision=patch_precision))
            descriptors.append(self.describe(pyramid, keypoints[part], sigmas[part], angles[-1],
                                             precision=patch_precision))
        angles, descriptors = torch.cat(angles), torch.cat(descriptors)
        return {"keypoints": keypoints, "scales": sigmas, "orientations": angles,
                "scores": scores, "descriptors": descriptors}

    def preprocessing_spec(self) -> PreprocessSpec:
        """Grey at the camera's own size and depth (the detector's pyramid does the scaling)."""
        return PreprocessSpec(color="gray")


MODEL = LIFT
