"""Procedural, seeded city worlds: a grid of streets between buildings and plazas, perimeter
walls, alleys (corridors), and obstacles in the streets (crates, containers, barriers, pillars,
trees), plus the routes the expert autopilot flies.

World frame: x east, y north, z up, origin at the centre of the square world. Everything here
is plain data (no MuJoCo): `scene.py` turns a World into an MJCF model, `sdf.py` into a Gazebo
world. A seed gives the same world on every machine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PRESETS = ("day", "dusk", "changed")
ROUTES = ("loop", "figure8", "random")


class WorldError(ValueError):
    """Invalid world parameters (raised before anything is built or rendered)."""


@dataclass
class Obstacle:
    kind: str  # building, wall, barrier, crate, container, pillar, column, tree
    shape: str  # box (size = full x, y, z extents), cylinder (size = radius, radius, height),
    #             ellipsoid (size = radius, radius, half height; --randomize clutter),
    #             tree (size = trunk radius, crown radius, crown half-height)
    x: float
    y: float
    size: tuple[float, float, float]
    yaw: float = 0.0
    z: float = 0.0  # base height
    texture: str = "concrete"
    texture_seed: int = 0
    crown_base: float = 0.0  # trees: height of the bottom of the crown

    def footprint_radius(self) -> float:
        """Radius of a circle around (x, y) containing the obstacle's footprint."""
        if self.shape == "box":
            return 0.5 * math.hypot(self.size[0], self.size[1])
        if self.shape == "tree":
            return max(self.size[0], self.size[1])
        return self.size[0]


@dataclass
class World:
    seed: int
    size: float  # side of the square world (m)
    street_x: np.ndarray  # x of the north-south street centres
    street_y: np.ndarray  # y of the east-west street centres
    width_x: np.ndarray  # widths of those streets
    width_y: np.ndarray
    obstacles: list[Obstacle] = field(default_factory=list)
    plazas: list[tuple[float, float, float, float]] = field(default_factory=list)  # x0 y0 x1 y1

    @property
    def intersections(self) -> np.ndarray:
        """(n+1, n+1, 2) street crossing centres, indexed [i (x), j (y)]."""
        xs, ys = np.meshgrid(self.street_x, self.street_y, indexing="ij")
        return np.stack([xs, ys], -1)

    def route(self, kind: str = "loop", seed: int = 0, legs: int = 40) -> np.ndarray:
        """Waypoints (K, 2) at street crossings. 'loop' circles the outer ring, 'figure8' the
        two halves through the middle street (revisiting its crossings), 'random' is a seeded
        walk without U-turns (it revisits streets by chance). Loops repeat to `legs` legs."""
        if kind not in ROUTES:
            raise WorldError(f"unknown route '{kind}' (known: {', '.join(ROUTES)})")
        n = len(self.street_x) - 1
        ring = [(i, 0) for i in range(n)] + [(n, j) for j in range(n)] + \
            [(i, n) for i in range(n, 0, -1)] + [(0, j) for j in range(n, 0, -1)]
        if kind == "loop":
            cells = ring
        elif kind == "figure8":
            mid = n // 2
            left = [(i, 0) for i in range(mid)] + [(mid, j) for j in range(n)] + \
                [(i, n) for i in range(mid, 0, -1)] + [(0, j) for j in range(n, 0, -1)]
            right = [(i, 0) for i in range(mid, n)] + [(n, j) for j in range(n)] + \
                [(i, n) for i in range(n, mid, -1)] + [(mid, j) for j in range(n, 0, -1)]
            cells = left + right
        else:
            rng = np.random.default_rng((self.seed, seed, 7))
            cells, previous = [(0, 0)], None
            while len(cells) < legs + 1:
                i, j = cells[-1]
                options = [(i + di, j + dj) for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1))
                           if 0 <= i + di <= n and 0 <= j + dj <= n and (i + di, j + dj) != previous]
                previous = (i, j)
                cells.append(options[int(rng.integers(len(options)))])
        while len(cells) < legs + 1:
            cells = cells + cells
        points = self.intersections
        return np.array([points[i, j] for i, j in cells[:legs + 1]])


def generate_world(seed: int, size: float = 64.0, blocks: int | None = None,
                   obstacle_spacing: tuple[float, float] = (5.0, 10.0)) -> World:
    """A seeded city world of `size` x `size` metres with `blocks` x `blocks` blocks."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise WorldError(f"world seed must be a non-negative integer, got {seed!r}")
    if not (isinstance(size, (int, float)) and math.isfinite(size) and 30.0 <= size <= 500.0):
        raise WorldError(f"world size must lie in [30, 500] m, got {size!r}")
    blocks = int(blocks) if blocks is not None else max(2, int(round(size / 21.0)))
    if blocks < 1:
        raise WorldError(f"blocks must be >= 1, got {blocks}")
    low, high = obstacle_spacing
    if not 2.0 <= low <= high:
        raise WorldError(f"obstacle spacing must satisfy 2 <= low <= high, got {obstacle_spacing}")
    rng = np.random.default_rng(seed)

    def streets() -> tuple[np.ndarray, np.ndarray]:
        widths = rng.uniform(7.0, 9.0, blocks + 1)
        block_room = size - widths.sum()
        if block_room / blocks < 6.0:
            raise WorldError(f"a {size:g} m world cannot hold {blocks} blocks per side "
                             "(blocks would be under 6 m); use fewer blocks or a larger size")
        lengths = rng.uniform(0.85, 1.15, blocks)
        lengths *= block_room / lengths.sum()
        centres, edge = [], -size / 2
        for k in range(blocks + 1):
            centres.append(edge + widths[k] / 2)
            edge += widths[k] + (lengths[k] if k < blocks else 0.0)
        return np.array(centres), widths

    street_x, width_x = streets()
    street_y, width_y = streets()
    world = World(seed, float(size), street_x, street_y, width_x, width_y)
    next_texture = iter(rng.integers(0, 2**31, 100000).tolist())

    def add(kind, shape, x, y, sx, sy, sz, texture, yaw=0.0, **extra):
        world.obstacles.append(Obstacle(kind, shape, float(x), float(y), (float(sx), float(sy),
                                        float(sz)), float(yaw), texture=texture,
                                        texture_seed=next(next_texture), **extra))

    # perimeter walls in segments of about 16 m, each with its own facade
    half = size / 2
    segments = max(1, int(round(size / 16.0)))
    length = (size + 1.0) / segments
    for s in range(segments):
        along = -half - 0.5 + length * (s + 0.5)
        for x, y, sx, sy in ((along, half + 0.25, length, 0.5), (along, -half - 0.25, length, 0.5),
                             (half + 0.25, along, 0.5, length), (-half - 0.25, along, 0.5, length)):
            add("wall", "box", x, y, sx, sy, rng.uniform(5, 9), "facade")

    # blocks: buildings (sometimes split by an alley) or plazas with trees and columns
    for i in range(blocks):
        x0, x1 = street_x[i] + width_x[i] / 2, street_x[i + 1] - width_x[i + 1] / 2
        for j in range(blocks):
            y0, y1 = street_y[j] + width_y[j] / 2, street_y[j + 1] - width_y[j + 1] / 2
            if rng.random() < 0.75:
                inset = rng.uniform(0.3, 1.0)
                bx0, bx1, by0, by1 = x0 + inset, x1 - inset, y0 + inset, y1 - inset
                parts = [(bx0, bx1, by0, by1)]
                alley = rng.uniform(2.5, 3.5)
                if rng.random() < 0.5 and max(bx1 - bx0, by1 - by0) > 6 + alley + 1:
                    # an alley: a corridor through the block
                    if bx1 - bx0 > by1 - by0:
                        cut = rng.uniform(bx0 + 3, bx1 - 3 - alley)
                        parts = [(bx0, cut, by0, by1), (cut + alley, bx1, by0, by1)]
                    else:
                        cut = rng.uniform(by0 + 3, by1 - 3 - alley)
                        parts = [(bx0, bx1, by0, cut), (bx0, bx1, cut + alley, by1)]
                for px0, px1, py0, py1 in parts:
                    add("building", "box", (px0 + px1) / 2, (py0 + py1) / 2, px1 - px0, py1 - py0,
                        rng.uniform(5.0, 12.0), "facade" if rng.random() < 0.8 else "brick")
            else:
                world.plazas.append((x0, y0, x1, y1))
                for _ in range(int(rng.integers(3, 7))):
                    px, py = rng.uniform(x0 + 2, x1 - 2), rng.uniform(y0 + 2, y1 - 2)
                    if rng.random() < 0.65:
                        crown = rng.uniform(0.9, 1.8)
                        add("tree", "tree", px, py, rng.uniform(0.15, 0.3), crown,
                            rng.uniform(1.0, 1.8), "bark", crown_base=rng.uniform(0.6, 1.1))
                    else:
                        add("column", "cylinder", px, py, rng.uniform(0.25, 0.5), 0,
                            rng.uniform(3.0, 6.0), "concrete")

    # street obstacles between crossings: against a side, in the middle, or a barrier from a
    # side; each leaves a gap of at least 2.7 m so every street stays passable
    for axis, centres, widths, cross_centres, cross_widths in (
            (0, street_y, width_y, street_x, width_x), (1, street_x, width_x, street_y, width_y)):
        for k, (centre, width) in enumerate(zip(centres, widths)):
            for m in range(blocks):
                start = cross_centres[m] + cross_widths[m] / 2 + 1.0
                end = cross_centres[m + 1] - cross_widths[m + 1] / 2 - 1.0
                t = start + rng.uniform(0.5, low)
                while t < end - 1.0:
                    _street_obstacle(rng, add, axis, centre, width, t)
                    t += rng.uniform(low, high)
    return world


def _street_obstacle(rng, add, axis: int, centre: float, width: float, t: float) -> None:
    """One obstacle at distance t along a street (axis 0: runs along x, 1: along y)."""
    def place(along: float, across: float, along_size: float, across_size: float):
        if axis == 0:
            return dict(x=along, y=across, sx=along_size, sy=across_size)
        return dict(x=across, y=along, sx=across_size, sy=along_size)

    side = 1.0 if rng.random() < 0.5 else -1.0
    pattern = rng.choice(["side", "centre", "barrier"], p=[0.45, 0.35, 0.20])
    if pattern == "side":
        across = rng.uniform(1.2, width - 3.0)
        offset = centre + side * (width / 2 - across / 2 - rng.uniform(0.0, 0.3))
        along = rng.uniform(1.0, 3.0)
        kind, texture = ("container", "container") if rng.random() < 0.4 else ("crate", "crate")
        height = rng.uniform(2.2, 3.5) if rng.random() < 0.85 else rng.uniform(0.5, 0.9)
        p = place(t, offset, along, across)
        add(kind, "box", p["x"], p["y"], p["sx"], p["sy"], height, texture,
            yaw=rng.uniform(-0.1, 0.1))
    elif pattern == "centre":
        room = (width - 2 * 2.7) / 2  # largest radius that leaves 2.7 m on each side
        offset = centre + rng.uniform(-0.3, 0.3)
        p = place(t, offset, 0, 0)
        choice = rng.random()
        if choice < 0.4:
            crown = min(room, rng.uniform(0.6, 0.9))
            add("tree", "tree", p["x"], p["y"], rng.uniform(0.12, 0.2), crown,
                rng.uniform(0.9, 1.5), "bark", crown_base=rng.uniform(0.5, 0.9))
        elif choice < 0.75:
            add("pillar", "cylinder", p["x"], p["y"], min(room, rng.uniform(0.2, 0.45)), 0,
                rng.uniform(3.0, 6.0), "concrete")
        else:
            edge = min(2 * room / math.sqrt(2), rng.uniform(0.8, 1.4))
            add("crate", "box", p["x"], p["y"], edge, edge, rng.uniform(2.2, 3.2), "crate",
                yaw=rng.uniform(0, math.pi / 2))
    else:
        across = width - rng.uniform(2.8, 3.5)
        offset = centre + side * (width / 2 - across / 2)
        p = place(t, offset, 0.3, across)
        add("barrier", "box", p["x"], p["y"], p["sx"], p["sy"], rng.uniform(2.2, 3.0), "brick")
