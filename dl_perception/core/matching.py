"""Descriptor matching shared by the feature evaluation and visual odometry (numpy only)."""
from __future__ import annotations

import numpy as np


def descriptor_distances(a: np.ndarray, b: np.ndarray, metric: str = "l2") -> np.ndarray:
    """All pairwise distances: Euclidean for float descriptors, Hamming for packed binary ones
    (uint8 rows, as ORB's)."""
    if metric == "hamming":
        bits = np.unpackbits(a[:, None, :] ^ b[None, :, :], axis=2)
        return bits.sum(axis=2).astype(np.float32)
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def mutual_nearest_neighbours(a: np.ndarray, b: np.ndarray, ratio: float | None = None,
                              metric: str = "l2", max_distance: float | None = None) -> np.ndarray:
    """M x 2 index pairs (i in a, j in b) that are each other's nearest neighbour; with `ratio`,
    also Lowe's test: nearest < ratio * second nearest (in b, for a's descriptor)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    distance = descriptor_distances(a, b, metric)
    forward = distance.argmin(axis=1)
    backward = distance.argmin(axis=0)
    index = np.arange(len(a))
    keep = backward[forward] == index
    best = distance[index, forward]
    if ratio is not None and distance.shape[1] > 1:
        second = np.partition(distance, 1, axis=1)[:, 1]
        keep &= best < ratio * second
    if max_distance is not None:
        keep &= best <= max_distance
    return np.stack([index[keep], forward[keep]], axis=1)
