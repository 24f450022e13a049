"""Self-supervised depth from real image sequences: the photometric reprojection loss of
Godard et al., "Digging Into Self-Supervised Monocular Depth Estimation" (monodepth2, ICCV 2019),
for the Eigen et al. network.

A target frame's predicted depth and the relative pose to a neighbouring (source) frame map
every target pixel into the source; sampling the source there should reproduce the target.

- Photometric error (Eqn. 1): pe = alpha/2 (1 - SSIM) + (1 - alpha) |I_t - I_s->t|_1, alpha
  0.85, SSIM over 3x3 windows.
- Per-pixel minimum (Eqn. 4) over the source frames, so a pixel occluded in one source is judged
  in the other.
- Auto-masking (Sec. 3.3): the unwarped sources' errors join the minimum (with a little noise to
  break ties); where a source already matches without warping (a static camera, objects moving
  with it) that term wins and the pixel teaches the depth nothing. Pixels that project outside
  a source cannot win for that source.
- Edge-aware smoothness (Eqn. 3): |d_x d*| e^-|d_x I| + |d_y d*| e^-|d_y I| on the mean-normalised
  inverse depth d*, weight 1e-3.
- Pose: a jointly learnt pose network (`PoseNetwork`: the two frames stacked, convolutions,
  global average, 6 numbers: axis-angle and translation, scaled by 0.01 as in monodepth2) for
  video without poses; or known poses (`T_source_target`), which need no pose network and give
  the depth metric scale (multi-view images with ground-truth cameras).

The network's depth (its output grid) is upsampled bilinearly in log depth to the network
input's pixels; images are compared on a pyramid of that input (`pyramid_reprojection_loss`).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SSIM_C1, SSIM_C2 = 0.01 ** 2, 0.03 ** 2
PHOTOMETRIC_ALPHA = 0.85
SMOOTHNESS_WEIGHT = 1e-3


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM over 3x3 windows (reflection-padded), Bx3xHxW in [0, 1]."""
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x ** 2
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y ** 2
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    denominator = (mu_x ** 2 + mu_y ** 2 + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    return numerator / denominator


def photometric_error(target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """Bx1xHxW: alpha/2 (1 - SSIM) + (1 - alpha) L1, both averaged over the channels."""
    l1 = (target - prediction).abs().mean(1, keepdim=True)
    dissimilarity = ((1 - ssim(target, prediction)) / 2).clamp(0, 1).mean(1, keepdim=True)
    return PHOTOMETRIC_ALPHA * dissimilarity + (1 - PHOTOMETRIC_ALPHA) * l1


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Bx3 rotation vectors -> Bx3x3 rotation matrices (Rodrigues)."""
    angle = axis_angle.norm(dim=1, keepdim=True).clamp(min=1e-8)
    axis = axis_angle / angle
    x, y, z = axis[:, 0], axis[:, 1], axis[:, 2]
    zero = torch.zeros_like(x)
    cross = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], 1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(cross)
    sin, cos = angle.sin()[:, :, None], angle.cos()[:, :, None]
    return eye + sin * cross + (1 - cos) * (cross @ cross)


def pose_matrix(axis_angle: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Bx4x4 [R t; 0 1]."""
    matrix = torch.zeros(axis_angle.shape[0], 4, 4, dtype=axis_angle.dtype,
                         device=axis_angle.device)
    matrix[:, :3, :3] = axis_angle_to_matrix(axis_angle)
    matrix[:, :3, 3] = translation
    matrix[:, 3, 3] = 1.0
    return matrix


def warp(source: torch.Tensor, depth: torch.Tensor, T_source_target: torch.Tensor,
         K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The source image resampled onto the target's pixels: (Bx3xHxW image, Bx1xHxW mask of the
    pixels that land inside the source and in front of it). depth: Bx1xHxW target depth;
    K: Bx3x3 intrinsics of both images (pixel centres at integer coordinates)."""
    batch, _, height, width = depth.shape
    ys, xs = torch.meshgrid(torch.arange(height, dtype=depth.dtype, device=depth.device),
                            torch.arange(width, dtype=depth.dtype, device=depth.device),
                            indexing="ij")
    pixels = torch.stack([xs, ys, torch.ones_like(xs)]).view(1, 3, -1)
    rays = torch.linalg.inv(K) @ pixels  # Bx3xN
    points = rays * depth.view(batch, 1, -1)
    moved = T_source_target[:, :3, :3] @ points + T_source_target[:, :3, 3:]
    projected = K @ moved
    z = projected[:, 2:3]
    in_front = z > 1e-3
    uv = projected[:, :2] / z.clamp(min=1e-3)
    grid_x = 2 * uv[:, 0] / (width - 1) - 1
    grid_y = 2 * uv[:, 1] / (height - 1) - 1
    grid = torch.stack([grid_x, grid_y], -1).view(batch, height, width, 2)
    warped = F.grid_sample(source, grid, mode="bilinear", padding_mode="border",
                           align_corners=True)
    inside = (grid_x.abs() <= 1) & (grid_y.abs() <= 1) & in_front[:, 0]
    return warped, inside.view(batch, 1, height, width)


def smoothness_loss(depth: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness of the mean-normalised inverse depth."""
    disparity = 1.0 / depth
    disparity = disparity / disparity.mean((2, 3), keepdim=True).clamp(min=1e-7)
    grad_x = (disparity[..., :, 1:] - disparity[..., :, :-1]).abs()
    grad_y = (disparity[..., 1:, :] - disparity[..., :-1, :]).abs()
    image_x = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True)
    image_y = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True)
    return (grad_x * torch.exp(-image_x)).mean() + (grad_y * torch.exp(-image_y)).mean()


OUTSIDE_ERROR = 10.0  # a warp outside the source never wins the per-pixel minimum


def reprojection_loss(target: torch.Tensor, sources: list[torch.Tensor], depth: torch.Tensor,
                      poses: list[torch.Tensor], K: torch.Tensor, automask: bool = True,
                      generator: torch.Generator | None = None) -> dict:
    """monodepth2's loss for one target frame and its source frames (see module doc): the mean
    per-pixel minimum reprojection error plus the weighted edge-aware smoothness. Returns the
    total `loss` and its parts (`photometric`, `smoothness`, `automasked`: the fraction of
    pixels where an unwarped source won)."""
    errors = []
    for source, T_source_target in zip(sources, poses):
        warped, inside = warp(source, depth, T_source_target, K)
        error = photometric_error(target, warped)
        errors.append(torch.where(inside, error, torch.full_like(error, OUTSIDE_ERROR)))
    reprojection = torch.cat(errors, 1)
    if automask:
        with torch.no_grad():  # independent of the depth and the pose
            identity = torch.cat([photometric_error(target, source) for source in sources], 1)
        noise = torch.rand(identity.shape, generator=generator, dtype=identity.dtype) * 1e-5
        combined = torch.cat([identity + noise.to(identity.device), reprojection], 1)
        minimum, index = combined.min(1, keepdim=True)
        automasked = (index < len(sources)).float().mean()
    else:
        minimum = reprojection.min(1, keepdim=True)[0]
        automasked = torch.zeros(())
    seen = minimum < OUTSIDE_ERROR  # pixels no source sees teach nothing
    photometric = (minimum * seen).sum() / seen.sum().clamp(min=1)
    smoothness = smoothness_loss(depth, target)
    return {"loss": photometric + SMOOTHNESS_WEIGHT * smoothness, "photometric": photometric,
            "smoothness": smoothness, "automasked": automasked}


def upsample_depth(log_depth: torch.Tensor, model, size: tuple[int, int]) -> torch.Tensor:
    """The network's output-grid log depth -> depth at the network input's pixels (width,
    height = `size`): bilinear in log depth, each output cell at its input-pixel centre."""
    xs, ys = model.output_grid()
    width, height = size
    grid_x = (torch.arange(width, dtype=log_depth.dtype) - float(xs[0])) / float(xs[1] - xs[0])
    grid_y = (torch.arange(height, dtype=log_depth.dtype) - float(ys[0])) / float(ys[1] - ys[0])
    # normalised sampling coordinates of grid_sample (align_corners=True: -1 and 1 are the
    # centres of the first and last cells); beyond them the border cell's value
    out_h, out_w = log_depth.shape[-2:]
    gx = 2 * grid_x / max(out_w - 1, 1) - 1
    gy = 2 * grid_y / max(out_h - 1, 1) - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)
    grid = grid.to(log_depth.device).expand(log_depth.shape[0], height, width, 2)
    sampled = F.grid_sample(log_depth, grid, mode="bilinear", padding_mode="border",
                            align_corners=True)
    return torch.exp(sampled)


class PoseNetwork(nn.Module):
    """Relative camera motion between two frames (monodepth2's separate pose network, lighter:
    five strided convolutions instead of a ResNet-18): the frames stacked as 6 channels ->
    axis-angle and translation of T_source_target, times 0.01 (small initial motions)."""

    def __init__(self, channels=(16, 32, 64, 128, 128)):
        super().__init__()
        layers, previous = [], 6
        for index, width in enumerate(channels):
            kernel = 7 if index == 0 else 5 if index == 1 else 3
            layers += [nn.Conv2d(previous, width, kernel, stride=2, padding=kernel // 2),
                       nn.ReLU(inplace=True)]
            previous = width
        self.encoder = nn.Sequential(*layers)
        self.head = nn.Conv2d(previous, 6, 1)
        self.register_buffer("mean", torch.tensor([0.45] * 6).view(1, 6, 1, 1))
        self.register_buffer("std", torch.tensor([0.225] * 6).view(1, 6, 1, 1))

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Bx3xHxW each, in [0, 1] -> Bx4x4 T_source_target."""
        x = (torch.cat([target, source], 1) - self.mean) / self.std
        motion = 0.01 * self.head(self.encoder(x)).mean((2, 3))
        return pose_matrix(motion[:, :3], motion[:, 3:])


# --- real training data at the network input -------------------------------------------------
def network_intrinsics(K: np.ndarray, view) -> np.ndarray:
    """Intrinsics of an image (pixel centres at integers) at the network input it becomes:
    scaled by the view's resize, shifted by its crop."""
    K = np.asarray(K, np.float64)
    out = K.copy()
    for row, scale, offset in ((0, view.scale_x, view.offset_x), (1, view.scale_y, view.offset_y)):
        out[row, row] = K[row, row] * scale
        out[row, 2] = (K[row, 2] + 0.5) * scale - 0.5 - offset
    return out


def _to_network(model, path: str) -> tuple[np.ndarray, object]:
    from ..datasets.depth import load_rgb
    rgb = load_rgb(path)
    view = model.view(rgb.shape[1], rgb.shape[0])
    return model.network_pixels(rgb), view


def _tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)


class VideoData:
    """Consecutive real frames at the network input (uint8), the assumed intrinsics, and
    triplets (t - offset, t, t + offset) for the reprojection loss with a learnt pose.
    Validation: the last `val_fraction` of the frames (a contiguous block)."""

    def __init__(self, folders: list[str], model, offset: int, focal_ratio: float,
                 val_fraction: float = 0.15, log=print):
        from ..datasets.depth import read_video_frames
        self.images, self.K, self.train, self.val = [], [], [], []
        for folder in folders:
            paths = read_video_frames(folder)
            start = len(self.images)
            for path in paths:
                pixels, view = _to_network(model, path)
                self.images.append(pixels)
            width, height = view.image_width, view.image_height
            # unknown camera: focal_ratio * width, principal point at the centre
            K = np.array([[focal_ratio * width, 0, (width - 1) / 2],
                          [0, focal_ratio * width, (height - 1) / 2], [0, 0, 1]])
            K_net = network_intrinsics(K, view)
            self.K.extend([K_net] * len(paths))
            n_val = int(round(len(paths) * val_fraction))
            targets = list(range(start + offset, start + len(paths) - offset))
            split = start + len(paths) - n_val
            self.train += [t for t in targets if t + offset < split]
            self.val += [t for t in targets if t - offset >= split]
            log(f"  video {folder}: {len(paths)} frames, {width}x{height}, assumed fx = "
                f"{focal_ratio:g} * width")
        self.offset = offset

    def batch(self, targets, rng: np.random.Generator | None, color_range: float = 0.0):
        """(target, [previous, next], K): Bx3xHxW in [0, 1] and Bx3x3. Training batches get one
        random colour factor per triplet and random horizontal flips (the pose network sees the
        flipped frames too)."""
        groups = [[], [], []]
        Ks = []
        for t in targets:
            frames = [self.images[t], self.images[t - self.offset], self.images[t + self.offset]]
            K = self.K[t].copy()
            if rng is not None:
                factor = rng.uniform(1 - color_range, 1 + color_range, 3)
                frames = [np.clip(f * factor, 0, 255).astype(np.uint8) for f in frames]
                if rng.random() < 0.5:
                    frames = [np.ascontiguousarray(f[:, ::-1]) for f in frames]
                    K[0, 2] = frames[0].shape[1] - 1 - K[0, 2]
            for group, frame in zip(groups, frames):
                group.append(frame)
            Ks.append(K)
        return _tensor(groups[0]), [_tensor(groups[1]), _tensor(groups[2])], \
            torch.tensor(np.stack(Ks), dtype=torch.float32)


class PosedData:
    """Real multi-view images with known cameras at the network input: each target image with
    its neighbours in name order within its scene as sources, T_source_target from the ground
    truth (metric). Validation: the scenes named in `val_scenes`."""

    def __init__(self, roots: list[str], model, val_scenes: tuple[str, ...], log=print):
        from ..datasets.depth import read_posed_images
        self.images, self.K, self.T, self.scene = [], [], [], []
        for root in roots:
            for posed in read_posed_images(root):
                pixels, view = _to_network(model, posed.image)
                self.images.append(pixels)
                self.K.append(network_intrinsics(posed.K, view))
                self.T.append(posed.T_camera_world)
                self.scene.append(posed.scene)
        self.train, self.val = [], []
        for index, scene in enumerate(self.scene):
            neighbours = [j for j in (index - 1, index + 1)
                          if 0 <= j < len(self.scene) and self.scene[j] == scene]
            if neighbours:
                (self.val if scene in val_scenes else self.train).append(index)
        scenes = sorted(set(self.scene))
        log(f"  posed images: {len(self.images)} in {len(scenes)} scenes ({', '.join(scenes)}); "
            f"validation scenes {', '.join(val_scenes) or 'none'}")

    def sources(self, index: int) -> list[int]:
        return [j for j in (index - 1, index + 1)
                if 0 <= j < len(self.scene) and self.scene[j] == self.scene[index]]

    def batch(self, targets, rng: np.random.Generator | None, color_range: float = 0.0):
        """(target, [source], [T_source_target], K): one source per target (a random neighbour
        in training, the first in validation)."""
        images, sources, poses, Ks = [], [], [], []
        for t in targets:
            options = self.sources(t)
            s = options[int(rng.integers(len(options)))] if rng is not None else options[0]
            pair = [self.images[t], self.images[s]]
            if rng is not None:
                factor = rng.uniform(1 - color_range, 1 + color_range, 3)
                pair = [np.clip(f * factor, 0, 255).astype(np.uint8) for f in pair]
            images.append(pair[0])
            sources.append(pair[1])
            poses.append(self.T[s] @ np.linalg.inv(self.T[t]))
            Ks.append(self.K[t])  # one camera per scene (checked: strecha's are equal)
        return _tensor(images), [_tensor(sources)], \
            [torch.tensor(np.stack(poses), dtype=torch.float32)], \
            torch.tensor(np.stack(Ks), dtype=torch.float32)


def downsample_intrinsics(K: torch.Tensor, factor: int) -> torch.Tensor:
    """Intrinsics of the image average-pooled by `factor` (pixel centres at integers)."""
    out = K.clone()
    out[:, :2, :2] = K[:, :2, :2] / factor
    out[:, :2, 2] = (K[:, :2, 2] + 0.5) / factor - 0.5
    return out


def pyramid_reprojection_loss(target: torch.Tensor, sources: list[torch.Tensor],
                              depth: torch.Tensor, poses: list[torch.Tensor], K: torch.Tensor,
                              factors=(2, 4), automask: bool = True) -> dict:
    """reprojection_loss averaged over the images average-pooled by each factor (depth pooled in
    log), so motions of many pixels still give a useful gradient at the coarser level. The
    default (2, 4) compares 80x60 and 40x30 images for the cpu preset: no finer than its 38x28
    depth needs, and a quarter of the cost of the full input."""
    parts = []
    for factor in factors:
        if factor == 1:
            parts.append(reprojection_loss(target, sources, depth, poses, K, automask))
            continue
        pooled = [F.avg_pool2d(image, factor) for image in (target, *sources)]
        pooled_depth = torch.exp(F.avg_pool2d(torch.log(depth), factor))
        parts.append(reprojection_loss(pooled[0], pooled[1:], pooled_depth, poses,
                                       downsample_intrinsics(K, factor), automask))
    return {key: sum(part[key] for part in parts) / len(parts) for key in parts[0]}
