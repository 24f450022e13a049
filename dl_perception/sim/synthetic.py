"""A ray-cast synthetic camera: flying down a textured corridor with walls of obstacles ahead.
Cheap (numpy only), deterministic, and varied enough that networks see changing structure; the
built-in source when no simulator or recording is at hand."""
from __future__ import annotations

import math

import numpy as np


class SyntheticCorridor:
    def __init__(self, width: int = 320, height: int = 240, hfov_deg: float = 90.0,
                 speed: float = 1.5, obstacle_spacing: float = 12.0, seed: int = 0):
        self.width, self.height = width, height
        self.focal = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
        self.speed = speed
        self.spacing = obstacle_spacing
        rng = np.random.default_rng(seed)
        self.obstacle_offsets = rng.uniform(-1.5, 1.5, size=64)  # lateral centre per obstacle
        u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
        self.dx = (u - width / 2) / self.focal
        self.dy = -(v - height / 2) / self.focal
        self.intrinsics = (self.focal, self.focal, width / 2, height / 2)

    def render(self, t: float) -> np.ndarray:
        """HxWx3 uint8 RGB at time t (s)."""
        z0 = self.speed * t
        depth = np.full(self.dx.shape, np.inf)
        color = np.zeros(self.dx.shape + (3,))
        sky = np.array([150.0, 180.0, 220.0])
        color[:] = sky

        def hit(t_ray, texture_u, texture_v, base, mask):
            nearer = mask & (t_ray < depth) & (t_ray > 0)
            checker = ((np.floor(texture_u) + np.floor(texture_v)) % 2)[nearer]
            shade = np.clip(1.2 - t_ray[nearer] / 40.0, 0.3, 1.0)[:, None]
            color[nearer] = base * (0.55 + 0.45 * checker[:, None]) * shade
            depth[nearer] = t_ray[nearer]

        with np.errstate(divide="ignore", invalid="ignore"):
            t_floor = -1.5 / self.dy
            hit(t_floor, self.dx * t_floor, z0 + t_floor, np.array([90.0, 140.0, 70.0]), self.dy < 0)
            for side, base in ((-3.0, np.array([170.0, 110.0, 80.0])),
                               (3.0, np.array([120.0, 120.0, 160.0]))):
                t_wall = side / self.dx
                y = self.dy * t_wall
                hit(t_wall, (z0 + t_wall) * 1.5, y * 1.5, base, (y > -1.5) & (y < 2.5))
            first = int(z0 // self.spacing) + 1
            for index in range(first, first + 4):
                z = index * self.spacing - z0
                centre = self.obstacle_offsets[index % len(self.obstacle_offsets)]
                x, y = self.dx * z, self.dy * z
                face = (np.abs(x - centre) < 0.8) & (y > -1.5) & (y < 1.0)
                hit(np.full(self.dx.shape, z), x * 3, y * 3, np.array([200.0, 60.0, 50.0]), face)
        return np.clip(color, 0, 255).astype(np.uint8)
