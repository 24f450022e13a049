"""Fabricated posed-image data for the PoseNet tests: a scene whose images encode the camera pose
(colour = position, stripe phase = yaw), written in the sequence, Cambridge and 7-Scenes layouts."""
from __future__ import annotations

import math
import os

import cv2
import numpy as np

from dl_perception.datasets.sequence import Camera, SequenceWriter
from dl_perception.core.geometry import yaw_to_quat

WIDTH, HEIGHT = 64, 48
# a model small enough to train in seconds on these images
TINY_MODEL = {"resize_short": 40, "crop": [48, 36], "stem": [8, 8, 16],
              "stages": [[[8, 8, 8, 4, 4, 4]], [[8, 8, 8, 4, 4, 4]], [[16, 8, 16, 4, 8, 8]]],
              "pose_features": 32, "aux_after": [[1, 0], [2, 0]], "aux_channels": 8,
              "aux_features": 16}


def render(x: float, y: float, yaw: float, rng: np.random.Generator) -> np.ndarray:
    """RGB uint8: red and green follow x and y (0-10 m), the stripes shift with the yaw."""
    image = np.empty((HEIGHT, WIDTH, 3), np.float32)
    image[..., 0] = 25 + 20 * x
    image[..., 1] = 25 + 20 * y
    columns = np.arange(WIDTH, dtype=np.float32)
    image[..., 2] = 128 + 100 * np.sin(columns / 6.0 + 3.0 * yaw)[None, :]
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def poses(count: int, seed: int) -> list[tuple[float, float, float]]:
    rng = np.random.default_rng(seed)
    return [(float(rng.uniform(0, 10)), float(rng.uniform(0, 10)), float(rng.uniform(-0.5, 0.5)))
            for _ in range(count)]


def write_sequence(root, count: int, seed: int, nan_every: int = 0, world_seed: int = 7) -> list:
    rng = np.random.default_rng(seed + 1000)
    writer = SequenceWriter(str(root), Camera(WIDTH, HEIGHT, 50.0, 50.0, 32.0, 24.0),
                            {"world_seed": world_seed})
    truth = poses(count, seed)
    for index, (x, y, yaw) in enumerate(truth):
        position = [x, y, 1.5]
        if nan_every and index % nan_every == 0:
            position = [math.nan] * 3
        writer.add(index * 0.1, render(x, y, yaw, rng), None, position, yaw_to_quat(yaw))
    writer.close()
    return truth


def write_cambridge(root, count: int, seed: int) -> None:
    """dataset_train.txt / dataset_test.txt with camera centre and world-to-camera w p q r."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "seq1"), exist_ok=True)
    for split, offset in (("train", 0), ("test", 1)):
        lines = ["Visual Landmark Dataset V1", "ImageFile, Camera Position [X Y Z W P Q R]", ""]
        for index, (x, y, yaw) in enumerate(poses(count, seed + offset)):
            name = f"seq1/frame{offset}{index:05d}.png"
            cv2.imwrite(os.path.join(root, name),
                        cv2.cvtColor(render(x, y, yaw, rng), cv2.COLOR_RGB2BGR))
            qx, qy, qz, qw = yaw_to_quat(-yaw)  # world-to-camera: the inverse rotation
            lines.append(f"{name} {x} {y} 1.5 {qw} {qx} {qy} {qz}")
        with open(os.path.join(root, f"dataset_{split}.txt"), "w") as handle:
            handle.write("\n".join(lines) + "\n")


def write_seven_scenes(root, count: int, seed: int) -> None:
    """seq-01 (train) and seq-02 (test), 4x4 camera-to-world poses; the last frame of seq-01 has
    an infinite pose, as a few 7-Scenes frames do."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "TrainSplit.txt"), "w") as handle:
        handle.write("sequence1\n")
    with open(os.path.join(root, "TestSplit.txt"), "w") as handle:
        handle.write("sequence2\n")
    for number in (1, 2):
        folder = os.path.join(root, f"seq-{number:02d}")
        os.makedirs(folder)
        for index, (x, y, yaw) in enumerate(poses(count, seed + number)):
            stem = os.path.join(folder, f"frame-{index:06d}")
            cv2.imwrite(stem + ".color.png", cv2.cvtColor(render(x, y, yaw, rng), cv2.COLOR_RGB2BGR))
            matrix = np.eye(4)
            matrix[:3, :3] = [[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0],
                              [0, 0, 1]]
            matrix[:3, 3] = [x, y, 1.5]
            text = "\n".join("\t".join(f"{v:.9e}" for v in row) for row in matrix)
            if number == 1 and index == count - 1:
                text = text.replace(f"{x:.9e}", "-1.#INF")
            with open(stem + ".pose.txt", "w") as handle:
                handle.write(text + "\n")
