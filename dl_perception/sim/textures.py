"""Procedural surface textures (numpy + OpenCV), one unique image per surface, cached on disk.

Local features, visual odometry and place recognition need real visual structure: every wall,
box, trunk and crown gets its own image drawn from a per-surface seed (fractal noise, bricks,
planks, windows, signs, leaves), so no two surfaces and no two places look alike. Images are
keyed by a hash of (generator version, kind, size, seed) and written as PNG under
`texture_cache_dir()`; a later run (or another process) reuses them.
"""
from __future__ import annotations

import hashlib
import os

import cv2
import numpy as np

VERSION = 1  # bump when a generator changes, so stale cache entries are not reused
KINDS = ("facade", "brick", "concrete", "crate", "container", "bark", "foliage")


def texture_cache_dir() -> str:
    root = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(root, "dl_perception", "sim_textures")


def fractal_noise(rng: np.random.Generator, height: int, width: int, base_cells: int = 4,
                  octaves: int = 5, persistence: float = 0.55) -> np.ndarray:
    """Value noise summed over octaves, in [0, 1] (float32, height x width)."""
    total = np.zeros((height, width), np.float32)
    amplitude, weight = 1.0, 0.0
    cells = base_cells
    for _ in range(octaves):
        grid_h = max(2, int(round(cells * height / max(height, width))) + 1)
        grid_w = max(2, int(round(cells * width / max(height, width))) + 1)
        grid = rng.random((grid_h, grid_w), dtype=np.float32)
        total += amplitude * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        weight += amplitude
        amplitude *= persistence
        cells *= 2
    total /= weight
    low, high = float(total.min()), float(total.max())
    return (total - low) / max(high - low, 1e-6)


def _tint(noise: np.ndarray, colour, contrast: float) -> np.ndarray:
    """RGB float image: a base colour modulated by noise."""
    shade = 1.0 + contrast * (noise[..., None] - 0.5)
    return np.asarray(colour, np.float32)[None, None, :] * shade


def _random_colour(rng, low=60, high=220):
    return rng.uniform(low, high, 3).astype(np.float32)


def _bricks(rng, height, width, px_per_m):
    brick_h, brick_w = max(3, int(0.075 * px_per_m)), max(6, int(0.23 * px_per_m))
    base = _random_colour(rng, 90, 190) * np.array([1.0, 0.7, 0.6], np.float32)
    image = _tint(fractal_noise(rng, height, width, 8), base, 0.5)
    rows = height // brick_h + 1
    cols = width // brick_w + 2
    jitter = rng.uniform(0.75, 1.25, (rows, cols)).astype(np.float32)
    v, u = np.mgrid[0:height, 0:width]
    row = v // brick_h
    col = (u + (row % 2) * (brick_w // 2)) // brick_w
    image *= jitter[row, col][..., None]
    mortar = ((v % brick_h) < max(1, brick_h // 6)) | (
        ((u + (row % 2) * (brick_w // 2)) % brick_w) < max(1, brick_w // 12))
    image[mortar] = _random_colour(rng, 150, 210)
    return image


def _plaster(rng, height, width):
    return _tint(fractal_noise(rng, height, width, 6, 6), _random_colour(rng, 110, 230), 0.45)


def _windows(rng, image, px_per_m, ground_floor: bool):
    """Rows of windows (glass, frames, sills), a door or shop front and a few signs."""
    height, width = image.shape[:2]
    storey = int(rng.uniform(2.8, 3.6) * px_per_m)
    spacing = int(rng.uniform(2.2, 4.0) * px_per_m)
    win_w, win_h = int(spacing * rng.uniform(0.35, 0.6)), int(storey * rng.uniform(0.4, 0.6))
    frame = tuple(float(c) for c in _random_colour(rng, 30, 240))
    offset = int(rng.uniform(0, spacing))
    for top in range(height - storey, 0, -storey):  # row 0 is the top of the wall
        bottom_storey = top >= height - storey
        if bottom_storey and not ground_floor:
            continue
        for left in range(offset, width - win_w, spacing):
            if rng.random() < 0.12:
                continue  # irregular facades: a missing window here and there
            y0 = top + (storey - win_h) // 2
            glass = rng.uniform(20, 90, 3)
            glass[2] += rng.uniform(0, 60)
            shade = fractal_noise(rng, win_h, win_w, 2, 2)[..., None]
            image[y0:y0 + win_h, left:left + win_w] = glass * (0.6 + 0.8 * shade)
            cv2.rectangle(image, (left, y0), (left + win_w, y0 + win_h), frame, max(1, win_w // 12))
            cv2.line(image, (left + win_w // 2, y0), (left + win_w // 2, y0 + win_h), frame, 1)
            cv2.rectangle(image, (left - 2, y0 + win_h), (left + win_w + 2, y0 + win_h + 3),
                          (200.0, 200.0, 200.0), -1)
    for _ in range(int(rng.integers(1, 4))):  # signs and posters with random glyph strokes
        sw, sh = int(rng.uniform(0.8, 2.5) * px_per_m), int(rng.uniform(0.4, 1.2) * px_per_m)
        x0 = int(rng.uniform(0, max(1, width - sw)))
        y0 = int(rng.uniform(max(0, height - 2.6 * px_per_m), max(1, height - sh - 1)))
        colour = tuple(float(c) for c in _random_colour(rng, 20, 255))
        cv2.rectangle(image, (x0, y0), (x0 + sw, y0 + sh), colour, -1)
        ink = tuple(255.0 - c for c in colour)
        for _ in range(int(rng.integers(3, 9))):
            p = (int(x0 + rng.uniform(0.1, 0.9) * sw), int(y0 + rng.uniform(0.2, 0.8) * sh))
            q = (int(p[0] + rng.uniform(-0.2, 0.2) * sw), int(p[1] + rng.uniform(-0.3, 0.3) * sh))
            cv2.line(image, p, q, ink, max(1, sh // 10), cv2.LINE_AA)


def _stains(rng, image, amount: float):
    height, width = image.shape[:2]
    dirt = fractal_noise(rng, height, width, 3, 4)
    image *= (1.0 - amount * np.clip(dirt - 0.5, 0, 1) * 2)[..., None]


def generate(kind: str, width: int, height: int, seed: int, px_per_m: float = 32.0) -> np.ndarray:
    """An RGB uint8 texture of `kind`; row 0 is the top of the surface."""
    if kind not in KINDS:
        raise ValueError(f"unknown texture kind '{kind}' (known: {', '.join(KINDS)})")
    if width < 4 or height < 4:
        raise ValueError(f"texture size must be at least 4x4, got {width}x{height}")
    rng = np.random.default_rng(seed)
    if kind == "facade":
        image = _bricks(rng, height, width, px_per_m) if rng.random() < 0.4 else \
            _plaster(rng, height, width)
        _windows(rng, image, px_per_m, ground_floor=True)
        _stains(rng, image, 0.35)
    elif kind == "brick":
        image = _bricks(rng, height, width, px_per_m)
        _stains(rng, image, 0.3)
    elif kind == "concrete":
        image = _tint(fractal_noise(rng, height, width, 5, 6), _random_colour(rng, 120, 190) *
                      np.array([1.0, 1.0, 0.97], np.float32), 0.6)
        step = int(rng.uniform(0.8, 1.5) * px_per_m)  # form-work joints and tie holes
        for y in range(step, height, step):
            image[y:y + 1] *= 0.7
        for y in range(step // 2, height, step):
            for x in range(step // 2, width, step):
                cv2.circle(image, (x, y), max(1, step // 25), (60.0, 60.0, 60.0), -1)
        _stains(rng, image, 0.4)
    elif kind == "crate":
        wood = _random_colour(rng, 120, 200) * np.array([1.0, 0.75, 0.45], np.float32)
        grain = fractal_noise(rng, height, max(4, width // 16), 6, 4)
        grain = cv2.resize(grain, (width, height), interpolation=cv2.INTER_LINEAR)
        image = _tint(grain, wood, 0.7)
        plank = max(4, int(rng.uniform(0.12, 0.2) * px_per_m))
        image[np.arange(height) % plank < 1] *= 0.5
        _stains(rng, image, 0.3)
    elif kind == "container":
        paint = _random_colour(rng, 40, 230)
        image = _tint(fractal_noise(rng, height, width, 6, 5), paint, 0.35)
        rib = max(4, int(0.3 * px_per_m))
        u = np.arange(width)
        image[:, (u % rib) < rib // 3] *= 0.75
        _windows(rng, image, px_per_m, ground_floor=False) if rng.random() < 0.3 else \
            _stains(rng, image, 0.5)
    elif kind == "bark":
        streaks = fractal_noise(rng, max(4, height // 8), width, 8, 4)
        streaks = cv2.resize(streaks, (width, height), interpolation=cv2.INTER_LINEAR)
        image = _tint(0.6 * streaks + 0.4 * fractal_noise(rng, height, width, 16, 3),
                      _random_colour(rng, 60, 120) * np.array([1.0, 0.8, 0.6], np.float32), 0.9)
    else:  # foliage: clusters of leaves over dark depth
        green = np.array([rng.uniform(40, 110), rng.uniform(90, 170), rng.uniform(30, 80)],
                         np.float32)
        image = _tint(fractal_noise(rng, height, width, 6, 5), green * 0.55, 0.8)
        count = int(width * height / 60)
        xs, ys = rng.integers(0, width, count), rng.integers(0, height, count)
        sizes = rng.integers(2, 6, count)
        shades = rng.uniform(0.6, 1.5, count)
        angles = rng.uniform(0, 180, count)
        for x, y, s, shade, angle in zip(xs, ys, sizes, shades, angles):
            colour = tuple(float(c) for c in np.clip(green * shade, 0, 255))
            cv2.ellipse(image, (int(x), int(y)), (int(s), max(1, int(s) // 2)), float(angle), 0,
                        360, colour, -1)
    return np.clip(image, 0, 255).astype(np.uint8)


def cached_png(key: str, make_rgb, cache_dir: str | None = None) -> str:
    """Path of the cached PNG for `key`, calling `make_rgb()` (-> RGB uint8) when absent."""
    cache_dir = cache_dir or texture_cache_dir()
    digest = hashlib.sha1(f"{VERSION}/{key}".encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"{key.split('/')[0]}_{digest}.png")
    if not os.path.isfile(path):
        os.makedirs(cache_dir, exist_ok=True)
        partial = f"{path}.{os.getpid()}.tmp.png"  # atomic: concurrent runs share the cache
        cv2.imwrite(partial, cv2.cvtColor(make_rgb(), cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_PNG_COMPRESSION, 1])
        os.replace(partial, path)
    return path


def cached_texture(kind: str, width: int, height: int, seed: int, px_per_m: float = 32.0,
                   cache_dir: str | None = None) -> str:
    """Path of the PNG for these parameters, generating and caching it when absent."""
    return cached_png(f"{kind}/{width}x{height}/{seed}/{px_per_m}",
                      lambda: generate(kind, width, height, seed, px_per_m), cache_dir)


def ground(world, pixels: int, seed: int) -> np.ndarray:
    """The whole ground as one image (row 0 = north edge, column 0 = west edge): asphalt
    streets with worn markings and crossings, paved sidewalks, grass in plazas, stains."""
    rng = np.random.default_rng(seed)
    span = world.size + 4.0
    ppm = pixels / span

    def px(value: float, axis: int) -> int:  # world coordinate -> pixel column (0) or row (1)
        return int(round((value + span / 2) * ppm)) if axis == 0 else \
            int(round((span / 2 - value) * ppm))

    image = _tint(fractal_noise(rng, pixels, pixels, 16, 6), _random_colour(rng, 150, 185), 0.5)
    tile = max(4, int(rng.uniform(0.4, 0.6) * ppm))  # sidewalk slabs
    v, u = np.mgrid[0:pixels, 0:pixels]
    image[(u % tile == 0) | (v % tile == 0)] *= 0.75
    asphalt = _tint(fractal_noise(rng, pixels, pixels, 32, 6), np.full(3, rng.uniform(55, 85),
                                                                        np.float32), 0.6)
    mask = np.zeros((pixels, pixels), bool)
    for centre, width in zip(world.street_x, world.width_x):
        mask[:, px(centre - width / 2, 0):px(centre + width / 2, 0)] = True
    for centre, width in zip(world.street_y, world.width_y):
        mask[px(centre + width / 2, 1):px(centre - width / 2, 1), :] = True
    image[mask] = asphalt[mask]
    paint = (225.0, 225.0, 215.0)
    dash = max(2, int(1.5 * ppm))
    for centre in world.street_x:  # dashed centre lines
        c = px(centre, 0)
        for r in range(int(rng.integers(0, dash)), pixels, 2 * dash):
            cv2.line(image, (c, r), (c, r + dash), paint, max(1, int(0.12 * ppm)))
    for centre in world.street_y:
        c = px(centre, 1)
        for r in range(int(rng.integers(0, dash)), pixels, 2 * dash):
            cv2.line(image, (r, c), (r + dash, c), paint, max(1, int(0.12 * ppm)))
    for (x, wx) in zip(world.street_x, world.width_x):  # zebra crossings at some crossings
        for (y, wy) in zip(world.street_y, world.width_y):
            if rng.random() < 0.5:
                for k in np.arange(-wx / 2 + 0.5, wx / 2 - 0.5, 0.8):
                    cv2.rectangle(image, (px(x + k, 0), px(y + wy / 2 + 0.5, 1)),
                                  (px(x + k + 0.4, 0), px(y + wy / 2 + 2.5, 1)), paint, -1)
    for x0, y0, x1, y1 in world.plazas:
        grass = _tint(fractal_noise(rng, pixels, pixels, 64, 5),
                      np.array([rng.uniform(50, 90), rng.uniform(110, 150), 50], np.float32), 0.8)
        c0, c1, r0, r1 = px(x0 + 0.8, 0), px(x1 - 0.8, 0), px(y1 - 0.8, 1), px(y0 + 0.8, 1)
        image[r0:r1, c0:c1] = grass[r0:r1, c0:c1]
    for _ in range(int(world.size * world.size / 40)):  # manholes, patches, oil stains
        x, y = rng.uniform(-span / 2, span / 2, 2)
        radius = max(2, int(rng.uniform(0.2, 0.8) * ppm))
        colour = tuple(float(c) for c in _random_colour(rng, 30, 200))
        cv2.circle(image, (px(x, 0), px(y, 1)), radius, colour, -1 if rng.random() < 0.5 else 2)
    _stains(rng, image, 0.3)
    return np.clip(image, 0, 255).astype(np.uint8)
