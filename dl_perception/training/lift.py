"""`dl-perception train lift`: LIFT's losses and staged training (Yi et al., ECCV 2016, sec. 3-4).

Training data are image pairs with known geometry, so every keypoint of image A has a known
location, scale and rotation in image B:

* homography pairs: two random homographies (rotation, zoom, perspective, shift) of any image,
  with independent photometric changes;
* sequence pairs: two frames of a recorded sequence (docs/datasets.md), related through the
  metric depth of the first frame and both camera poses, with an occlusion test against the
  second frame's depth.

Keypoints are SIFT detections in image A (LIFT's training points are SfM points, i.e. SIFT
keypoints seen in several views); "non-feature" points are random places far from any SIFT
response. Each keypoint's scale and rotation in B come from the local similarity part of the
correspondence's Jacobian (finite differences of the mapping).

Stages, as in the paper, each training one network with the earlier ones fixed:
1. descriptor: corresponding patches (aligned by the known similarity) close, non-corresponding
   ones (the hardest in the batch) at least `margin` apart: hinge loss;
2. orientation: patches cropped at the predicted orientations must give equal descriptors;
3. detector: quadruplets P1, P2 (corresponding), P3 (another keypoint), P4 (no keypoint):
   classification (score high on P1-P3, low on P4; squared hinge on the soft-max-pooled
   score map) + overlap of the soft-argmax locations found in P1 and P2 (mapped to one frame) +
   the descriptor distance of the patches cropped there (the end-to-end term).
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..datasets.sequence import read_sequence
from ..datasets.strecha import Tracks, build_tracks, read_scene
from ..core.paths import shared_data_dir
from ..core.progress import progress
from ..core.geometry import invert, project, transform_points
from ..models.lift import LIFT, image_pyramid, sample_patches, soft_argmax
from .common import TrainingDataError, refuse_evaluation_worlds, seed_everything
from .run import TrainingRun

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff")


@dataclass
class LIFTTrainConfig:
    preset: str = "cpu"
    descriptor_steps: int = 3000
    orientation_steps: int = 1500
    detector_steps: int = 1500
    batch_size: int = 64
    learning_rate: float = 1e-3
    margin: float = 1.0  # descriptor hinge: non-corresponding pairs at least this far apart
    # descriptor patches turned by the known rotation ("known", the paper's) or, to fine-tune a
    # descriptor to the orientation network's real errors, by that network's angles ("learned")
    descriptor_orientation: str = "known"
    alpha_classification: float = 1.0
    alpha_overlap: float = 1.0
    alpha_pair: float = 1.0
    image_size: list = field(default_factory=lambda: [320, 240])  # training pairs (w, h)
    pairs_in_memory: int = 40
    refresh_every: int = 50  # steps between replacing a few pairs with new ones
    max_rotation_deg: float = 180.0
    min_zoom: float = 0.5
    max_zoom: float = 2.0
    perspective: float = 0.0008
    sequence_max_gap: int = 8  # frames between the two views of a sequence pair
    sequence_fraction: float = 0.5  # share of pairs from sequences when both kinds are given
    scene_fraction: float = 0.5  # share of pairs from multi-view scenes when given
    scene_max_gap: int = 4  # views between the two of a scene pair (capture order)
    images_per_folder: int = 300  # evenly spaced images of a large folder (video frames)
    keypoints_per_pair: int = 256
    min_sigma: float = 1.0  # the run-time detector's smallest keypoints (level 0.5, sigma 2)
    max_sigma: float = 12.0
    detector_offset: float = 8.0  # random shift of detector patches (detector-frame pixels)
    validation_pairs: int = 8
    validate_every: int = 500
    seed: int = 0
    # covariance stage (detector, dense, on homographies of the --images photographs): the
    # score map's soft-max windows must move with the image; the initial detector anchors it
    covariance_steps: int = 0
    covariance_learning_rate: float = 1e-4
    covariance_batch: int = 4  # image pairs per step
    covariance_crop: int = 160
    covariance_window: int = 16
    covariance_anchor: float = 10.0
    covariance_max_rotation_deg: float = 30.0
    covariance_max_zoom: float = 1.25


# ---------------------------------------------------------------------------------------------
# pairs with known geometry

@dataclass
class Pair:
    """Two gray images (float32, 0..1, same size) and the map of A's pixels into B."""

    image_a: np.ndarray
    image_b: np.ndarray
    correspond: object  # (N x 2 points of A) -> (N x 2 points of B, N valid flags)
    source: str
    points: "PairPoints | None" = None  # known correspondences (multi-view scenes)


# The real images LIFT is validated on (docs/lift.md): never training data.
VALIDATION_DATA = ("homography", "churchill_homography", os.path.join("strecha_mvs", "fountain-P11"))


def refuse_validation_data(folder: str) -> None:
    real = os.path.realpath(folder)
    for name in VALIDATION_DATA:
        reserved = os.path.realpath(os.path.join(shared_data_dir(), name))
        if real == reserved or real.startswith(reserved + os.sep) or reserved.startswith(real + os.sep):
            raise TrainingDataError(f"{folder} holds LIFT validation data ({name}); it is never "
                                    "used for training")


def list_images(folders: list[str], per_folder: int | None = None) -> list[str]:
    """Images under each folder; with `per_folder`, at most that many of each, evenly spaced
    (consecutive video frames add little)."""
    paths = []
    for folder in folders:
        found = []
        for root, _, files in os.walk(folder):
            found += [os.path.join(root, f) for f in sorted(files)
                      if f.lower().endswith(IMAGE_EXTENSIONS)]
        found.sort()
        if per_folder and len(found) > per_folder:
            found = [found[i] for i in np.linspace(0, len(found) - 1, per_folder).round().astype(int)]
        paths += found
    return sorted(paths)


def _blur_for(image: np.ndarray, shrink: float) -> np.ndarray:
    """Anti-alias before resampling an image down by `shrink` (>1)."""
    if shrink <= 1.05:
        return image
    return cv2.GaussianBlur(image, (0, 0), 0.6 * math.sqrt(shrink * shrink - 1.0))


def _photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = image * rng.uniform(0.7, 1.3) + rng.uniform(-0.15, 0.15)
    out = np.clip(out, 0.0, 1.0) ** rng.uniform(0.7, 1.4)
    out = out + rng.normal(0.0, rng.uniform(0.0, 0.02), out.shape)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _centred(matrix: np.ndarray, cx: float, cy: float) -> np.ndarray:
    to_origin = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1.0]])
    back = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1.0]])
    return back @ matrix @ to_origin


def random_homography(width: int, height: int, rng: np.random.Generator,
                      cfg: LIFTTrainConfig) -> np.ndarray:
    angle = math.radians(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg))
    zoom = math.exp(rng.uniform(math.log(cfg.min_zoom), math.log(cfg.max_zoom)))
    similarity = np.array([[zoom * math.cos(angle), -zoom * math.sin(angle), 0],
                           [zoom * math.sin(angle), zoom * math.cos(angle), 0], [0, 0, 1.0]])
    perspective = np.eye(3)
    perspective[2, :2] = rng.uniform(-cfg.perspective, cfg.perspective, 2)
    shift = np.eye(3)
    shift[:2, 2] = rng.uniform(-0.1, 0.1, 2) * (width, height)
    return shift @ _centred(similarity @ perspective, width / 2, height / 2)


def apply_homography(H: np.ndarray, points: np.ndarray) -> np.ndarray:
    homogeneous = np.c_[points, np.ones(len(points))] @ H.T
    with np.errstate(divide="ignore", invalid="ignore"):
        return homogeneous[:, :2] / homogeneous[:, 2:3]


def _warp(source: np.ndarray, H: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Warp with anti-aliasing for the shrink at the image centre; also the valid-pixel mask."""
    width, height = size
    centre = np.array([[width / 2, height / 2]])
    back = np.linalg.inv(H)
    step = [apply_homography(back, centre + d) - apply_homography(back, centre) for d in
            (np.array([[1.0, 0]]), np.array([[0, 1.0]]))]
    shrink = math.sqrt(abs(np.linalg.det(np.c_[step[0][0], step[1][0]])))
    warped = cv2.warpPerspective(_blur_for(source, shrink), H, size, flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    mask = cv2.warpPerspective(np.ones(source.shape[:2], np.uint8), H, size,
                               flags=cv2.INTER_NEAREST, borderValue=0)
    return warped, mask


def homography_pair(source: np.ndarray, rng: np.random.Generator, cfg: LIFTTrainConfig,
                    name: str = "") -> Pair:
    """Image A: a random crop of `source` at the training size; image B: A under a random
    homography, rendered from the full-resolution source."""
    width, height = cfg.image_size
    src_h, src_w = source.shape[:2]
    crop_scale = rng.uniform(0.5, 1.0) * min(src_w / width, src_h / height)
    crop_w, crop_h = width * crop_scale, height * crop_scale
    x0 = rng.uniform(0, src_w - crop_w)
    y0 = rng.uniform(0, src_h - crop_h)
    to_a = np.array([[1 / crop_scale, 0, -x0 / crop_scale], [0, 1 / crop_scale, -y0 / crop_scale],
                     [0, 0, 1.0]])
    a_to_b = random_homography(width, height, rng, cfg)
    image_a, _ = _warp(source, to_a, (width, height))
    image_b, mask_b = _warp(source, a_to_b @ to_a, (width, height))

    def correspond(points: np.ndarray):
        mapped = apply_homography(a_to_b, points)
        inside = (np.isfinite(mapped).all(1) & (mapped[:, 0] >= 0) & (mapped[:, 0] <= width - 1)
                  & (mapped[:, 1] >= 0) & (mapped[:, 1] <= height - 1))
        valid = inside.copy()
        ix = np.clip(np.round(mapped[:, 0]), 0, width - 1).astype(int)
        iy = np.clip(np.round(mapped[:, 1]), 0, height - 1).astype(int)
        valid[inside] &= mask_b[iy[inside], ix[inside]] > 0
        return mapped, valid

    return Pair(_photometric(image_a, rng), _photometric(image_b, rng), correspond,
                f"homography:{name}")


def sequence_pair(sequence, index_a: int, index_b: int, cfg: LIFTTrainConfig,
                  rng: np.random.Generator) -> Pair:
    """Two frames of a recorded sequence, resized to the training size; correspondences from
    A's depth and both poses, kept where B's depth agrees (not occluded)."""
    width, height = cfg.image_size
    frame_a, frame_b = sequence.frames[index_a], sequence.frames[index_b]
    camera = sequence.camera
    sx, sy = camera.width / width, camera.height / height  # training pixel -> sequence pixel
    depth_a, depth_b = frame_a.load_depth(), frame_b.load_depth()
    K = camera.K
    b_from_a = invert(frame_b.pose) @ frame_a.pose

    def gray(frame):
        rgb = frame.load_rgb()
        small = cv2.resize(_blur_for(rgb, max(sx, sy)), (width, height),
                           interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0

    def correspond(points: np.ndarray):
        full = np.c_[(points[:, 0] + 0.5) * sx - 0.5, (points[:, 1] + 0.5) * sy - 0.5]
        ix = np.clip(np.round(full[:, 0]), 0, camera.width - 1).astype(int)
        iy = np.clip(np.round(full[:, 1]), 0, camera.height - 1).astype(int)
        z = depth_a[iy, ix]
        rays = np.c_[(full[:, 0] - K[0, 2]) / K[0, 0], (full[:, 1] - K[1, 2]) / K[1, 1],
                     np.ones(len(full))]
        in_b, z_b = project(transform_points(b_from_a, rays * z[:, None]), K)
        jx = np.clip(np.round(in_b[:, 0]), 0, camera.width - 1).astype(int)
        jy = np.clip(np.round(in_b[:, 1]), 0, camera.height - 1).astype(int)
        seen = depth_b[jy, jx]
        with np.errstate(invalid="ignore"):
            valid = (np.isfinite(z) & (z > 0) & (z_b > 0.05) & np.isfinite(seen)
                     & (np.abs(seen - z_b) < 0.03 * z_b + 0.02)
                     & (in_b[:, 0] >= 0) & (in_b[:, 0] <= camera.width - 1)
                     & (in_b[:, 1] >= 0) & (in_b[:, 1] <= camera.height - 1))
        mapped = np.c_[(in_b[:, 0] + 0.5) / sx - 0.5, (in_b[:, 1] + 0.5) / sy - 0.5]
        return mapped, valid

    image_a, image_b = gray(frame_a), gray(frame_b)
    return Pair(_photometric(image_a, rng), _photometric(image_b, rng), correspond,
                f"sequence:{os.path.basename(sequence.root)}:{index_a}-{index_b}")


class SceneSet:
    """Multi-view scenes (dl_perception/datasets/strecha.py) with their tracks: pairs of real
    views of the same 3D points. A pair is two crops at the training size, at one random
    resolution (0.5-1x) of both views: a random crop of view A and the crop of view B around
    the same tracks."""

    def __init__(self, folders: list[str], track_cache: str | None, log=print):
        self.scenes = []
        for folder in folders:
            views = read_scene(folder)
            name = os.path.basename(os.path.normpath(folder))
            path = os.path.join(track_cache, f"{name}.npz") if track_cache else None
            if path and os.path.isfile(path):
                tracks = Tracks.load(path)
            else:
                log(f"{name}: building tracks (SIFT matches, epipolar check, triangulation)")
                tracks = build_tracks(views, log=log)
                if path:
                    os.makedirs(track_cache, exist_ok=True)
                    tracks.save(path)
            self.scenes.append((name, views, tracks))
        self._images: dict[str, np.ndarray] = {}

    def image(self, path: str) -> np.ndarray:
        if path not in self._images:
            gray = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
            if gray is None:
                raise TrainingDataError(f"cannot read image {path}")
            self._images[path] = gray.astype(np.float32) / 255.0
        return self._images[path]

    def pair(self, rng: np.random.Generator, cfg: LIFTTrainConfig) -> Pair | None:
        name, views, tracks = self.scenes[rng.integers(len(self.scenes))]
        a = int(rng.integers(len(views)))
        b = int(np.clip(a + rng.choice([-1, 1]) * rng.integers(1, cfg.scene_max_gap + 1),
                        0, len(views) - 1))
        if a == b:
            return None
        index_a, index_b = tracks.pair(a, b)
        if len(index_a) < 16:
            return None
        width, height = cfg.image_size
        full_a, full_b = self.image(views[a].path), self.image(views[b].path)
        resolution = rng.uniform(max(width / full_a.shape[1], height / full_a.shape[0]), 1.0)

        def resample(image):
            size = (int(round(image.shape[1] * resolution)), int(round(image.shape[0] * resolution)))
            return cv2.resize(_blur_for(image, 1 / resolution), size, interpolation=cv2.INTER_AREA)
        small_a, small_b = resample(full_a), resample(full_b)
        xy_a = (tracks.xy[index_a] + 0.5) * resolution - 0.5
        xy_b = (tracks.xy[index_b] + 0.5) * resolution - 0.5

        def window(shape, centre):
            x0 = int(np.clip(round(centre[0] - width / 2), 0, shape[1] - width))
            y0 = int(np.clip(round(centre[1] - height / 2), 0, shape[0] - height))
            return x0, y0
        xa, ya = window(small_a.shape, rng.choice(xy_a))
        in_a = ((xy_a[:, 0] >= xa) & (xy_a[:, 0] < xa + width) & (xy_a[:, 1] >= ya)
                & (xy_a[:, 1] < ya + height))
        if in_a.sum() < 16:
            return None
        xb, yb = window(small_b.shape, np.median(xy_b[in_a], axis=0))
        points_a, points_b = xy_a - (xa, ya), xy_b - (xb, yb)
        sigma_a = tracks.sigma[index_a] * resolution
        sigma_b = tracks.sigma[index_b] * resolution
        margin = 4.0
        keep = (_inside(points_a, width, height, margin) & _inside(points_b, width, height, margin)
                & (sigma_a >= cfg.min_sigma) & (sigma_a <= cfg.max_sigma)
                & (sigma_b >= cfg.min_sigma * 0.5) & (sigma_b <= cfg.max_sigma * 2))
        keep = np.nonzero(keep)[0]
        if len(keep) < 16:
            return None
        keep = rng.permutation(keep)[: cfg.keypoints_per_pair]
        image_a = small_a[ya:ya + height, xa:xa + width]
        image_b = small_b[yb:yb + height, xb:xb + width]
        negatives, negative_sigma = non_feature_points(image_a, cfg, rng)
        rotation = tracks.angle[index_b] - tracks.angle[index_a]
        points = PairPoints(points_a[keep], sigma_a[keep], points_b[keep], sigma_b[keep],
                            rotation[keep], negatives, negative_sigma)
        return Pair(_photometric(image_a, rng), _photometric(image_b, rng), None,
                    f"scene:{name}:{views[a].name}-{views[b].name}", points)


def _inside(points: np.ndarray, width: int, height: int, margin: float) -> np.ndarray:
    return ((points[:, 0] > margin) & (points[:, 0] < width - 1 - margin)
            & (points[:, 1] > margin) & (points[:, 1] < height - 1 - margin))


class PairSource:
    """Random pairs from image folders (homographies), sequence folders (depth + poses) and
    multi-view scenes (tracks of real 3D points)."""

    def __init__(self, image_folders: list[str], sequence_folders: list[str],
                 cfg: LIFTTrainConfig, rng: np.random.Generator, scene_folders: list[str] = (),
                 track_cache: str | None = None, log=print):
        for folder in [*image_folders, *sequence_folders, *scene_folders]:
            if not os.path.isdir(folder):
                raise TrainingDataError(f"not a folder: {folder}")
            refuse_evaluation_worlds(folder)
            refuse_validation_data(folder)
        self.cfg, self.rng = cfg, rng
        width, height = cfg.image_size
        listed = list_images(image_folders, cfg.images_per_folder)
        self.images = []
        for path in listed:  # smaller than half the training size: too blurry once enlarged
            shape = cv2.imread(path, cv2.IMREAD_GRAYSCALE).shape
            if shape[0] >= height // 2 and shape[1] >= width // 2:
                self.images.append(path)
        if len(self.images) < len(listed):
            log(f"{len(listed) - len(self.images)} of {len(listed)} images are smaller than half "
                f"the training size ({width // 2}x{height // 2}) and are not used")
        if image_folders and not self.images:
            raise TrainingDataError(f"no usable images in {', '.join(image_folders)}")
        self.scenes = SceneSet(list(scene_folders), track_cache, log) if scene_folders else None
        self.sequences = []
        for folder in sequence_folders:
            sequence = read_sequence(folder)
            usable = [f.index for f in sequence.frames
                      if f.depth and np.isfinite(f.position).all()]
            if len(usable) < 2:
                raise TrainingDataError(f"{folder}: needs frames with depth and poses")
            self.sequences.append(sequence)
        if not self.images and not self.sequences and not self.scenes:
            raise TrainingDataError("give at least one image, sequence or scene folder")
        self._cache: dict[str, np.ndarray] = {}

    def _source_image(self, path: str) -> np.ndarray:
        if path not in self._cache:
            gray = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
            if gray is None:
                raise TrainingDataError(f"cannot read image {path}")
            width, height = self.cfg.image_size
            if gray.shape[0] < height // 2 or gray.shape[1] < width // 2:
                raise TrainingDataError(f"{path} is smaller than half the training size")
            self._cache[path] = gray.astype(np.float32) / 255.0
        return self._cache[path]

    def next_pair(self) -> Pair:
        if self.scenes and (not (self.images or self.sequences)
                            or self.rng.random() < self.cfg.scene_fraction):
            for _ in range(100):
                pair = self.scenes.pair(self.rng, self.cfg)
                if pair is not None:
                    return pair
            raise TrainingDataError("the scenes hold too few tracks seen in two views")
        use_sequence = self.sequences and (not self.images or
                                           self.rng.random() < self.cfg.sequence_fraction)
        if use_sequence:
            sequence = self.sequences[self.rng.integers(len(self.sequences))]
            count = len(sequence.frames)
            a = int(self.rng.integers(count))
            gap = int(self.rng.integers(1, self.cfg.sequence_max_gap + 1))
            b = int(np.clip(a + gap * self.rng.choice([-1, 1]), 0, count - 1))
            if a == b:
                b = a + 1 if a + 1 < count else a - 1
            return sequence_pair(sequence, a, b, self.cfg, self.rng)
        path = self.images[self.rng.integers(len(self.images))]
        return homography_pair(self._source_image(path), self.rng, self.cfg,
                               os.path.basename(path))


# ---------------------------------------------------------------------------------------------
# keypoints and their known correspondences

@dataclass
class PairPoints:
    points_a: np.ndarray  # N x 2
    sigma_a: np.ndarray
    points_b: np.ndarray
    sigma_b: np.ndarray
    rotation: np.ndarray  # angle of B's patch relative to A's (rad)
    negatives: np.ndarray  # M x 2 points of A far from any keypoint
    negative_sigma: np.ndarray


_SIFT = None


def _sift():
    global _SIFT
    if _SIFT is None:
        _SIFT = cv2.SIFT_create(contrastThreshold=0.02)
    return _SIFT


def local_similarity(correspond, points: np.ndarray, delta: np.ndarray):
    """Scale factor and rotation of the map at `points` (finite differences over +-delta)."""
    offsets = [np.c_[delta, 0 * delta], np.c_[0 * delta, delta]]
    mapped, valid = correspond(points)
    columns = []
    for offset in offsets:
        plus, valid_plus = correspond(points + offset)
        minus, valid_minus = correspond(points - offset)
        valid &= valid_plus & valid_minus
        columns.append((plus - minus) / (2 * delta[:, None]))
    jacobian = np.stack(columns, axis=2)  # N x 2 x 2, columns = d/dx, d/dy
    with np.errstate(invalid="ignore"):
        det = jacobian[:, 0, 0] * jacobian[:, 1, 1] - jacobian[:, 0, 1] * jacobian[:, 1, 0]
        scale = np.sqrt(np.abs(det))
        rotation = np.arctan2(jacobian[:, 1, 0] - jacobian[:, 0, 1],
                              jacobian[:, 0, 0] + jacobian[:, 1, 1])
    valid &= np.isfinite(scale) & (det > 0)
    return mapped, scale, rotation, valid


def pair_points(pair: Pair, cfg: LIFTTrainConfig, rng: np.random.Generator) -> PairPoints:
    height, width = pair.image_a.shape
    gray = np.clip(pair.image_a * 255.0, 0, 255).astype(np.uint8)
    detected = _sift().detect(gray, None)
    all_points = np.array([k.pt for k in detected], np.float64).reshape(-1, 2)
    sigmas = np.array([k.size / 2 for k in detected], np.float64)
    strength = np.array([k.response for k in detected], np.float64)
    margin = 4.0
    keep = ((sigmas >= cfg.min_sigma) & (sigmas <= cfg.max_sigma)
            & (all_points[:, 0] > margin) & (all_points[:, 0] < width - 1 - margin)
            & (all_points[:, 1] > margin) & (all_points[:, 1] < height - 1 - margin))
    points, sigmas, strength = all_points[keep], sigmas[keep], strength[keep]
    if len(points):
        points, unique = np.unique(np.round(points, 1), axis=0, return_index=True)
        sigmas, strength = sigmas[unique], strength[unique]
    mapped, scale, rotation, valid = local_similarity(pair.correspond, points,
                                                      np.maximum(sigmas, 2.0))
    sigma_b = sigmas * scale
    valid &= (sigma_b >= cfg.min_sigma * 0.5) & (sigma_b <= cfg.max_sigma * 2)
    order = np.argsort(-strength[valid])[: cfg.keypoints_per_pair]
    index = np.nonzero(valid)[0][order]
    negatives, negative_sigma = _far_from(all_points, width, height, cfg, rng)
    return PairPoints(points[index], sigmas[index], mapped[index], sigma_b[index],
                      rotation[index], negatives, negative_sigma)


def _far_from(responses: np.ndarray, width: int, height: int, cfg: LIFTTrainConfig,
              rng: np.random.Generator):
    """Non-features: random places well away from every SIFT response, random scales."""
    margin = 4.0
    candidates = rng.uniform([margin, margin], [width - 1 - margin, height - 1 - margin],
                             size=(4 * cfg.keypoints_per_pair, 2))
    if len(responses):
        distance = np.min(np.linalg.norm(candidates[:, None] - responses[None], axis=2), axis=1)
        candidates = candidates[distance > 2 * cfg.min_sigma + 4]
    negatives = candidates[: cfg.keypoints_per_pair]
    negative_sigma = np.exp(rng.uniform(math.log(cfg.min_sigma), math.log(cfg.max_sigma),
                                        len(negatives)))
    return negatives, negative_sigma


def non_feature_points(image: np.ndarray, cfg: LIFTTrainConfig, rng: np.random.Generator):
    gray = np.clip(image * 255.0, 0, 255).astype(np.uint8)
    responses = np.array([k.pt for k in _sift().detect(gray, None)], np.float64).reshape(-1, 2)
    return _far_from(responses, image.shape[1], image.shape[0], cfg, rng)


class PairBank:
    """Pairs held in memory as image pyramids plus their correspondences; batches draw random
    correspondences across pairs. A few pairs are replaced now and then for variety."""

    def __init__(self, source: PairSource, count: int, cfg: LIFTTrainConfig,
                 rng: np.random.Generator, device: torch.device, pyramid_levels: int):
        self.source, self.cfg, self.rng, self.device = source, cfg, rng, device
        self.pyramid_levels = pyramid_levels
        self.images_a: list[np.ndarray] = []
        self.images_b: list[np.ndarray] = []
        self.points: list[PairPoints] = []
        self.names: list[str] = []
        while len(self.points) < count:
            self._add(len(self.points))
        self._rebuild()

    def _add(self, slot: int) -> None:
        for _ in range(50):
            pair = self.source.next_pair()
            points = pair.points if pair.points is not None else pair_points(pair, self.cfg, self.rng)
            if len(points.points_a) >= 16 and len(points.negatives) >= 4:
                break
        else:
            raise TrainingDataError("could not find pairs with enough corresponding keypoints")
        if slot < len(self.points):
            self.images_a[slot], self.images_b[slot] = pair.image_a, pair.image_b
            self.points[slot], self.names[slot] = points, pair.source
        else:
            self.images_a.append(pair.image_a)
            self.images_b.append(pair.image_b)
            self.points.append(points)
            self.names.append(pair.source)

    def _rebuild(self) -> None:
        def pyramid(images):
            batch = torch.from_numpy(np.stack(images))[:, None].to(self.device)
            return image_pyramid(batch, self.pyramid_levels)
        self.pyramid_a = pyramid(self.images_a)
        self.pyramid_b = pyramid(self.images_b)
        self.counts = np.array([len(p.points_a) for p in self.points])
        self.negative_counts = np.array([len(p.negatives) for p in self.points])

    def refresh(self, how_many: int) -> None:
        for slot in self.rng.choice(len(self.points), size=how_many, replace=False):
            self._add(int(slot))
        self._rebuild()

    def sample(self, count: int, rng: np.random.Generator | None = None) -> dict:
        """`count` random correspondences, plus one other keypoint of A and one non-feature
        point of A per sample (for the detector's quadruplets)."""
        rng = rng or self.rng
        pairs = rng.integers(len(self.points), size=count)
        index = (rng.random(count) * self.counts[pairs]).astype(int)
        other = (rng.random(count) * self.counts[pairs]).astype(int)
        negative = (rng.random(count) * self.negative_counts[pairs]).astype(int)

        def gather(name, which):
            return np.array([getattr(self.points[p], name)[i] for p, i in zip(pairs, which)])
        batch = {
            "pair": pairs,
            "point_a": gather("points_a", index), "sigma_a": gather("sigma_a", index),
            "point_b": gather("points_b", index), "sigma_b": gather("sigma_b", index),
            "rotation": gather("rotation", index),
            "other_a": gather("points_a", other), "other_sigma": gather("sigma_a", other),
            "negative_a": gather("negatives", negative),
            "negative_sigma": gather("negative_sigma", negative),
        }
        out = {k: torch.as_tensor(v, dtype=torch.long if k == "pair" else torch.float32,
                                  device=self.device) for k, v in batch.items()}
        return out


# ---------------------------------------------------------------------------------------------
# losses

def descriptor_loss(anchor: torch.Tensor, positive: torch.Tensor, margin: float,
                    same: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Each corresponding pair at least `margin` closer than the hardest non-corresponding
    descriptor of the batch for its anchor or its positive (hard negative mining as in LIFT /
    Simo-Serra et al., in the triplet form of HardNet, Mishchuk et al. 2017, which learns more
    from a batch than separate positive and negative hinges). `same` marks pairs of rows that
    must not serve as negatives (the same physical point)."""
    distance = torch.cdist(anchor, positive)
    positive_distance = distance.diagonal()
    blocked = torch.eye(len(anchor), dtype=torch.bool, device=anchor.device)
    if same is not None:
        blocked = blocked | same
    masked = distance.masked_fill(blocked, float("inf"))
    hardest = torch.minimum(masked.min(dim=1).values, masked.min(dim=0).values)
    hardest = torch.where(torch.isfinite(hardest), hardest, torch.full_like(hardest, margin))
    loss = F.relu(margin + positive_distance - hardest).mean()
    return loss, {"positive": positive_distance.mean().item(), "negative": hardest.mean().item()}


def overlap_loss(p1: torch.Tensor, p2: torch.Tensor, half_side: float) -> torch.Tensor:
    """1 - intersection over union of two squares (half side `half_side`) centred at the keypoints
    found in the two views (one frame), plus a gap term when they do not overlap at all."""
    delta = (p1 - p2).abs()
    side = 2 * half_side
    overlap = F.relu(side - delta)
    intersection = overlap[:, 0] * overlap[:, 1]
    union = 2 * side * side - intersection
    gap = F.relu(delta - side).sum(dim=1)
    return (1 - intersection / union + gap / math.sqrt(2 * side * side)).mean()


def classification_loss(positive_scores: list[torch.Tensor],
                        negative_scores: torch.Tensor) -> torch.Tensor:
    """Squared hinge: feature patches should score >= 1, non-feature patches <= -1; positives and
    negatives weigh the same in total."""
    positive = sum(F.relu(1 - s) ** 2 for s in positive_scores) / len(positive_scores)
    negative = F.relu(1 + negative_scores) ** 2
    return (positive.mean() + negative.mean()) / 2


# ---------------------------------------------------------------------------------------------
# the three stages

def _rotate(vectors: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([cos * vectors[:, 0] - sin * vectors[:, 1],
                        sin * vectors[:, 0] + cos * vectors[:, 1]], dim=1)


def _same_point(batch: dict) -> torch.Tensor:
    """Rows whose A points are within 4 px in the same pair (not valid negatives)."""
    same_pair = batch["pair"][:, None] == batch["pair"][None, :]
    near = torch.cdist(batch["point_a"], batch["point_a"]) < 4.0
    return same_pair & near


def descriptor_step(model: LIFT, bank: PairBank, batch: dict, cfg: LIFTTrainConfig,
                    rng: torch.Generator | None = None):
    n = len(batch["pair"])
    device = batch["sigma_a"].device
    # the imprecision of run-time keypoints: scale quantised to the pyramid's sqrt(2) steps,
    # position to about a pixel of the level, orientation to a few degrees
    sigma_b = batch["sigma_b"] * 2.0 ** ((torch.rand(n, generator=rng, device=device) - 0.5) / 2)
    point_b = batch["point_b"] + 0.1 * sigma_b[:, None] * torch.randn(
        n, 2, generator=rng, device=device)
    if cfg.descriptor_orientation == "learned":  # as at run time
        with torch.no_grad():
            base = model.orient(bank.pyramid_a, batch["point_a"], batch["sigma_a"], batch["pair"])
            angle_b = model.orient(bank.pyramid_b, point_b, sigma_b, batch["pair"])
    elif cfg.descriptor_orientation == "known":
        base = (torch.rand(n, generator=rng, device=device) * 2 - 1) * math.pi
        angle_b = base + batch["rotation"] + 0.1 * torch.randn(n, generator=rng, device=device)
    else:
        raise ValueError(f"descriptor_orientation is 'known' or 'learned', got "
                         f"'{cfg.descriptor_orientation}'")
    anchor = model.describe(bank.pyramid_a, batch["point_a"], batch["sigma_a"], base,
                            batch["pair"])
    positive = model.describe(bank.pyramid_b, point_b, sigma_b, angle_b, batch["pair"])
    return descriptor_loss(anchor, positive, cfg.margin, _same_point(batch))


def orientation_step(model: LIFT, bank: PairBank, batch: dict, cfg: LIFTTrainConfig):
    angle_a = model.orient(bank.pyramid_a, batch["point_a"], batch["sigma_a"], batch["pair"])
    angle_b = model.orient(bank.pyramid_b, batch["point_b"], batch["sigma_b"], batch["pair"])
    anchor = model.describe(bank.pyramid_a, batch["point_a"], batch["sigma_a"], angle_a,
                            batch["pair"])
    positive = model.describe(bank.pyramid_b, batch["point_b"], batch["sigma_b"], angle_b,
                              batch["pair"])
    distance = (anchor - positive).norm(dim=1)
    error = torch.remainder(angle_b - angle_a - batch["rotation"] + math.pi, 2 * math.pi) - math.pi
    return distance.mean(), {"distance": distance.mean().item(),
                             "angle_error_deg": math.degrees(error.abs().mean().item())}


def detector_step(model: LIFT, bank: PairBank, batch: dict, cfg: LIFTTrainConfig,
                  rng: torch.Generator | None = None):
    """Quadruplet step: returns the detector loss and its terms."""
    config = model.config
    n = len(batch["pair"])
    device = batch["sigma_a"].device
    size = model.detector_patch
    support = size / config.detector_sigma  # detector patch side in sigmas
    half = (config.detector_search - 1) / 2

    def shifted(points, sigma, angle, offset):
        """Patch centre for a patch whose keypoint sits at -offset (detector-frame pixels)."""
        step = (sigma / config.detector_sigma)[:, None]
        return points + _rotate(offset, angle) * step

    def offsets():
        return (torch.rand(n, 2, generator=rng, device=device) * 2 - 1) * cfg.detector_offset

    def locate(pyramid, centres, sigma, angle):
        patches = sample_patches(pyramid, centres, sigma, angle, size, support, batch["pair"])
        scores = model.detector(patches)
        position, score = soft_argmax(scores, config.softargmax_strength)
        return position - half, score

    zero = torch.zeros(n, device=device)
    offset_1, offset_2, offset_3, offset_4 = offsets(), offsets(), offsets(), offsets()
    # upright crops in both images, as at run time; B's frame differs by the known rotation
    centre_1 = shifted(batch["point_a"], batch["sigma_a"], zero, offset_1)
    centre_2 = shifted(batch["point_b"], batch["sigma_b"], zero, offset_2)
    found_1, score_1 = locate(bank.pyramid_a, centre_1, batch["sigma_a"], zero)
    found_2, score_2 = locate(bank.pyramid_b, centre_2, batch["sigma_b"], zero)
    _, score_3 = locate(bank.pyramid_a, shifted(batch["other_a"], batch["other_sigma"], zero,
                                                offset_3), batch["other_sigma"], zero)
    _, score_4 = locate(bank.pyramid_a, shifted(batch["negative_a"], batch["negative_sigma"],
                                                zero, offset_4), batch["negative_sigma"], zero)
    # keypoint positions relative to the true point, both in A's canonical frame
    relative_1 = found_1 + offset_1
    relative_2 = _rotate(found_2 + offset_2, -batch["rotation"])
    overlap = overlap_loss(relative_1, relative_2, 2 * config.detector_sigma)
    classification = classification_loss([score_1, score_2, score_3], score_4)
    loss = cfg.alpha_classification * classification + cfg.alpha_overlap * overlap
    pair = torch.zeros(())
    if cfg.alpha_pair > 0:  # end to end: describe the patches at the detected keypoints
        point_1 = centre_1 + found_1 * (batch["sigma_a"] / config.detector_sigma)[:, None]
        point_2 = centre_2 + found_2 * (batch["sigma_b"] / config.detector_sigma)[:, None]
        angle_1 = model.orient(bank.pyramid_a, point_1, batch["sigma_a"], batch["pair"])
        angle_2 = model.orient(bank.pyramid_b, point_2, batch["sigma_b"], batch["pair"])
        d1 = model.describe(bank.pyramid_a, point_1, batch["sigma_a"], angle_1, batch["pair"])
        d2 = model.describe(bank.pyramid_b, point_2, batch["sigma_b"], angle_2, batch["pair"])
        pair = (d1 - d2).norm(dim=1).mean()
        loss = loss + cfg.alpha_pair * pair
    disagreement = (relative_1 - relative_2).norm(dim=1).mean().item()
    return loss, {"classification": classification.item(), "overlap": overlap.item(),
                  "pair": pair.item(), "disagreement_px": disagreement,
                  "positive_score": score_1.mean().item(), "negative_score": score_4.mean().item()}


# ---------------------------------------------------------------------------------------------
# covariance: dense agreement of the score maps of two views (localisation)

def covariance_pair(gray: np.ndarray, rng: np.random.Generator, cfg: LIFTTrainConfig):
    """A random crop of a photograph (float, 0-1) at a random resolution and its image under a
    random homography about the crop's centre (rotation, zoom, a little perspective and shift,
    a photometric change), or None when the photograph is too small."""
    size = cfg.covariance_crop
    shrink = rng.uniform(0.4, 1.0)
    image = cv2.resize(gray, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    if min(image.shape) <= size:
        return None
    y, x = rng.integers(0, image.shape[0] - size), rng.integers(0, image.shape[1] - size)
    a = np.ascontiguousarray(image[y:y + size, x:x + size])
    angle = math.radians(rng.uniform(-1, 1) * cfg.covariance_max_rotation_deg)
    zoom = math.exp(rng.uniform(-1, 1) * math.log(cfg.covariance_max_zoom))
    cos, sin = zoom * math.cos(angle), zoom * math.sin(angle)
    local = np.array([[cos, -sin, rng.uniform(-6, 6)], [sin, cos, rng.uniform(-6, 6)],
                      [rng.normal(0, 3e-4), rng.normal(0, 3e-4), 1.0]])
    centre = (size - 1) / 2
    H = _centred(local, centre, centre)
    b = cv2.warpPerspective(a, H, (size, size), flags=cv2.INTER_LINEAR)
    b = np.clip(b * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1), 0, 1).astype(np.float32)
    return a.astype(np.float32), b, H


def warp_score_map(score_b: torch.Tensor, H: np.ndarray, margin: int):
    """B's score map (1x1xSxS) resampled at H(p) for every pixel p of A, and where that is
    meaningful (both positions at least `margin` from the border: the padding's influence)."""
    size = score_b.shape[-1]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    mapped = apply_homography(H, np.stack([xs.ravel(), ys.ravel()], axis=1))
    mx, my = mapped[:, 0].reshape(size, size), mapped[:, 1].reshape(size, size)
    grid = torch.from_numpy(np.stack([2 * mx / (size - 1) - 1, 2 * my / (size - 1) - 1], -1))
    warped = F.grid_sample(score_b, grid.to(score_b)[None], align_corners=True)
    low, high = margin, size - 1 - margin
    valid = (mx >= low) & (mx <= high) & (my >= low) & (my <= high) & \
        (xs >= low) & (xs <= high) & (ys >= low) & (ys <= high)
    return warped, torch.from_numpy(valid).to(score_b)[None, None]


def covariance_loss(score_a: torch.Tensor, score_b_in_a: torch.Tensor, valid: torch.Tensor,
                    window: int, strength: float):
    """1 - cosine similarity of the soft-max distributions (LIFT's soft-argmax weights) of the
    two maps over windows (half overlapping) that lie wholly in the valid area; None if none."""
    def windows(x):
        return F.unfold(x, window, stride=window // 2)[0].T
    inside = windows(valid).min(dim=1).values > 0.5
    if not inside.any():
        return None
    p_a = torch.softmax(strength * windows(score_a)[inside], dim=1)
    p_b = torch.softmax(strength * windows(score_b_in_a)[inside], dim=1)
    return (1 - F.cosine_similarity(p_a, p_b, dim=1)).mean()


def covariance_step_function(source: "PairSource", reference: LIFT):
    """The covariance stage's step (the pair bank's patches are not used): per photograph pair,
    the covariance loss plus `covariance_anchor` x the relative squared change of A's score map
    from the reference detector's (keeps what the detector responds to, and its ranking)."""
    if not source.images:
        raise TrainingDataError("the covariance stage needs --images (real photographs)")

    def step(model: LIFT, bank: PairBank, batch: dict, cfg: LIFTTrainConfig):
        device = next(model.parameters()).device
        margin = model.config.detector_filter // 2
        covariance, anchor, used = 0.0, 0.0, 0
        while used < cfg.covariance_batch:
            path = source.images[int(source.rng.integers(len(source.images)))]
            pair = covariance_pair(source._source_image(path), source.rng, cfg)
            if pair is None:
                continue
            a, b = (torch.from_numpy(image)[None, None].to(device) for image in pair[:2])
            H = pair[2]
            score_a, score_b = model.score_map(a), model.score_map(b)
            warped, valid = warp_score_map(score_b, H, margin)
            term = covariance_loss(score_a, warped, valid, cfg.covariance_window,
                                   model.config.softargmax_strength)
            if term is None:
                continue
            with torch.no_grad():
                before = reference.score_map(a)
            covariance = covariance + term
            anchor = anchor + ((score_a - before) ** 2).mean() / (before ** 2).mean().clamp(min=1e-8)
            used += 1
        covariance, anchor = covariance / used, anchor / used
        loss = covariance + cfg.covariance_anchor * anchor
        return loss, {"covariance": covariance.item(), "anchor": anchor.item()}
    return step


def keypoint_rate_threshold(reference: LIFT, model: LIFT, images: list[np.ndarray]) -> float:
    """The score threshold at which `model` finds as many keypoints on `images` (grey, 0-1) as
    `reference` does at its own threshold, with no budget: a detector fine-tuned by the
    covariance stage shifts its scores, and the threshold keeps its keypoint rate."""
    wanted, scores = 0, []
    with torch.inference_mode():
        for gray in images:
            image = torch.from_numpy(gray)[None, None].to(next(model.parameters()).device)
            wanted += len(reference.detect(image, reference.default_settings(
                max_keypoints=10**7))[2])
            scores.append(model.detect(image, model.default_settings(
                max_keypoints=10**7, score_threshold=-1e6))[2].cpu().numpy())
    ranked = np.sort(np.concatenate(scores))[::-1]
    if wanted == 0 or len(ranked) == 0:
        return model.config.score_threshold
    if wanted >= len(ranked):
        return float(ranked[-1]) - 1e-3
    return float(ranked[wanted - 1] + ranked[wanted]) / 2  # keypoints are scores above it


# ---------------------------------------------------------------------------------------------
# validation and the driver

def validate(model: LIFT, bank: PairBank, cfg: LIFTTrainConfig, samples: int = 512) -> dict:
    """Descriptor nearest-neighbour accuracy on held-out pairs, with upright patches oriented by
    the model (as at run time) and with the known rotation, plus the detector's agreement."""
    model.eval()
    with torch.no_grad():
        batch = bank.sample(samples, np.random.default_rng(12345))
        metrics = {}
        for mode in ("known_rotation", "learned_orientation"):
            if mode == "known_rotation":
                angle_a = torch.zeros_like(batch["sigma_a"])
                angle_b = batch["rotation"]
            else:
                angle_a = model.orient(bank.pyramid_a, batch["point_a"], batch["sigma_a"],
                                       batch["pair"])
                angle_b = model.orient(bank.pyramid_b, batch["point_b"], batch["sigma_b"],
                                       batch["pair"])
            d1 = model.describe(bank.pyramid_a, batch["point_a"], batch["sigma_a"], angle_a,
                                batch["pair"])
            d2 = model.describe(bank.pyramid_b, batch["point_b"], batch["sigma_b"], angle_b,
                                batch["pair"])
            distance = torch.cdist(d1, d2).masked_fill(_same_point(batch) & ~torch.eye(
                len(d1), dtype=torch.bool), float("inf"))
            metrics[f"nn_accuracy_{mode}"] = float(
                (distance.argmin(dim=1) == torch.arange(len(d1))).float().mean())
        _, terms = detector_step(model, bank, batch, cfg, torch.Generator().manual_seed(0))
        metrics["detector_disagreement_px"] = terms["disagreement_px"]
        metrics["detector_score_gap"] = terms["positive_score"] - terms["negative_score"]
    return metrics


def _train_stage(name: str, steps: int, module: torch.nn.Module, step_fn, model: LIFT,
                 bank: PairBank, val_bank: PairBank, cfg: LIFTTrainConfig, log, out_path: str,
                 resume: bool, learning_rate: float | None = None) -> dict:
    """Train one network with the others fixed. Every `validate_every` steps is a chunk: the
    validation metrics go to <out>.<stage>.history.csv and the state to resume from to
    <out>.<stage>.resume.pt (TrainingRun), so an interrupted run goes on with --resume."""
    if steps <= 0:
        return {}
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in module.parameters():
        parameter.requires_grad_(True)
    learning_rate = learning_rate or cfg.learning_rate
    optimizer = torch.optim.Adam(module.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, learning_rate / 20)
    run = TrainingRun(f"{out_path}.{name}", resume=resume)
    chunk = max(1, min(cfg.validate_every, steps))
    chunks = math.ceil(steps / chunk)
    finished = run.restore(model, optimizer, scheduler, bank.rng)
    if finished:
        log(f"{name}: resuming after step {min(finished * chunk, steps)}")
    started, running = time.time(), {}
    metrics = dict(run.rows[-1]) if run.rows else {}
    with progress(total=steps, desc=name, unit="step") as bar:
        bar.update(min(finished * chunk, steps))
        for index in range(finished, chunks):
            for step in range(index * chunk + 1, min((index + 1) * chunk, steps) + 1):
                model.train()
                batch = bank.sample(cfg.batch_size)
                loss, terms = step_fn(model, bank, batch, cfg)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{name} loss is not finite at step {step}: {terms}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(module.parameters(), 5.0)
                optimizer.step()
                scheduler.step()
                for key, value in {"loss": loss.item(), **terms}.items():
                    running[key] = 0.95 * running.get(key, value) + 0.05 * value
                if step % cfg.refresh_every == 0:
                    bank.refresh(max(1, len(bank.points) // 8))
                bar.update(1)
            metrics = validate(model, val_bank, cfg)
            log(f"{name} {step}/{steps} " + " ".join(f"{k} {v:.3f}" for k, v in running.items())
                + " | val " + " ".join(f"{k} {v:.3f}" for k, v in metrics.items())
                + f" ({time.time() - started:.0f} s)")
            run.end_epoch(index + 1, {**{f"train_{k}": v for k, v in running.items()},
                                      **{f"val_{k}": v for k, v in metrics.items()}},
                          model, optimizer, scheduler, bank.rng)
    run.finish()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return {"steps": steps, "train": running, "validation": metrics}


STAGES = ("descriptor", "orientation", "detector", "covariance")


def train_lift(image_folders: list[str], sequence_folders: list[str], out_path: str,
               cfg: LIFTTrainConfig, device: torch.device, init_weights: str | None = None,
               stages: tuple[str, ...] = STAGES, log=print, scene_folders: list[str] = (),
               track_cache: str | None = None, resume: bool = False) -> LIFT:
    seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = LIFT.from_checkpoint(init_weights) if init_weights else LIFT(LIFT.make_config(cfg.preset))
    model.to(device)
    # pyramid deep enough for the largest patches the stages crop
    largest = max(model.config.support * cfg.max_sigma * 2 / model.config.patch_size,
                  model.detector_patch / model.config.detector_sigma * cfg.max_sigma * 2
                  / model.detector_patch)
    levels = int(math.floor(math.log2(max(largest, 1.0)))) + 1
    source = PairSource(image_folders, sequence_folders, cfg, rng, scene_folders, track_cache, log)
    log(f"lift ({cfg.preset}): {len(source.images)} images, {len(source.sequences)} sequences, "
        f"{len(scene_folders)} multi-view scenes, device {device}; building "
        f"{cfg.pairs_in_memory} training and {cfg.validation_pairs} validation pairs")
    val_bank = PairBank(source, cfg.validation_pairs, cfg, np.random.default_rng(cfg.seed + 1),
                        device, levels)
    bank = PairBank(source, cfg.pairs_in_memory, cfg, rng, device, levels)
    report = {}
    plan = {"descriptor": (cfg.descriptor_steps, model.descriptor, descriptor_step),
            "orientation": (cfg.orientation_steps, model.orientation, orientation_step),
            "detector": (cfg.detector_steps, model.detector, detector_step)}
    if "covariance" in stages and cfg.covariance_steps > 0:
        reference = copy.deepcopy(model).eval()
        plan["covariance"] = (cfg.covariance_steps, model.detector,
                              covariance_step_function(source, reference))
    for stage in STAGES:
        if stage in stages and stage in plan:
            steps, module, step_fn = plan[stage]
            report[stage] = _train_stage(
                stage, steps, module, step_fn, model, bank, val_bank, cfg, log, out_path, resume,
                cfg.covariance_learning_rate if stage == "covariance" else None)
            if stage == "covariance":
                model.eval()
                photos = [source._source_image(p) for p in source.images[::max(
                    1, len(source.images) // 24)]][:24]
                model.config.score_threshold = keypoint_rate_threshold(reference, model, photos)
                log(f"covariance: score threshold {model.config.score_threshold:.3f} keeps the "
                    f"initial detector's keypoint rate on {len(photos)} training photographs")
            # saved after every stage, so a later run can go on from here (--init, --stages)
            model.eval()
            model.save(out_path, info={"trained_on": {"images": image_folders,
                                                      "sequences": sequence_folders,
                                                      "scenes": list(scene_folders)},
                                       "train_config": asdict(cfg), "stages": report,
                                       "init": init_weights or ""})
            log(f"wrote {out_path} after the {stage} stage")
    return LIFT.from_checkpoint(out_path)
