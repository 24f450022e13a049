"""Small ray-cast scenes with exact depth and poses for LIFT and VO tests: a textured floor and
walls seen by a camera flying forward with some sway and yaw."""
import math

import numpy as np

from dl_perception.datasets.sequence import Camera, SequenceWriter
from dl_perception.core.geometry import matrix_to_quat


def texture(seed: int, size: int = 512) -> np.ndarray:
    """Multi-scale blobs and edges: plenty of corners and blobs at many scales."""
    rng = np.random.default_rng(seed)
    import cv2
    image = np.zeros((size, size), np.float32)
    for cell in (4, 8, 16, 32, 64):
        noise = rng.random((size // cell + 1, size // cell + 1)).astype(np.float32)
        image += cv2.resize(noise, (size, size), interpolation=cv2.INTER_NEAREST if cell > 8
                            else cv2.INTER_LINEAR)[:size, :size]
    for _ in range(120):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.circle(image, centre, int(rng.integers(3, 25)), float(rng.uniform(0, 5)), -1)
    image -= image.min()
    return (255 * image / image.max()).astype(np.uint8)


class PlanesScene:
    """Optical camera frame: x right, y down, z forward. Floor at y = +1.5, walls at x = +-4 and
    a back wall at z = 30, each with its own texture (1 texel = 2 cm)."""

    planes = [(1, 1.5), (0, -4.0), (0, 4.0), (2, 30.0)]  # (axis, coordinate)

    def __init__(self, width: int = 320, height: int = 240, hfov_deg: float = 90.0):
        self.width, self.height = width, height
        f = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
        self.camera = Camera(width, height, f, f, width / 2 - 0.5, height / 2 - 0.5)
        self.textures = [texture(i) for i in range(len(self.planes))]

    def pose(self, index: int) -> np.ndarray:
        """T_world_camera: forward 0.15 m a frame, lateral sway, gentle yaw."""
        t = index * 0.1
        yaw = 0.15 * math.sin(0.7 * t)
        R = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0],
                      [-math.sin(yaw), 0, math.cos(yaw)]])
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = [0.8 * math.sin(0.5 * t), 0.1 * math.sin(1.3 * t), 1.5 * t]
        return T

    def render(self, T_world_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 image and metric depth (z along the optical axis)."""
        import cv2
        K = self.camera.K
        u, v = np.meshgrid(np.arange(self.width, dtype=np.float64),
                           np.arange(self.height, dtype=np.float64))
        rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
        R, origin = T_world_camera[:3, :3], T_world_camera[:3, 3]
        world_rays = rays @ R.T
        best = np.full(u.shape, np.inf)
        gray = np.zeros(u.shape, np.float32)
        for (axis, coordinate), tex in zip(self.planes, self.textures):
            with np.errstate(divide="ignore", invalid="ignore"):
                lam = (coordinate - origin[axis]) / world_rays[..., axis]
            hit = (lam > 0.05) & (lam < best)
            points = origin + lam[..., None] * world_rays
            other = [a for a in range(3) if a != axis]
            tu = (points[..., other[0]] * 50.0) % tex.shape[1]
            tv = (points[..., other[1]] * 50.0) % tex.shape[0]
            sample = cv2.remap(tex.astype(np.float32), tu.astype(np.float32),
                               tv.astype(np.float32), cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_WRAP)
            gray = np.where(hit, sample, gray)
            best = np.where(hit, lam, best)
        depth = np.where(np.isfinite(best), best, np.nan).astype(np.float32)  # rays have z = 1
        rgb = np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        return rgb, depth

    def write_sequence(self, root: str, frames: int, world_seed: int = 7,
                       black_frames: tuple = ()) -> str:
        writer = SequenceWriter(root, self.camera, {"world_seed": world_seed,
                                                    "source": "test PlanesScene"})
        for index in range(frames):
            T = self.pose(index)
            rgb, depth = self.render(T)
            if index in black_frames:
                rgb = np.zeros_like(rgb)
            writer.add(index * 0.1, rgb, depth, T[:3, 3], matrix_to_quat(T[:3, :3]))
        writer.close()
        return root
