"""DroNet (Loquercio et al., RA-L 2018): ResNet-8 on a 200x200 grayscale crop predicting a steering
angle and a collision probability.

Two layouts of the same network (config `layout`):

- "keras" (default): layer for layer the official Keras model (rpg_public_dronet,
  model_struct.json), so its released weights (MIT) convert without loss: TensorFlow 'same'
  padding (asymmetric for stride 2), 3x3/2 max-pool, pre-activation residual blocks
  (BN-ReLU-conv), BN epsilon 1e-3 and momentum 0.99, flatten in channels-last order.
- "pulp": PULP-DroNet v2/v3 (Palossi et al. 2019, pulp-platform/pulp-dronet; Apache-2.0), the
  same ResNet-8 shape with symmetric zero padding, a 2x2 max-pool, post-activation blocks
  (conv-BN-ReLU6), a ReLU6 on the shortcut, BN epsilon 1e-5 and a channels-first flatten. Its
  deployment flavours differ in the flags `stem_batchnorm`, `shortcut_batchnorm`, `conv_bias`,
  `head_bias` and `head_activation` (GAPflow: biases, no stem/shortcut BN, ReLU6 before the head;
  NEMO/DORY and v3: no biases, BN on stem and shortcut, no head activation).

The preprocessing differs too: the official model resizes to 320x240 and keeps the bottom
200x200 centre crop; PULP-DroNet crops its 324x244 frames directly (v2 at the bottom, v3 in the
centre), which `resize_to` [324, 244] and `crop_anchor` express for any camera size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.preprocessing import PreprocessSpec
from .base import PerceptionModel
from .outputs import DenseOutputs

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # Keras momentum 0.99 is the weight of the running value
PULP_BN_EPS = 1e-5  # PyTorch's default, what PULP-DroNet trained with
LAYOUTS = ("keras", "pulp")
CROP_ANCHORS = ("bottom", "centre")


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding TensorFlow uses for 'same': the extra pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'same' padding semantics."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int):
        super().__init__(in_channels, out_channels, kernel, stride=stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        top, bottom = tf_same_padding(x.shape[-2], k, s)
        left, right = tf_same_padding(x.shape[-1], k, s)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _he_normal(conv: nn.Conv2d) -> None:
    # Keras 2.0 he_normal: truncated normal, std sqrt(2 / fan_in)
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    std = math.sqrt(2.0 / fan_in)
    nn.init.trunc_normal_(conv.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(conv.bias)


def _glorot_uniform(layer: nn.Module) -> None:
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)


class ResidualBlock(nn.Module):
    """BN-ReLU-conv3x3/2, BN-ReLU-conv3x3/1, plus a conv1x1/2 shortcut from the block input."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.conv1 = SameConv2d(in_channels, out_channels, 3, 2)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.conv2 = SameConv2d(out_channels, out_channels, 3, 1)
        self.shortcut = SameConv2d(in_channels, out_channels, 1, 2)
        _he_normal(self.conv1)
        _he_normal(self.conv2)
        _glorot_uniform(self.shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.bn1(x)))
        y = self.conv2(F.relu(self.bn2(y)))
        return y + self.shortcut(x)


class PostActivationBlock(nn.Module):
    """PULP-DroNet's block: conv3x3/2-BN-ReLU6, conv3x3/1-BN-ReLU6, plus a conv1x1/2 shortcut
    (optionally BN'd) through ReLU6; zero padding k//2 on both sides."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool, shortcut_batchnorm: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 2, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(out_channels, eps=PULP_BN_EPS)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=PULP_BN_EPS)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, 2, bias=bias)
        self.shortcut_bn = nn.BatchNorm2d(out_channels, eps=PULP_BN_EPS) if shortcut_batchnorm \
            else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.bn1(self.conv1(x)))
        y = F.relu6(self.bn2(self.conv2(y)))
        shortcut = self.shortcut(x)
        if self.shortcut_bn is not None:
            shortcut = self.shortcut_bn(shortcut)
        return y + F.relu6(shortcut)


@dataclass
class DroNetConfig:
    input_channels: int = 1
    crop_size: int = 200  # square crop fed to the network
    resize_to: list = field(default_factory=lambda: [320, 240])  # (width, height) before cropping
    crop_anchor: str = "bottom"  # rows of the crop: "bottom" or "centre"; columns always centred
    block_channels: list = field(default_factory=lambda: [32, 64, 128])
    dropout: float = 0.5
    # L2 weight decay the official model puts on the residual 3x3 convolutions
    conv_l2: float = 1e-4
    layout: str = "keras"  # "keras" (official DroNet) or "pulp" (PULP-DroNet v2/v3)
    # PULP-DroNet flavours (layout "pulp" only; the keras layout is the official model exactly)
    stem_batchnorm: bool = False  # BN + ReLU6 between the first conv and the max-pool
    shortcut_batchnorm: bool = False  # BN on the 1x1 shortcut before its ReLU6
    conv_bias: bool = True
    head_bias: bool = True
    head_activation: bool = True  # ReLU (keras) / ReLU6 (pulp) on the flattened features

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"dronet: unknown layout '{self.layout}' (have {LAYOUTS})")
        if self.crop_anchor not in CROP_ANCHORS:
            raise ValueError(f"dronet: unknown crop_anchor '{self.crop_anchor}' (have {CROP_ANCHORS})")
        if self.layout == "keras" and (self.stem_batchnorm or self.shortcut_batchnorm or
                                       not (self.conv_bias and self.head_bias and self.head_activation)):
            raise ValueError("dronet: stem_batchnorm, shortcut_batchnorm, conv_bias, head_bias and "
                             "head_activation are PULP-DroNet flavours (layout 'pulp')")


class DroNet(PerceptionModel):
    name = "dronet"
    Config = DroNetConfig
    outputs = DenseOutputs({"steering": "steering angle (rad, positive left)",
                            "collision_logit": "collision logit",
                            "collision_probability": "collision probability"})
    # checkpoint configs are refused outside these (models/base.py); sizes bound the memory
    config_bounds = {"input_channels": (1, 4), "crop_size": (8, 1024), "resize_to": (8, 4096),
                     "block_channels": (1, 1024), "dropout": (0.0, 1.0), "conv_l2": (0.0, 1.0)}
    presets = {"cpu": {}, "paper": {}}  # the paper's network is small enough for the CPU

    def __init__(self, config: DroNetConfig):
        super().__init__(config)
        first = config.block_channels[0]
        channels = [first, *config.block_channels]
        pairs = list(zip(channels[:-1], channels[1:]))
        if config.layout == "keras":
            self.conv1 = SameConv2d(config.input_channels, first, 5, 2)
            _glorot_uniform(self.conv1)
            self.stem_bn = None
            self.pool = nn.MaxPool2d(3, 2)
            self.blocks = nn.ModuleList(ResidualBlock(cin, cout) for cin, cout in pairs)
        else:
            self.conv1 = nn.Conv2d(config.input_channels, first, 5, 2, padding=2,
                                   bias=config.conv_bias)
            self.stem_bn = nn.BatchNorm2d(first, eps=PULP_BN_EPS) if config.stem_batchnorm else None
            self.pool = nn.MaxPool2d(2, 2)
            self.blocks = nn.ModuleList(
                PostActivationBlock(cin, cout, config.conv_bias, config.shortcut_batchnorm)
                for cin, cout in pairs)
        side = self._feature_side(config.crop_size)
        features = side * side * config.block_channels[-1]
        self.dropout = nn.Dropout(config.dropout)
        self.steering = nn.Linear(features, 1, bias=config.head_bias)
        self.collision = nn.Linear(features, 1, bias=config.head_bias)
        for head in (self.steering, self.collision):
            nn.init.xavier_uniform_(head.weight)
            if head.bias is not None:
                nn.init.zeros_(head.bias)

    def _feature_side(self, size: int) -> int:
        size = math.ceil(size / 2)  # conv1, stride 2 ('same' or padding 2: the same size)
        # max-pool 3x3/2 valid (keras), 2x2/2 (pulp)
        size = (size - 3) // 2 + 1 if self.config.layout == "keras" else size // 2
        for _ in self.config.block_channels:
            size = math.ceil(size / 2)
        return size

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.conv1(batch)
        if self.stem_bn is not None:
            x = F.relu6(self.stem_bn(x))
        x = self.pool(x)
        for block in self.blocks:
            x = block(x)
        if self.config.layout == "keras":
            # Keras flattens channels-last: keep that order so converted dense weights line up.
            x = self.dropout(F.relu(x.permute(0, 2, 3, 1).flatten(1)))
        else:
            x = self.dropout(x.flatten(1))
            if self.config.head_activation:
                x = F.relu6(x)
        logit = self.collision(x).squeeze(1)
        return {
            "steering": self.steering(x).squeeze(1),
            "collision_logit": logit,
            "collision_probability": torch.sigmoid(logit),
        }

    def regularization_loss(self) -> torch.Tensor:
        weights = [w for b in self.blocks for w in (b.conv1.weight, b.conv2.weight)]
        return self.config.conv_l2 * sum((w ** 2).sum() for w in weights)

    def _crop_origin(self) -> tuple[int, int]:
        width, height = self.config.resize_to
        size = self.config.crop_size
        top = height - size if self.config.crop_anchor == "bottom" else (height - size) // 2
        return (width - size) // 2, top

    def crop_pixels(self, gray: np.ndarray) -> np.ndarray:
        """The authors' preprocessing up to scaling: resize to `resize_to` (a frame already that
        size is kept as it is), keep the crop rows (bottom or centre) and the centre columns.
        Works on uint8 (for parity) and float images alike."""
        width, height = self.config.resize_to
        if gray.shape[:2] != (height, width):
            gray = cv2.resize(gray, (width, height), interpolation=cv2.INTER_LINEAR)
        left, top = self._crop_origin()
        size = self.config.crop_size
        return gray[top:top + size, left:left + size]

    def preprocessing_spec(self) -> PreprocessSpec:
        """Grey, bilinear to resize_to, the crop_size square: bottom rows (the official model;
        crop_anchor 'centre' for PULP-DroNet), centre columns."""
        config = self.config
        return PreprocessSpec(color="gray", resize="fixed", size=tuple(config.resize_to),
                              interpolation="linear", crop=(config.crop_size, config.crop_size),
                              crop_rows="centre" if config.crop_anchor == "centre" else "bottom")


MODEL = DroNet
