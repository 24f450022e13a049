"""Monocular depth: the multi-scale network of Eigen, Puhrsch and Fergus, "Depth Map Prediction
from a Single Image using a Multi-Scale Deep Network", NIPS 2014.

Two stacks, both applied to the input image (Fig. 1 of the paper):

- coarse (global): Coarse 1 11x11/4 conv + 2x2 max-pool, Coarse 2 5x5 conv + 2x2 max-pool,
  Coarse 3-4 3x3 convs, Coarse 5 3x3 conv down to the /32 grid (8x6 for NYU), Coarse 6 fully
  connected (4096, dropout 0.5), Coarse 7 fully connected and linear, predicting the log-depth map
  at the output size (74x55 for NYU): the network learns its own upsampling.
- fine (local): Fine 1 9x9/2 conv + 2x2 max-pool reaching the output grid, Fine 2 concatenation of
  the coarse prediction as an extra feature map, Fine 3 5x5 conv, Fine 4 5x5 conv (linear)
  predicting the refined log depth. The coarse prediction enters the fine stack detached: the fine
  stack is trained with the coarse one held fixed.

All hidden layers are ReLU. Presets: `paper` is the NYU Depth configuration (304x228 input,
74x55 output), `paper_kitti` the KITTI one (576x172 input, fine stack on the bottom rows, 142x27
output); `cpu` keeps the layer structure with fewer channels at 160x120 for the simulator camera.

Input policy for any image size and aspect (`InputView`): the image is scaled, keeping its aspect,
until the network input is its centre crop covering `view_crop` of it (the paper feeds the
304x228 centre of 320x240 frames: 0.95); what lies outside the crop is not seen. Depth is mapped
back onto the image grid by `depth_on_image`: interpolated (in log depth) inside the network's
view, NaN outside it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.preprocessing import PreprocessSpec
from ..core.imaging import DecodedImage
from .base import PerceptionModel
from .outputs import DenseOutputs

FINE_KERNEL, FINE_STRIDE, POOL = 9, 2, 2
FINE_PASS_SHIFT = 4.0  # log metres: the fine stack's initial pass-through holds depths > e^-4 m


@dataclass
class EigenDepthConfig:
    input_size: list = field(default_factory=lambda: [160, 120])  # network input (width, height)
    view_crop: float = 1.0  # the network input is this centred fraction of the resized image
    coarse_channels: list = field(default_factory=lambda: [32, 64, 96, 96, 64])  # Coarse 1-5
    coarse_hidden: int = 512  # Coarse 6
    fine_channels: list = field(default_factory=lambda: [31, 32])  # Fine 1, Fine 3
    fine_rows: int = 0  # fine stack (and output) on this many bottom input rows; 0 = all
    dropout: float = 0.5
    input_mean: list = field(default_factory=lambda: [0.5, 0.5, 0.5])  # RGB in [0, 1]
    input_std: list = field(default_factory=lambda: [0.25, 0.25, 0.25])
    min_depth: float = 0.05  # metres; published depth is clamped to this range
    max_depth: float = 200.0


def _conv_size(size: int, kernel: int, stride: int = 1, pad: int = 0) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def coarse_feature_size(width: int, height: int) -> tuple[int, int]:
    """Spatial size of Coarse 5's output (8x6 for the NYU input 304x228)."""
    sizes = []
    for side in (width, height):
        side = _conv_size(side, 11, 4) // POOL  # Coarse 1
        side = side // POOL  # Coarse 2 (5x5, zero-padded)
        side = _conv_size(side, 3, 2)  # Coarse 5 (3x3, stride 2); Coarse 3-4 keep the size
        sizes.append(side)
    return sizes[0], sizes[1]


def fine_output_size(width: int, rows: int) -> tuple[int, int]:
    """Output grid of the fine stack on a width x rows input (74x55 for 304x228)."""
    return tuple(_conv_size(side, FINE_KERNEL, FINE_STRIDE) // POOL for side in (width, rows))


# output cell j lies at network-input pixel OUTPUT_OFFSET + OUTPUT_STEP * j (pixel-centre coords):
# the centre of the two pooled 9x9/2 windows it covers
OUTPUT_STEP = FINE_STRIDE * POOL
OUTPUT_OFFSET = FINE_STRIDE * 0.5 * (POOL - 1) + (FINE_KERNEL - 1) / 2


@dataclass(frozen=True)
class InputView:
    """Where the network input lies in an image: network pixel x_n sees image pixel
    (x_n + offset_x + 0.5) / scale_x - 0.5 (pixel-centre coordinates), likewise y."""

    image_width: int
    image_height: int
    resized_width: int
    resized_height: int
    offset_x: int
    offset_y: int

    @property
    def scale_x(self) -> float:
        return self.resized_width / self.image_width

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.image_height


def input_view(image_width: int, image_height: int, input_size, view_crop: float) -> InputView:
    """Scale keeping the aspect so that the network input covers `view_crop` of the image along
    the tighter axis, and centre-crop the rest."""
    if image_width <= 0 or image_height <= 0:
        raise ValueError(f"image has zero size ({image_width}x{image_height})")
    width, height = input_size
    scale = max(width / (view_crop * image_width), height / (view_crop * image_height))
    resized_w = max(width, int(round(image_width * scale)))
    resized_h = max(height, int(round(image_height * scale)))
    return InputView(image_width, image_height, resized_w, resized_h,
                     (resized_w - width) // 2, (resized_h - height) // 2)


def resize_image(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area averaging when shrinking (no aliasing), bilinear when enlarging."""
    shrinking = width * height < pixels.shape[0] * pixels.shape[1]
    return cv2.resize(pixels, (width, height),
                      interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def crop_to_network(rgb: np.ndarray, view: InputView, input_size) -> np.ndarray:
    width, height = input_size
    resized = resize_image(rgb, view.resized_width, view.resized_height)
    return resized[view.offset_y:view.offset_y + height, view.offset_x:view.offset_x + width]


def _he_init(layer: nn.Module) -> None:
    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    nn.init.zeros_(layer.bias)


class EigenDepth(PerceptionModel):
    name = "depth"
    Config = EigenDepthConfig
    outputs = DenseOutputs({"coarse_log_depth": "coarse stack output",
                           "log_depth": "B x 1 x h x w log metres", "depth": "B x 1 x h x w m"})
    # checkpoint configs are refused outside these (models/base.py); sizes bound the memory
    config_bounds = {"input_size": (16, 2048), "view_crop": (0.05, 1.0),
                     "coarse_channels": (1, 2048), "coarse_hidden": (1, 16384),
                     "fine_channels": (1, 1024), "fine_rows": (0, 2048), "dropout": (0.0, 1.0),
                     "input_mean": (-10.0, 10.0), "input_std": (1e-6, 1e3),
                     "min_depth": (1e-6, 1e3), "max_depth": (1e-3, 1e6)}
    presets = {
        "cpu": {},
        "paper": {"input_size": [304, 228], "view_crop": 0.95,
                  "coarse_channels": [96, 256, 384, 384, 256], "coarse_hidden": 4096,
                  "fine_channels": [63, 64]},
        # KITTI: 1224x368 halved, cropped to 576x172; the fine stack sees the bottom rows, where
        # the laser has depth (output 142x27)
        "paper_kitti": {"input_size": [576, 172], "view_crop": 1.0,
                        "coarse_channels": [96, 256, 384, 384, 256], "coarse_hidden": 4096,
                        "fine_channels": [63, 64], "fine_rows": 116},
    }

    def __init__(self, config: EigenDepthConfig):
        super().__init__(config)
        width, height = config.input_size
        rows = config.fine_rows or height
        if not 0 < rows <= height:
            raise ValueError(f"depth: fine_rows {config.fine_rows} must lie in (0, {height}]")
        self.output_width, self.output_height = fine_output_size(width, rows)
        feature_w, feature_h = coarse_feature_size(width, height)
        if min(feature_w, feature_h, self.output_width, self.output_height) < 1:
            raise ValueError(f"depth: input {width}x{height} is too small for the network")
        c1, c2, c3, c4, c5 = config.coarse_channels
        self.coarse1 = nn.Conv2d(3, c1, 11, stride=4)
        self.coarse2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.coarse3 = nn.Conv2d(c2, c3, 3, padding=1)
        self.coarse4 = nn.Conv2d(c3, c4, 3, padding=1)
        self.coarse5 = nn.Conv2d(c4, c5, 3, stride=2)
        self.coarse6 = nn.Linear(c5 * feature_w * feature_h, config.coarse_hidden)
        self.coarse7 = nn.Linear(config.coarse_hidden, self.output_width * self.output_height)
        self.dropout = nn.Dropout(config.dropout)
        f1, f3 = config.fine_channels
        self.fine1 = nn.Conv2d(3, f1, FINE_KERNEL, stride=FINE_STRIDE)
        self.fine3 = nn.Conv2d(f1 + 1, f3, 5, padding=2)  # Fine 2 = the concatenation
        self.fine4 = nn.Conv2d(f3, 1, 5, padding=2)
        for layer in (self.coarse1, self.coarse2, self.coarse3, self.coarse4, self.coarse5,
                      self.coarse6, self.fine1, self.fine3):
            _he_init(layer)
        nn.init.normal_(self.coarse7.weight, std=1e-3)  # the linear output starts small
        nn.init.zeros_(self.coarse7.bias)
        self.init_fine_passthrough()
        self.register_buffer("mean", torch.tensor(config.input_mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(config.input_std).view(1, 3, 1, 1))
        self._image_maps: dict = {}

    def init_fine_passthrough(self) -> None:
        """Start the fine stack as the identity on the coarse map: Fine 3's first channel copies
        it (shifted by FINE_PASS_SHIFT so the ReLU passes any depth above 2 cm) and Fine 4 reads
        it back, so the fine stage starts at the coarse prediction and only learns the
        refinement. Starting from an unrelated output (small random weights) costs the fine stage
        its first epochs just to get back to the coarse network's accuracy."""
        with torch.no_grad():
            _he_init(self.fine1)
            _he_init(self.fine3)
            centre = self.fine3.kernel_size[0] // 2
            coarse_channel = self.fine3.in_channels - 1  # Fine 2 appends the coarse map last
            self.fine3.weight[0].zero_()
            self.fine3.weight[0, coarse_channel, centre, centre] = 1.0
            self.fine3.bias[0] = FINE_PASS_SHIFT
            nn.init.normal_(self.fine4.weight, std=1e-4)  # not 0: every layer gets a gradient
            self.fine4.weight[0, 0, centre, centre] = 1.0
            self.fine4.bias.fill_(-FINE_PASS_SHIFT)

    # --- layers by training stack, with the paper's learning-rate ratios --------------------
    def coarse_layers(self) -> list[nn.Module]:
        return [self.coarse1, self.coarse2, self.coarse3, self.coarse4, self.coarse5,
                self.coarse6, self.coarse7]

    def fine_layers(self) -> list[nn.Module]:
        return [self.fine1, self.fine3, self.fine4]

    def layer_learning_rates(self, stack: str) -> list[tuple[nn.Module, float]]:
        """Per-layer rates of Sec. 4.1: 0.001 for Coarse 1-5, 0.1 for Coarse 6-7; 0.001 for the
        fine layers 1 and 3 and 0.01 for layer 2, read as the fine stack's three weight layers in
        order (Fine 1, Fine 3, Fine 4 of Fig. 1; Fine 2 has no weights)."""
        if stack == "coarse":
            return [(layer, 0.001) for layer in self.coarse_layers()[:5]] + \
                   [(self.coarse6, 0.1), (self.coarse7, 0.1)]
        if stack == "fine":
            return [(self.fine1, 0.001), (self.fine3, 0.01), (self.fine4, 0.001)]
        raise ValueError(f"unknown stack '{stack}' (coarse or fine)")

    # --- network ----------------------------------------------------------------------------
    def forward(self, batch: torch.Tensor, fine: bool = True) -> dict[str, torch.Tensor]:
        """Bx3xHxW RGB in [0, 1] -> log depth and depth (metres) at the output grid, Bx1xhxw;
        `fine=False` runs the coarse stack alone (its training stage)."""
        x = (batch - self.mean) / self.std
        c = F.max_pool2d(F.relu(self.coarse1(x)), POOL)
        c = F.max_pool2d(F.relu(self.coarse2(c)), POOL)
        c = F.relu(self.coarse3(c))
        c = F.relu(self.coarse4(c))
        c = F.relu(self.coarse5(c))
        c = self.dropout(F.relu(self.coarse6(c.flatten(1))))
        coarse = self.coarse7(c).view(-1, 1, self.output_height, self.output_width)
        if not fine:
            return {"coarse_log_depth": coarse}
        rows = self.config.fine_rows
        f = x[:, :, -rows:] if rows else x
        f = F.max_pool2d(F.relu(self.fine1(f)), POOL)
        f = F.relu(self.fine3(torch.cat([f, coarse.detach()], dim=1)))
        log_depth = self.fine4(f)
        return {"coarse_log_depth": coarse, "log_depth": log_depth,
                "depth": torch.exp(log_depth)}

    # --- images in, depth images out ---------------------------------------------------------
    def view(self, image_width: int, image_height: int) -> InputView:
        return input_view(image_width, image_height, self.config.input_size,
                          self.config.view_crop)

    def network_pixels(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB of any size -> the network input (uint8, input_size)."""
        return crop_to_network(rgb, self.view(rgb.shape[1], rgb.shape[0]),
                               self.config.input_size)

    def output_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Network-input pixel coordinates (x, y) of the output cells' centres."""
        top = self.config.input_size[1] - (self.config.fine_rows or self.config.input_size[1])
        xs = OUTPUT_OFFSET + OUTPUT_STEP * np.arange(self.output_width)
        ys = top + OUTPUT_OFFSET + OUTPUT_STEP * np.arange(self.output_height)
        return xs, ys

    def _maps(self, image_width: int, image_height: int):
        key = (image_width, image_height)
        if key not in self._image_maps:
            view = self.view(image_width, image_height)
            width, height = self.config.input_size
            # image pixel centre -> network input pixel -> output cell (fractional)
            x_net = (np.arange(image_width) + 0.5) * view.scale_x - 0.5 - view.offset_x
            y_net = (np.arange(image_height) + 0.5) * view.scale_y - 0.5 - view.offset_y
            top = height - (self.config.fine_rows or height)
            map_x = ((x_net - OUTPUT_OFFSET) / OUTPUT_STEP).astype(np.float32)
            map_y = ((y_net - top - OUTPUT_OFFSET) / OUTPUT_STEP).astype(np.float32)
            seen_x = (x_net >= -0.5) & (x_net <= width - 0.5)
            seen_y = (y_net >= top - 0.5) & (y_net <= height - 0.5)
            grid_x, grid_y = np.meshgrid(map_x, map_y)
            self._image_maps[key] = (grid_x, grid_y, ~np.outer(seen_y, seen_x))
        return self._image_maps[key]

    def depth_on_image(self, log_depth: np.ndarray, image_width: int,
                       image_height: int) -> np.ndarray:
        """Output-grid log depth (h x w) -> metric depth on the image grid (float32, metres):
        bilinear in log depth inside the network's view (the fine stack's few border pixels take
        the nearest cell), NaN where the network did not look."""
        grid_x, grid_y, unseen = self._maps(image_width, image_height)
        log_depth = np.ascontiguousarray(log_depth, dtype=np.float32)
        upsampled = cv2.remap(log_depth, grid_x, grid_y, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        depth = np.exp(upsampled)
        np.clip(depth, self.config.min_depth, self.config.max_depth, out=depth)
        depth[unseen] = np.nan
        return depth

    def predict_image(self, image: DecodedImage, device: torch.device | None = None) -> np.ndarray:
        """One frame -> HxW float32 depth in metres at the frame's size (NaN outside the view)."""
        batch = self.preprocess(image).to(device or self.device)
        with torch.inference_mode():
            log_depth = self(batch)["log_depth"][0, 0].float().cpu().numpy()
        return self.depth_on_image(log_depth, image.width, image.height)

    def preprocessing_spec(self) -> PreprocessSpec:
        """Aspect kept so the input covers view_crop of the image along the tighter axis, area
        when shrinking and bilinear when enlarging, centre crop to input_size."""
        size = tuple(self.config.input_size)
        return PreprocessSpec(color="rgb", resize="cover", size=size, view=self.config.view_crop,
                              interpolation="area_or_linear", crop=size, normalize="fixed",
                              mean=self.config.input_mean, std=self.config.input_std)


MODEL = EigenDepth
