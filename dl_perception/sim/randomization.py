"""Domain randomisation for recorded training data (`dl-perception sim record --randomize`).

Networks trained on the simulator's clean city see one camera, one light and procedural
textures; real cameras differ in all of these. A randomised recording draws, from one seed:

- surfaces: a fraction of the walls, boxes and trunks, and sometimes the ground, show crops of
  real photographs (`photo_pool`: the training-side image folders of the shared data) instead of
  procedural textures;
- clutter: extra objects of other shapes (spheres/ellipsoids, cylinders, boxes of many sizes)
  along the street sides, obstacles like any other (the expert flies around them);
- lighting and sky: sun direction, elevation and colour, ambient level, sky colours, fog;
- the camera: horizontal field of view (intrinsics), flying height, pitch;
- the image: exposure (gain, gamma, white balance) per recording with per-frame flicker,
  Gaussian or motion blur, sensor noise, and grey cameras (the three channels equal, as a
  grey camera's image decodes to rgb8).

Depth, poses and labels stay exact: only what the camera sees changes. Without `--randomize`
nothing here runs, so recordings, worlds and closed-loop numbers are unchanged.
"""
from __future__ import annotations

import glob
import math
import os
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from .world import Obstacle, World, WorldError

# shared-data folders whose images may become textures: training-side sets only (the depth,
# DroNet and place-recognition validation sets stay out of every training input)
PHOTO_FOLDERS = ("strecha_mvs", "tum_fr3_long_office", "homography", "churchill_homography",
                 "udacity_hmb3")
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm")


def photo_pool(root: str | None = None, per_folder: int = 200) -> list[str]:
    """Real photographs for textures: up to `per_folder` images (evenly spaced in name order) of
    each PHOTO_FOLDERS folder under the shared data."""
    from ..core.paths import shared_data_dir

    root = root or shared_data_dir()
    pool = []
    for folder in PHOTO_FOLDERS:
        files = sorted(path for path in glob.glob(os.path.join(root, folder, "**", "*"),
                                                  recursive=True)
                       if path.lower().endswith(PHOTO_EXTENSIONS))
        step = max(1, len(files) // per_folder)
        pool.extend(files[::step][:per_folder])
    return pool


def photo_crop(rgb: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of the photo (from a fifth of it to all of it, either way up or mirrored)
    resized to width x height, with a random tint."""
    h, w = rgb.shape[:2]
    aspect = width / height
    crop_w = max(8, int(min(w, h * aspect) * rng.uniform(0.2, 1.0)))
    crop_h = max(8, min(h, int(round(crop_w / aspect))))
    x0 = int(rng.integers(0, max(1, w - crop_w + 1)))
    y0 = int(rng.integers(0, max(1, h - crop_h + 1)))
    crop = rgb[y0:y0 + crop_h, x0:x0 + crop_w]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.2:
        crop = crop[::-1]
    crop = cv2.resize(np.ascontiguousarray(crop), (width, height),
                      interpolation=cv2.INTER_AREA if crop.shape[1] > width else cv2.INTER_LINEAR)
    tint = rng.uniform(0.75, 1.25, 3).astype(np.float32)
    return np.clip(crop.astype(np.float32) * tint, 0, 255).astype(np.uint8)


def photo_texture(path: str, width: int, height: int, seed: int) -> np.ndarray:
    """RGB uint8 width x height from one photograph: side by side crops, each about as wide as
    1-2 times the texture's height (a long facade shows several, none stretched flat)."""
    rng = np.random.default_rng(seed)
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise WorldError(f"cannot read texture photo {path}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    tiles = max(1, int(round(width / (height * rng.uniform(1.0, 2.0)))))
    edges = np.linspace(0, width, tiles + 1).astype(int)
    return np.concatenate([photo_crop(rgb, int(right - left), height, rng)
                           for left, right in zip(edges[:-1], edges[1:])], axis=1)


def photo_mosaic(paths: list[str], pixels: int, cells: int, seed: int) -> np.ndarray:
    """A square ground image of cells x cells photo crops."""
    rng = np.random.default_rng(seed)
    size = pixels // cells
    image = np.zeros((size * cells, size * cells, 3), np.uint8)
    for row in range(cells):
        for col in range(cells):
            path = paths[int(rng.integers(len(paths)))]
            image[row * size:(row + 1) * size, col * size:(col + 1) * size] = photo_texture(
                path, size, size, int(rng.integers(2**31)))
    return cv2.resize(image, (pixels, pixels), interpolation=cv2.INTER_LINEAR)


@dataclass
class RandomizationRanges:
    """What `--randomize` draws from (uniform in each range unless said otherwise)."""
    photo_fraction: tuple[float, float] = (0.3, 0.9)  # of the surfaces showing a photograph
    photo_ground_probability: float = 0.4
    clutter_per_100m2: tuple[float, float] = (0.5, 3.0)  # extra objects per 100 m^2 of world
    clutter_size: tuple[float, float] = (0.15, 1.6)  # m
    hfov_deg: tuple[float, float] = (50.0, 100.0)
    altitude: tuple[float, float] = (0.4, 3.5)  # m
    pitch_deg: tuple[float, float] = (-10.0, 40.0)  # + looks down
    sun_elevation_deg: tuple[float, float] = (5.0, 85.0)
    sun_level: tuple[float, float] = (0.3, 1.0)
    ambient_level: tuple[float, float] = (0.1, 0.6)
    fog_probability: float = 0.2
    gain: tuple[float, float] = (0.6, 1.5)  # exposure
    gamma: tuple[float, float] = (0.7, 1.4)
    white_balance: float = 0.15  # channel factors in [1 - w, 1 + w]
    flicker: float = 0.08  # per-frame gain jitter
    blur_probability: float = 0.5  # per frame
    blur_sigma: tuple[float, float] = (0.3, 1.5)  # px (Gaussian) or half-length (motion)
    noise_sigma: tuple[float, float] = (0.0, 6.0)  # grey levels
    grey_probability: float = 0.3


@dataclass
class Randomization:
    """One recording's draw (written into its meta.json)."""
    seed: int
    photo_fraction: float
    photo_ground: bool
    clutter: int
    hfov_deg: float
    altitude: float
    pitch_deg: float
    sun_direction: tuple[float, float, float]
    sun_diffuse: tuple[float, float, float]
    ambient: tuple[float, float, float]
    sky_top: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    fog: tuple[float, float, float] | None
    gain: float
    gamma: float
    white_balance: tuple[float, float, float]
    noise_sigma: float
    grey: bool
    ranges: RandomizationRanges = field(default_factory=RandomizationRanges)

    def as_meta(self) -> dict:
        meta = asdict(self)
        meta.pop("ranges")
        return meta


def draw_randomization(seed: int, world_size: float,
                       ranges: RandomizationRanges | None = None) -> Randomization:
    ranges = ranges or RandomizationRanges()
    rng = np.random.default_rng((seed, 2024))

    def uniform(bounds):
        return float(rng.uniform(*bounds))

    azimuth = rng.uniform(0, 2 * math.pi)
    elevation = math.radians(uniform(ranges.sun_elevation_deg))
    warmth = rng.uniform(0.0, 0.4) if elevation < math.radians(20) else rng.uniform(0.0, 0.1)
    sun = uniform(ranges.sun_level) * np.array([1.0, 1.0 - 0.5 * warmth, 1.0 - warmth])
    ambient = uniform(ranges.ambient_level) * rng.uniform(0.85, 1.0, 3)
    sky_top = rng.uniform(0.1, 0.95, 3)
    sky_horizon = np.clip(sky_top + rng.uniform(-0.2, 0.5, 3), 0, 1)
    fog = tuple(float(c) for c in rng.uniform(0.3, 0.9, 3)) \
        if rng.random() < ranges.fog_probability else None
    area = world_size * world_size
    return Randomization(
        seed=int(seed),
        photo_fraction=uniform(ranges.photo_fraction),
        photo_ground=bool(rng.random() < ranges.photo_ground_probability),
        clutter=int(round(uniform(ranges.clutter_per_100m2) * area / 100.0)),
        hfov_deg=uniform(ranges.hfov_deg), altitude=uniform(ranges.altitude),
        pitch_deg=uniform(ranges.pitch_deg),
        sun_direction=(-math.cos(elevation) * math.cos(azimuth),
                       -math.cos(elevation) * math.sin(azimuth), -math.sin(elevation)),
        sun_diffuse=tuple(float(c) for c in sun), ambient=tuple(float(c) for c in ambient),
        sky_top=tuple(float(c) for c in sky_top),
        sky_horizon=tuple(float(c) for c in sky_horizon), fog=fog,
        gain=uniform(ranges.gain), gamma=uniform(ranges.gamma),
        white_balance=tuple(float(c) for c in rng.uniform(1 - ranges.white_balance,
                                                          1 + ranges.white_balance, 3)),
        noise_sigma=uniform(ranges.noise_sigma),
        grey=bool(rng.random() < ranges.grey_probability), ranges=ranges)


def add_clutter(world: World, randomization: Randomization) -> None:
    """Extra obstacles of several shapes in the streets, off the centre line (the drone flies
    there) and keeping 3 m from the world's own street obstacles and each other, so every street
    stays passable."""
    rng = np.random.default_rng((randomization.seed, 77))
    low, high = randomization.ranges.clutter_size
    textures = ("concrete", "crate", "container", "brick", "bark", "foliage")
    placed = []
    for _ in range(randomization.clutter * 20):
        if len(placed) >= randomization.clutter:
            break
        along_x = rng.random() < 0.5  # a street running along x (centre at some y) or along y
        centres, widths = (world.street_y, world.width_y) if along_x else             (world.street_x, world.width_x)
        street = int(rng.integers(len(centres)))
        size = float(np.exp(rng.uniform(math.log(low), math.log(high))))
        nearest, farthest = 1.0 + size / 2, widths[street] / 2 - size / 2
        if farthest < nearest:
            continue
        across = centres[street] + (1 if rng.random() < 0.5 else -1) * rng.uniform(nearest,
                                                                                   farthest)
        along = rng.uniform(-world.size / 2 + 2, world.size / 2 - 2)
        crossing, crossing_widths = (world.street_x, world.width_x) if along_x else \
            (world.street_y, world.width_y)
        if np.any(np.abs(crossing - along) < crossing_widths / 2 + size / 2):
            continue  # not inside a crossing street (its own centre line is the drone's too)
        x, y = (along, across) if along_x else (across, along)
        neighbours = [o for o in world.obstacles if o.kind not in ("building", "wall")]
        if any(math.hypot(x - o.x, y - o.y) < size / 2 + o.footprint_radius() + 3.0
               for o in neighbours):
            continue
        shape = ("ellipsoid", "cylinder", "box")[int(rng.integers(3))]
        height = size * rng.uniform(0.5, 2.0)
        dims = {"ellipsoid": (size / 2, size / 2, height / 2),
                "cylinder": (size / 2, size / 2, height),
                "box": (size * rng.uniform(0.5, 1.0), size * rng.uniform(0.5, 1.0), height)}[shape]
        obstacle = Obstacle("clutter", shape, float(x), float(y), tuple(float(d) for d in dims),
                            float(rng.uniform(0, math.pi)),
                            texture=textures[int(rng.integers(len(textures)))],
                            texture_seed=int(rng.integers(2**31)))
        world.obstacles.append(obstacle)
        placed.append(obstacle)


class ImageRandomizer:
    """Per-frame camera effects of one randomised recording (RGB uint8 in, RGB uint8 out)."""

    def __init__(self, randomization: Randomization):
        self.r = randomization
        self.rng = np.random.default_rng((randomization.seed, 99))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        r, rng, ranges = self.r, self.rng, self.r.ranges
        image = rgb.astype(np.float32) / 255.0
        gain = r.gain * (1.0 + rng.uniform(-ranges.flicker, ranges.flicker))
        image = np.clip(image * gain * np.asarray(r.white_balance, np.float32), 0, 1) ** r.gamma
        if rng.random() < ranges.blur_probability:
            sigma = rng.uniform(*ranges.blur_sigma)
            if rng.random() < 0.5:
                image = cv2.GaussianBlur(image, (0, 0), sigma)
            else:  # motion blur along a random direction
                length = max(2, int(round(2 * sigma)) + 1)
                kernel = np.zeros((length, length), np.float32)
                kernel[length // 2] = 1.0 / length
                rotation = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5),
                                                   float(rng.uniform(0, 180)), 1.0)
                kernel = cv2.warpAffine(kernel, rotation, (length, length))
                image = cv2.filter2D(image, -1, kernel / max(float(kernel.sum()), 1e-6))
        image = image * 255.0
        if r.grey:  # a grey sensor: one channel, its noise shared by the three decoded ones
            image = np.repeat((image @ np.array([0.299, 0.587, 0.114], np.float32))[..., None],
                              3, axis=2)
        if r.noise_sigma > 0:
            shape = image.shape[:2] + ((1,) if r.grey else (3,))
            image = image + rng.normal(0.0, r.noise_sigma, shape).astype(np.float32)
        return np.clip(image + 0.5, 0, 255).astype(np.uint8)
