"""Tiny place-recognition worlds for tests: a route along x past a wall whose random texture
depends on the world seed; the camera sees the stretch of wall in front of its position, under a
lighting preset. Written as sequence folders (docs/datasets.md)."""
import math

import cv2
import numpy as np

from dl_perception.datasets.sequence import Camera, SequenceWriter

PRESETS = {"day": (1.0, 1.0, (1.0, 1.0, 1.0)), "dusk": (1.6, 0.55, (0.8, 0.85, 1.15))}
WIDTH, HEIGHT = 96, 72
PIXELS_PER_METRE = 8


def wall(world_seed: int, length_m: float) -> np.ndarray:
    rng = np.random.default_rng(world_seed)
    cells = rng.integers(0, 255, (6, int(length_m * PIXELS_PER_METRE / 8) + 16, 3), np.uint8)
    return cv2.resize(cells, (cells.shape[1] * 8, HEIGHT), interpolation=cv2.INTER_NEAREST)


def write_route(root, world_seed: int, preset: str = "day", frames: int = 40,
                spacing: float = 1.0, offset: float = 0.0) -> str:
    texture = wall(world_seed, frames * spacing + 20)
    gamma, gain, colour = PRESETS[preset]
    writer = SequenceWriter(str(root), Camera(WIDTH, HEIGHT, 50.0, 50.0, WIDTH / 2, HEIGHT / 2),
                            {"world_seed": world_seed, "preset": preset})
    for i in range(frames):
        x = offset + i * spacing
        left = int(round(x * PIXELS_PER_METRE))
        view = texture[:, left:left + WIDTH].astype(np.float32) / 255.0
        view = np.clip(gain * view ** gamma * np.array(colour), 0, 1)
        writer.add(float(i) * 0.5, (view * 255).astype(np.uint8), None, [x, 0.0, 1.0],
                   [0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)])
    writer.close()
    return str(root)
