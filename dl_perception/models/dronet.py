"""DroNet (Loquercio et al., RA-L 2018): ResNet-8 on a 200x200 grayscale crop predicting a steering
angle and a collision probability.

Layer for layer the official Keras model (rpg_public_dronet, model_struct.json), so its released
weights convert without loss: TensorFlow 'same' padding (asymmetric for stride 2), BN epsilon 1e-3
and momentum 0.99, flatten in channels-last order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..imaging import DecodedImage, gray_scale_factor, to_gray
from .. import tensor_preprocess as tp
from .base import PerceptionModel

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # Keras momentum 0.99 is the weight of the running value


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


@dataclass
class DroNetConfig:
    input_channels: int = 1
    crop_size: int = 200  # square crop fed to the network
    resize_to: list = field(default_factory=lambda: [320, 240])  # (width, height) before cropping
    block_channels: list = field(default_factory=lambda: [32, 64, 128])
    dropout: float = 0.5
    # L2 weight decay the official model puts on the residual 3x3 convolutions
    conv_l2: float = 1e-4


class DroNet(PerceptionModel):
    name = "dronet"
    Config = DroNetConfig
    # checkpoint configs are refused outside these (models/base.py); sizes bound the memory
    config_bounds = {"input_channels": (1, 4), "crop_size": (8, 1024), "resize_to": (8, 4096),
                     "block_channels": (1, 1024), "dropout": (0.0, 1.0), "conv_l2": (0.0, 1.0)}
    presets = {"cpu": {}, "paper": {}}  # the paper's network is small enough for the CPU

    def __init__(self, config: DroNetConfig):
        super().__init__(config)
        first = config.block_channels[0]
        self.conv1 = SameConv2d(config.input_channels, first, 5, 2)
        _glorot_uniform(self.conv1)
        self.pool = nn.MaxPool2d(3, 2)
        channels = [first, *config.block_channels]
        self.blocks = nn.ModuleList(
            ResidualBlock(cin, cout) for cin, cout in zip(channels[:-1], channels[1:]))
        side = self._feature_side(config.crop_size)
        features = side * side * config.block_channels[-1]
        self.dropout = nn.Dropout(config.dropout)
        self.steering = nn.Linear(features, 1)
        self.collision = nn.Linear(features, 1)
        _glorot_uniform(self.steering)
        _glorot_uniform(self.collision)

    def _feature_side(self, size: int) -> int:
        size = math.ceil(size / 2)  # conv1, stride 2, same
        size = (size - 3) // 2 + 1  # max-pool 3x3/2, valid
        for _ in self.config.block_channels:
            size = math.ceil(size / 2)
        return size

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.pool(self.conv1(batch))
        for block in self.blocks:
            x = block(x)
        # Keras flattens channels-last: keep that order so converted dense weights line up.
        x = x.permute(0, 2, 3, 1).flatten(1)
        x = self.dropout(F.relu(x))
        logit = self.collision(x).squeeze(1)
        return {
            "steering": self.steering(x).squeeze(1),
            "collision_logit": logit,
            "collision_probability": torch.sigmoid(logit),
        }

    def regularization_loss(self) -> torch.Tensor:
        weights = [w for b in self.blocks for w in (b.conv1.weight, b.conv2.weight)]
        return self.config.conv_l2 * sum((w ** 2).sum() for w in weights)

    def preprocessing_info(self) -> dict:
        return {
            "color": "gray",
            "resize_to_wh": list(self.config.resize_to),
            "interpolation": "bilinear",
            "crop": f"bottom {self.config.crop_size} rows, centre {self.config.crop_size} columns",
            "scale": "1/255",
        }

    def crop_pixels(self, gray: np.ndarray) -> np.ndarray:
        """The authors' preprocessing up to scaling: resize to 320x240, keep the bottom rows and the
        centre columns. Works on uint8 (for parity) and float images alike."""
        width, height = self.config.resize_to
        resized = cv2.resize(gray, (width, height), interpolation=cv2.INTER_LINEAR)
        size = self.config.crop_size
        left = (width - size) // 2
        return resized[height - size:, left:left + size]

    def preprocess(self, image: DecodedImage) -> torch.Tensor:
        gray = to_gray(image)
        crop = self.crop_pixels(gray).astype(np.float32) * np.float32(gray_scale_factor(gray))
        return torch.from_numpy(np.ascontiguousarray(crop))[None, None]

    def preprocess_tensor(self, frames: torch.Tensor) -> torch.Tensor:
        width, height = self.config.resize_to
        resized = tp.resize(tp.gray(frames), width, height, "linear")
        size = self.config.crop_size
        return tp.crop(resized, (width - size) // 2, height - size, size, size) / 255.0


MODEL = DroNet
