"""NetVLAD (Arandjelovic et al., CVPR 2016): a CNN cropped at its last convolution gives dense
local descriptors; the NetVLAD layer soft-assigns them to K clusters (a 1x1 convolution and a
softmax), sums their residuals to each cluster centre, intra-normalises per cluster and
L2-normalises the whole; optional PCA whitening (to 4096-D in the paper) and a final L2.

Presets: `paper` is VGG16 cropped at conv5_3 (before its ReLU, as the paper), K = 64,
D = 512, 4096-D whitening, for the GPU; `cpu` (default) is a six-convolution backbone (`light`,
batch norm, output stride 8, 128-D local descriptors) on a 128x96 grey image standardised per
image (zero mean, unit variance: gain and offset, the first things day/night and seasons
change, are gone before the first convolution), trained on real images only
(`dl-perception train netvlad`, docs/place_recognition.md). `eigen_coarse` (the first four
convolutions of the project's depth network, `--init-backbone`) is the previous CPU backbone.

The whitening is part of the checkpoint (buffers `whitening_mean`, `whitening_projection`,
`whitening_fitted`); until fitted, `descriptor` is the VLAD vector itself.
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

# ImageNet statistics, as VGG16 expects its input
RGB_MEAN = (0.485, 0.456, 0.406)
RGB_STD = (0.229, 0.224, 0.225)
VGG16_CONV5 = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]
# the depth network's input normalisation (models/depth.py), which the eigen_coarse backbone keeps
DEPTH_MEAN = (0.5, 0.5, 0.5)
DEPTH_STD = (0.25, 0.25, 0.25)


@dataclass
class NetVLADConfig:
    # The defaults are the first CPU network (`depth` preset), so checkpoints saved before a
    # field existed load as they were; the `cpu` preset sets the current network.
    # "light" (CPU), "eigen_coarse" (the depth network's first layers) or "vgg16" (the paper's)
    backbone: str = "eigen_coarse"
    # eigen_coarse backbone: output channels of the depth network's Coarse 1-4
    eigen_channels: list = field(default_factory=lambda: [32, 64, 96, 96])
    # light backbone: channels of its three stages (two 3x3 convolutions each)
    light_channels: list = field(default_factory=lambda: [32, 64, 128])
    # light backbone: 2x2 max pooling after its stride-2 stem (output stride 16, else 8)
    light_stem_pool: bool = True
    resize_to: list = field(default_factory=lambda: [320, 240])  # (width, height)
    grey: bool = False  # the backbone sees one luma channel
    # "image": each image minus its own mean, divided by its own standard deviation;
    # "fixed": minus input_mean, divided by input_std (per channel, RGB in [0, 1])
    input_normalization: str = "fixed"
    input_mean: list = field(default_factory=lambda: list(DEPTH_MEAN))
    input_std: list = field(default_factory=lambda: list(DEPTH_STD))
    num_clusters: int = 64
    normalize_input: bool = True  # L2 on each local descriptor before the layer (paper: preL2)
    pca_dim: int = 256  # 0 = no whitening
    # each principal direction is divided by its standard deviation to this power: 1 = PCA
    # whitening (the paper), 0 = plain PCA projection
    whitening_power: float = 1.0
    whitening_epsilon: float = 1e-6  # added to the PCA variances before dividing by them


class LightBackbone(nn.Module):
    """conv5x5/2 (and 2x2 max pooling with `stem_pool`), then three stages of two 3x3
    convolutions with batch norm joined by 2x2 max pooling (output stride 16 with `stem_pool`,
    as VGG16's conv5, else 8). The last convolution has no BN/ReLU, as the paper crops VGG16
    before conv5_3's ReLU."""

    def __init__(self, channels: list[int], in_channels: int = 3, stem_pool: bool = True):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 5, stride=2, padding=2),
                                   nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True)]
        if stem_pool:
            layers.append(nn.MaxPool2d(2))
        previous = channels[0]
        for stage, width in enumerate(channels):
            if stage:
                layers.append(nn.MaxPool2d(2))
            last_stage = stage == len(channels) - 1
            layers += [nn.Conv2d(previous, width, 3, padding=1), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True), nn.Conv2d(width, width, 3, padding=1)]
            if not last_stage:
                layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            previous = width
        self.layers = nn.Sequential(*layers)
        self.out_channels = channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class EigenCoarseBackbone(nn.Module):
    """Coarse 1-4 of the Eigen depth network (models/depth.py): conv11x11/4 and 2x2 max pooling,
    conv5x5 and 2x2 max pooling, two 3x3 convolutions; cropped before Coarse 4's ReLU. Output
    stride 16. Layer names match the depth network's, so its weights load by name."""

    def __init__(self, channels: list[int]):
        super().__init__()
        c1, c2, c3, c4 = channels
        self.coarse1 = nn.Conv2d(3, c1, 11, stride=4)
        self.coarse2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.coarse3 = nn.Conv2d(c2, c3, 3, padding=1)
        self.coarse4 = nn.Conv2d(c3, c4, 3, padding=1)
        self.out_channels = c4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.coarse1(x)), 2)
        x = F.max_pool2d(F.relu(self.coarse2(x)), 2)
        return self.coarse4(F.relu(self.coarse3(x)))

    def load_depth_network(self, depth_state: dict[str, torch.Tensor]) -> None:
        """Copy Coarse 1-4 from a depth network's state dict; a clear error if shapes differ."""
        own = self.state_dict()
        for name, tensor in own.items():
            if name not in depth_state:
                raise ValueError(f"netvlad: the depth checkpoint has no '{name}'")
            if depth_state[name].shape != tensor.shape:
                raise ValueError(f"netvlad: depth '{name}' is {tuple(depth_state[name].shape)}, "
                                 f"the backbone needs {tuple(tensor.shape)} (eigen_channels)")
        self.load_state_dict({name: depth_state[name] for name in own})


class VGG16Conv5(nn.Module):
    """VGG16 (configuration D) up to conv5_3, without its ReLU and the last max pooling."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        previous = 3
        for block, widths in enumerate(VGG16_CONV5):
            if block:
                layers.append(nn.MaxPool2d(2))
            for width in widths:
                layers += [nn.Conv2d(previous, width, 3, padding=1), nn.ReLU(inplace=True)]
                previous = width
        self.layers = nn.Sequential(*layers[:-1])  # cropped before conv5_3's ReLU
        self.out_channels = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class NetVLADLayer(nn.Module):
    """V(j, k) = sum_i a_k(x_i) (x_i(j) - c_k(j)), a_k = softmax_k(w_k . x_i + b_k)."""

    def __init__(self, num_clusters: int, dim: int, normalize_input: bool):
        super().__init__()
        self.normalize_input = normalize_input
        self.assignment = nn.Conv2d(dim, num_clusters, 1, bias=True)
        self.centroids = nn.Parameter(torch.rand(num_clusters, dim))
        # The assignment convolution is alpha * (w'x + b'): alpha (a constant set at
        # initialisation) keeps w', b' of order one, so optimiser steps move them as fast as the
        # centres; stored as w = 2 alpha c, b = -alpha |c|^2, alpha is in the hundreds and Adam's
        # fixed-size steps would leave the assignment frozen while the backbone moves.
        self.register_buffer("assignment_scale", torch.ones(()))

    def init_from_clusters(self, centroids: torch.Tensor, descriptors: torch.Tensor) -> float:
        """The paper's initialisation from k-means centres c_k: w_k = 2 alpha c_k,
        b_k = -alpha ||c_k||^2 (soft assignment that approximates hard VLAD). alpha is chosen so
        that, for a typical descriptor, the nearest centre gets 100x the weight of the second
        nearest. Returns alpha."""
        centroids = centroids.to(self.centroids)
        distances = torch.cdist(descriptors.to(centroids), centroids) ** 2
        nearest_two = distances.topk(2, dim=1, largest=False).values
        gap = (nearest_two[:, 1] - nearest_two[:, 0]).mean().clamp_min(1e-6)
        alpha = float(-math.log(0.01) / gap)
        with torch.no_grad():
            self.centroids.copy_(centroids)
            self.assignment.weight.copy_((2.0 * centroids)[:, :, None, None])
            self.assignment.bias.copy_(-(centroids ** 2).sum(1))
            self.assignment_scale.fill_(alpha)
        return alpha

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.normalize_input:
            features = F.normalize(features, dim=1)
        soft = F.softmax(self.assignment_scale * self.assignment(features), dim=1).flatten(2)
        x = features.flatten(2)  # B x D x N; soft: B x K x N
        # sum_i a_k(x_i) x_i - c_k sum_i a_k(x_i), without forming the B x K x D x N residuals
        vlad = torch.bmm(soft, x.transpose(1, 2)) - self.centroids[None] * soft.sum(2, keepdim=True)
        vlad = F.normalize(vlad, dim=2)  # intra-normalisation
        return F.normalize(vlad.flatten(1), dim=1)


class NetVLAD(PerceptionModel):
    name = "netvlad"
    Config = NetVLADConfig
    outputs = DenseOutputs({"descriptor": "global descriptor (whitened when fitted), unit "
                                          "length", "vlad": "the NetVLAD vector"})
    # checkpoint configs are refused outside these (models/base.py); sizes bound the memory
    config_bounds = {"eigen_channels": (1, 2048), "light_channels": (1, 2048),
                     "resize_to": (16, 4096), "input_mean": (-10.0, 10.0),
                     "input_std": (1e-6, 1e3), "num_clusters": (1, 1024), "pca_dim": (0, 65536),
                     "whitening_epsilon": (0.0, 1.0)}
    presets = {
        "cpu": {"backbone": "light", "light_stem_pool": False, "resize_to": [128, 96],
                "grey": True, "input_normalization": "image"},
        # the previous CPU network: the depth network's first layers (--init-backbone)
        "depth": {},
        "paper": {"backbone": "vgg16", "resize_to": [640, 480], "pca_dim": 4096, "grey": False,
                  "input_normalization": "fixed",
                  "input_mean": list(RGB_MEAN), "input_std": list(RGB_STD)},
    }

    def __init__(self, config: NetVLADConfig):
        super().__init__(config)
        if config.input_normalization not in ("image", "fixed"):
            raise ValueError(f"netvlad: unknown input_normalization "
                             f"'{config.input_normalization}' (image, fixed)")
        if config.backbone == "vgg16":
            self.backbone = VGG16Conv5()
        elif config.backbone == "light":
            self.backbone = LightBackbone(list(config.light_channels),
                                          1 if config.grey else 3, config.light_stem_pool)
        elif config.backbone == "eigen_coarse":
            self.backbone = EigenCoarseBackbone(list(config.eigen_channels))
        else:
            raise ValueError(f"netvlad: unknown backbone '{config.backbone}' "
                             "(eigen_coarse, light, vgg16)")
        if config.grey and config.backbone != "light":
            raise ValueError(f"netvlad: the {config.backbone} backbone takes RGB (grey false)")
        dim = self.backbone.out_channels
        self.vlad = NetVLADLayer(config.num_clusters, dim, config.normalize_input)
        self.vlad_dim = config.num_clusters * dim
        if config.pca_dim < 0 or config.pca_dim > self.vlad_dim:
            raise ValueError(f"netvlad: pca_dim must lie in [0, {self.vlad_dim}]")
        self.register_buffer("whitening_mean", torch.zeros(self.vlad_dim if config.pca_dim else 0))
        self.register_buffer("whitening_projection", torch.zeros(config.pca_dim, self.vlad_dim))
        self.register_buffer("whitening_fitted", torch.zeros((), dtype=torch.bool))
        # luma and normalisation as the preprocessing spec states them (no checkpoint keys)
        self.network_input = self.preprocessing_spec().network_input()

    @property
    def whitened(self) -> bool:
        return bool(self.config.pca_dim) and bool(self.whitening_fitted)

    @property
    def descriptor_dim(self) -> int:
        return self.config.pca_dim if self.whitened else self.vlad_dim

    def normalize_input(self, batch: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W RGB in [0, 1] -> what the backbone takes (grey and/or normalised)."""
        return self.network_input(batch)

    def local_descriptors(self, batch: torch.Tensor) -> torch.Tensor:
        """B x D x H x W dense descriptors of the cropped backbone."""
        return self.backbone(self.normalize_input(batch))

    def whiten(self, vlad: torch.Tensor) -> torch.Tensor:
        projected = (vlad - self.whitening_mean) @ self.whitening_projection.T
        return F.normalize(projected, dim=1)

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """batch: B x 3 x H x W RGB in [0, 1]. `descriptor` is the global descriptor (whitened
        when the whitening is fitted), L2-normalised; `vlad` the NetVLAD vector before it."""
        vlad = self.vlad(self.local_descriptors(batch))
        descriptor = self.whiten(vlad) if self.whitened else vlad
        return {"descriptor": descriptor, "vlad": vlad}

    def fit_whitening(self, vlads: torch.Tensor) -> None:
        """PCA whitening from N x vlad_dim training vectors (N >= pca_dim): project on the
        leading principal directions, divide by their standard deviations (to the power
        `whitening_power`)."""
        dim = self.config.pca_dim
        if not dim:
            raise ValueError("netvlad: this configuration has no whitening (pca_dim 0)")
        if vlads.shape[0] <= dim:
            raise ValueError(f"netvlad: whitening to {dim}-D needs more than {dim} training "
                             f"images, got {vlads.shape[0]}")
        vlads = vlads.double()
        mean = vlads.mean(0)
        centred = vlads - mean
        # the N x N Gram matrix is smaller than the D x D covariance whenever N < D
        gram = centred @ centred.T
        eigenvalues, eigenvectors = torch.linalg.eigh(gram)
        order = eigenvalues.argsort(descending=True)[:dim]
        eigenvalues, eigenvectors = eigenvalues[order].clamp_min(0), eigenvectors[:, order]
        directions = centred.T @ eigenvectors / eigenvalues.sqrt().clamp_min(1e-12)  # D x dim
        variances = eigenvalues / (vlads.shape[0] - 1)
        projection = directions / (variances + self.config.whitening_epsilon) ** (
            self.config.whitening_power / 2)
        with torch.no_grad():
            self.whitening_mean.copy_(mean.float())
            self.whitening_projection.copy_(projection.T.float())
            self.whitening_fitted.fill_(True)

    def prepare_pixels(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB -> the network's input size (uint8)."""
        width, height = self.config.resize_to
        return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)

    @staticmethod
    def to_tensor(pixels: np.ndarray) -> torch.Tensor:
        """N x H x W x 3 (or H x W x 3) uint8 -> N x 3 x H x W float in [0, 1]."""
        tensor = torch.from_numpy(np.ascontiguousarray(pixels))
        if tensor.ndim == 3:
            tensor = tensor[None]
        return tensor.permute(0, 3, 1, 2).float().div_(255.0)

    def preprocessing_spec(self) -> PreprocessSpec:
        """RGB, area to resize_to; the network's input stage: luma when `grey`, standardised
        per image or by the fixed mean/std (run by the spec's NetworkInput)."""
        config = self.config
        fixed = config.input_normalization == "fixed"
        return PreprocessSpec(color="rgb", resize="fixed", size=tuple(config.resize_to),
                              interpolation="area", channels="luma" if config.grey else "as_is",
                              normalize=config.input_normalization,
                              mean=config.input_mean if fixed else None,
                              std=config.input_std if fixed else None)


MODEL = NetVLAD
