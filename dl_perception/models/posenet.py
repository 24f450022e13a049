"""PoseNet (Kendall, Grimes and Cipolla, ICCV 2015): a GoogLeNet regressing the 6-DoF camera pose
(position x, orientation quaternion q) of one image in a known scene.

The `paper` preset is GoogLeNet (Szegedy et al. 2015, Inception v1: 7x7 stem, local response
normalisation, nine Inception modules in three stages) on 224x224 crops of images resized to a
shorter side of 256, with the paper's changes: the classifiers become affine pose regressors, a
2048-wide fully connected layer precedes the final one, and (option) the two auxiliary heads
after inception 4a and 4d regress the pose as well. The `cpu` default is the same design at about
half the widths with one module fewer per stage, batch normalisation (it trains from scratch:
no ImageNet/Places weights are available here) and 144x112 crops of 160x120 images.

Positions are regressed relative to the training scene's centre and extent (stored in the
config), so outputs are metres in the scene frame whatever the scene's size. The quaternion
(x, y, z, w) is normalised at the output; `quaternion_raw` is kept for inspection. With the
learned loss weighting (Kendall and Cipolla, CVPR 2017) the model owns the two log-variances
s_x, s_q and returns them per sample.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.preprocessing import PreprocessSpec
from .base import PerceptionModel
from .outputs import DenseOutputs

# GoogLeNet's Inception modules: 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection
GOOGLENET_STAGES = [
    [[64, 96, 128, 16, 32, 32], [128, 128, 192, 32, 96, 64]],  # 3a, 3b
    [[192, 96, 208, 16, 48, 64], [160, 112, 224, 24, 64, 64], [128, 128, 256, 24, 64, 64],
     [112, 144, 288, 32, 64, 64], [256, 160, 320, 32, 128, 128]],  # 4a-4e
    [[256, 160, 320, 32, 128, 128], [384, 192, 384, 48, 128, 128]],  # 5a, 5b
]
LIGHT_STAGES = [
    [[32, 48, 64, 8, 16, 16], [64, 64, 96, 16, 48, 32]],
    [[96, 48, 104, 8, 24, 32], [80, 56, 112, 12, 32, 32]],
    [[128, 80, 160, 16, 64, 64]],
]


@dataclass
class PoseNetConfig:
    resize_short: int = 120  # shorter image side after resizing
    crop: list = field(default_factory=lambda: [144, 112])  # (width, height) fed to the network
    stem: list = field(default_factory=lambda: [32, 48, 96])  # conv1 7x7/2, conv2 1x1, conv2 3x3
    stages: list = field(default_factory=lambda: [[list(m) for m in s] for s in LIGHT_STAGES])
    normalization: str = "batchnorm"  # "lrn" (GoogLeNet) or "batchnorm"
    pose_features: int = 512  # the fully connected layer before the regressors (paper: 2048)
    dropout: float = 0.5
    aux_heads: bool = False  # the paper's two auxiliary pose regressors
    aux_after: list = field(default_factory=lambda: [[1, 0], [1, 1]])  # (stage, module) taps
    aux_channels: int = 64  # 1x1 convolution of an auxiliary head (GoogLeNet: 128)
    aux_features: int = 512  # its fully connected layer (GoogLeNet: 1024)
    aux_dropout: float = 0.7
    learned_weighting: bool = False  # Kendall & Cipolla 2017 homoscedastic weighting
    initial_log_variances: list = field(default_factory=lambda: [0.0, -3.0])  # s_x, s_q
    # set from the training data and stored in the checkpoint
    pixel_mean: list = field(default_factory=lambda: [0.5, 0.5, 0.5])  # RGB, in [0, 1]
    pixel_std: list = field(default_factory=lambda: [0.25, 0.25, 0.25])
    scene_center: list = field(default_factory=lambda: [0.0, 0.0, 0.0])  # metres
    scene_scale: float = 1.0  # metres per unit of the position regressor
    frame_id: str = "world"  # the scene frame the poses are in


class ConvUnit(nn.Sequential):
    """Convolution + ReLU, with batch normalisation between them in the batchnorm variant."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, batch_norm: bool = False):
        layers = [nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Inception(nn.Module):
    """Inception v1 module: 1x1 | 1x1->3x3 | 1x1->5x5 | maxpool 3x3->1x1, concatenated."""

    def __init__(self, cin: int, spec: list, batch_norm: bool):
        super().__init__()
        c1, r3, c3, r5, c5, pool_proj = spec
        self.branch1 = ConvUnit(cin, c1, 1, batch_norm=batch_norm)
        self.branch3 = nn.Sequential(ConvUnit(cin, r3, 1, batch_norm=batch_norm),
                                     ConvUnit(r3, c3, 3, batch_norm=batch_norm))
        self.branch5 = nn.Sequential(ConvUnit(cin, r5, 1, batch_norm=batch_norm),
                                     ConvUnit(r5, c5, 5, batch_norm=batch_norm))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, padding=1),
                                         ConvUnit(cin, pool_proj, 1, batch_norm=batch_norm))
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x),
                          self.branch_pool(x)], dim=1)


class PoseRegressor(nn.Module):
    """Fully connected layer, ReLU, dropout, then affine position (3) and quaternion (4)."""

    def __init__(self, features_in: int, features: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(features_in, features)
        self.dropout = nn.Dropout(dropout)
        self.position = nn.Linear(features, 3)
        self.quaternion = nn.Linear(features, 4)
        # PoseNet's initialisation scale: small orientation weights, larger position weights
        nn.init.normal_(self.position.weight, std=0.5 / features ** 0.5)
        nn.init.zeros_(self.position.bias)
        nn.init.normal_(self.quaternion.weight, std=0.01)
        with torch.no_grad():
            self.quaternion.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.dropout(F.relu(self.fc(x)))
        return self.position(x), self.quaternion(x)


class AuxiliaryHead(nn.Module):
    """GoogLeNet's auxiliary classifier turned pose regressor: avgpool 5x5/3, 1x1 conv, FC."""

    def __init__(self, cin: int, size: tuple[int, int], config: PoseNetConfig, batch_norm: bool):
        super().__init__()
        self.pool = nn.AvgPool2d(5, 3, ceil_mode=True) if min(size) >= 5 else nn.Identity()
        pooled = [-(-(n - 5) // 3) + 1 for n in size] if min(size) >= 5 else list(size)
        self.conv = ConvUnit(cin, config.aux_channels, 1, batch_norm=batch_norm)
        self.regressor = PoseRegressor(config.aux_channels * pooled[0] * pooled[1],
                                       config.aux_features, config.aux_dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.regressor(self.conv(self.pool(x)).flatten(1))


def _pool_out(size: int) -> int:
    """Output size of a 3x3/2 max-pool in ceil mode (GoogLeNet's Caffe pooling)."""
    return -(-(size - 3) // 2) + 1


def normalize_quaternion(raw: torch.Tensor) -> torch.Tensor:
    return raw / raw.norm(dim=-1, keepdim=True).clamp_min(1e-8)


# E||e|| of an isotropic 3-D Gaussian error with unit variance per axis (mean of a chi
# distribution with 3 degrees of freedom), and E||e||_1 of the same
MEAN_L2_NORM_3D = 2.0 * (2.0 / np.pi) ** 0.5
MEAN_L1_NORM_3D = 3.0 * (2.0 / np.pi) ** 0.5


def pose_covariance(log_variance_position: float, log_variance_orientation: float,
                    norm: str = "l2") -> np.ndarray:
    """6x6 covariance (x, y, z, then rotation about x, y, z) from the learned weights.

    The homoscedastic loss L exp(-s) + s is smallest at exp(s) = the mean error norm of its term.
    Reading the position error as isotropic Gaussian with standard deviation sigma per axis,
    E||e|| = MEAN_L2_NORM_3D sigma (MEAN_L1_NORM_3D for the L1 norm). A rotation error of angle
    theta moves the unit quaternion by ||dq|| = 2 sin(theta / 4), about theta / 2, so the
    rotation-vector sigma is 2 exp(s_q) / MEAN_L*_NORM_3D. The weights are fitted to the
    training images, so this is the scene's error level as training saw it, not a per-image
    uncertainty."""
    scale = MEAN_L2_NORM_3D if norm == "l2" else MEAN_L1_NORM_3D
    sigma_position = float(np.exp(log_variance_position)) / scale
    sigma_rotation = 2.0 * float(np.exp(log_variance_orientation)) / scale
    return np.diag([sigma_position ** 2] * 3 + [sigma_rotation ** 2] * 3)


class PoseNet(PerceptionModel):
    name = "posenet"
    Config = PoseNetConfig
    outputs = DenseOutputs({"position": "B x 3 metres in the scene frame",
                            "quaternion": "B x 4 x, y, z, w unit",
                            "quaternion_raw": "B x 4 before normalisation",
                            "log_variance_position": "learned weighting only",
                            "log_variance_orientation": "learned weighting only"})
    # checkpoint configs are refused outside these (models/base.py); sizes bound the memory
    config_bounds = {"resize_short": (16, 4096), "crop": (16, 4096), "stem": (1, 2048),
                     "stages": (0, 4096), "pose_features": (1, 16384), "dropout": (0.0, 1.0),
                     "aux_after": (0, 64), "aux_channels": (1, 4096), "aux_features": (1, 16384),
                     "aux_dropout": (0.0, 1.0), "initial_log_variances": (-100.0, 100.0),
                     "pixel_mean": (-10.0, 10.0), "pixel_std": (1e-6, 1e3),
                     "scene_center": (-1e7, 1e7), "scene_scale": (1e-6, 1e7)}
    presets = {
        "cpu": {},
        "paper": {
            "resize_short": 256, "crop": [224, 224], "stem": [64, 64, 192],
            "stages": [[list(m) for m in s] for s in GOOGLENET_STAGES], "normalization": "lrn",
            "pose_features": 2048, "aux_after": [[1, 0], [1, 3]], "aux_channels": 128,
            "aux_features": 1024,
        },
    }

    def __init__(self, config: PoseNetConfig):
        super().__init__(config)
        if config.normalization not in ("lrn", "batchnorm"):
            raise ValueError(f"posenet: normalization must be 'lrn' or 'batchnorm', "
                             f"got '{config.normalization}'")
        bn = config.normalization == "batchnorm"
        c1, c2r, c2 = config.stem
        stem = [ConvUnit(3, c1, 7, 2, bn), nn.MaxPool2d(3, 2, ceil_mode=True)]
        if not bn:
            stem.append(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75))
        stem += [ConvUnit(c1, c2r, 1, batch_norm=bn), ConvUnit(c2r, c2, 3, batch_norm=bn)]
        if not bn:
            stem.append(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75))
        stem.append(nn.MaxPool2d(3, 2, ceil_mode=True))
        self.stem = nn.Sequential(*stem)

        width, height = config.crop
        size = (_pool_out(_pool_out((height + 1) // 2)), _pool_out(_pool_out((width + 1) // 2)))
        channels = c2
        self.stages = nn.ModuleList()
        self.aux = nn.ModuleDict()
        taps = {tuple(t) for t in config.aux_after} if config.aux_heads else set()
        for s, specs in enumerate(config.stages):
            modules = []
            for m, spec in enumerate(specs):
                modules.append(Inception(channels, spec, bn))
                channels = modules[-1].out_channels
                if (s, m) in taps:
                    self.aux[f"{s}_{m}"] = AuxiliaryHead(channels, size, config, bn)
            self.stages.append(nn.ModuleList(modules))
            if s < len(config.stages) - 1:
                size = (_pool_out(size[0]), _pool_out(size[1]))
        if config.aux_heads and len(self.aux) != len(taps):
            raise ValueError(f"posenet: aux_after {config.aux_after} names modules that do not "
                             "exist")
        self.stage_pools = nn.ModuleList(
            nn.MaxPool2d(3, 2, ceil_mode=True) for _ in config.stages[:-1])
        self.head = PoseRegressor(channels, config.pose_features, config.dropout)
        if config.learned_weighting:
            self.log_variances = nn.Parameter(torch.tensor(config.initial_log_variances,
                                                           dtype=torch.float32))
        self.register_buffer("scene_center", torch.tensor(config.scene_center, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean, dtype=torch.float32)
                             .view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std, dtype=torch.float32)
                             .view(1, 3, 1, 1), persistent=False)

    def set_scene(self, center, scale: float, frame_id: str) -> None:
        """Position normalisation of the training scene (kept in the config, so checkpoints
        carry it)."""
        self.config.scene_center = [float(v) for v in center]
        self.config.scene_scale = float(scale)
        self.config.frame_id = frame_id
        self.scene_center.copy_(torch.tensor(self.config.scene_center))

    def set_pixel_statistics(self, mean, std) -> None:
        self.config.pixel_mean = [float(v) for v in mean]
        self.config.pixel_std = [float(v) for v in std]
        self.pixel_mean.copy_(torch.tensor(self.config.pixel_mean).view(1, 3, 1, 1))
        self.pixel_std.copy_(torch.tensor(self.config.pixel_std).view(1, 3, 1, 1))

    def _pose(self, position: torch.Tensor, quaternion: torch.Tensor, prefix: str = "") -> dict:
        return {f"{prefix}position": self.scene_center + self.config.scene_scale * position,
                f"{prefix}quaternion": normalize_quaternion(quaternion),
                f"{prefix}quaternion_raw": quaternion}

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """batch: Bx3xHxW RGB in [0, 1]. Returns position (B, 3) in metres of the scene frame,
        quaternion (B, 4) x, y, z, w of unit norm, and per option aux{1,2}_position/quaternion
        and log_variance_position / log_variance_orientation (B,)."""
        x = self.stem((batch - self.pixel_mean) / self.pixel_std)
        out: dict[str, torch.Tensor] = {}
        aux_index = 0
        for s, modules in enumerate(self.stages):
            for m, module in enumerate(modules):
                x = module(x)
                key = f"{s}_{m}"
                if key in self.aux:
                    aux_index += 1
                    if self.training:  # the auxiliary heads only shape training
                        out.update(self._pose(*self.aux[key](x), prefix=f"aux{aux_index}_"))
            if s < len(self.stage_pools):
                x = self.stage_pools[s](x)
        features = F.adaptive_avg_pool2d(x, 1).flatten(1)
        out.update(self._pose(*self.head(features)))
        if self.config.learned_weighting:
            count = batch.shape[0]
            out["log_variance_position"] = self.log_variances[0].expand(count)
            out["log_variance_orientation"] = self.log_variances[1].expand(count)
        return out

    # --- images ---------------------------------------------------------------------------
    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) with the shorter side `resize_short` (aspect kept), covering the crop."""
        short = self.config.resize_short
        scale = short / min(height, width)
        crop_w, crop_h = self.config.crop
        return (max(round(width * scale), short, crop_w), max(round(height * scale), short, crop_h))

    def resize(self, rgb: np.ndarray) -> np.ndarray:
        """Resize so the shorter side is `resize_short` (aspect kept), uint8 RGB."""
        size = self.resized_size(rgb.shape[1], rgb.shape[0])
        return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)

    @staticmethod
    def to_tensor(crops: np.ndarray) -> torch.Tensor:
        """NxHxWx3 (or HxWx3) uint8 RGB -> Nx3xHxW float in [0, 1]."""
        if crops.ndim == 3:
            crops = crops[None]
        return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255.0

    def preprocessing_spec(self) -> PreprocessSpec:
        """Shorter side resize_short (aspect kept, area), centre crop (random in training)."""
        short = self.config.resize_short
        return PreprocessSpec(color="rgb", resize="cover", size=(short, short),
                              interpolation="area", crop=tuple(self.config.crop),
                              normalize="fixed", mean=self.config.pixel_mean,
                              std=self.config.pixel_std)


MODEL = PoseNet
