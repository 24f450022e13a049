"""Sparse depth, up to scale, of real video frames whose camera is known but whose poses are not
(e.g. tum_fr3_long_office: 17 frames about 1 s apart, TUM's fr3 intrinsics): each frame with
its neighbour, SIFT matches kept by the essential matrix (RANSAC), the relative pose recovered
from it, the inliers triangulated and kept where they reproject within a pixel in both views and
the two rays meet at a usable angle. The baseline is unknown, so each frame's depth is right up
to one factor: training uses it through the scale-invariant loss (`train depth --sparse`)."""
from __future__ import annotations

import cv2
import numpy as np

from ..core.matching import mutual_nearest_neighbours


def sift_matches(gray_a: np.ndarray, gray_b: np.ndarray, features: int = 4000,
                 ratio: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions (N x 2 each) of mutual nearest-neighbour SIFT matches that pass the
    ratio test."""
    sift = cv2.SIFT_create(nfeatures=features, contrastThreshold=0.02)
    (keys_a, desc_a), (keys_b, desc_b) = (sift.detectAndCompute(g, None) for g in (gray_a, gray_b))
    if desc_a is None or desc_b is None:
        return np.zeros((0, 2)), np.zeros((0, 2))
    pairs = mutual_nearest_neighbours(desc_a, desc_b, ratio=ratio)
    return (np.array([keys_a[i].pt for i in pairs[:, 0]], np.float64).reshape(-1, 2),
            np.array([keys_b[j].pt for j in pairs[:, 1]], np.float64).reshape(-1, 2))


def two_view_depth(points_a: np.ndarray, points_b: np.ndarray, K: np.ndarray,
                   threshold_px: float = 1.0, min_parallax_deg: float = 1.0):
    """(pixels in A, depth along A's optical axis) of the matches that survive, in units of the
    (unknown) distance between the two camera centres."""
    empty = (np.zeros((0, 2)), np.zeros(0))
    if len(points_a) < 8:
        return empty
    E, inliers = cv2.findEssentialMat(points_a, points_b, K, cv2.RANSAC, 0.999, threshold_px)
    if E is None or E.shape != (3, 3):
        return empty
    _, R, t, inliers = cv2.recoverPose(E, points_a, points_b, K, mask=inliers)
    keep = inliers.ravel() > 0
    a, b = points_a[keep], points_b[keep]
    if len(a) == 0:
        return empty
    P_a = K @ np.hstack([np.eye(3), np.zeros((3, 1))])
    P_b = K @ np.hstack([R, t.reshape(3, 1)])
    X = cv2.triangulatePoints(P_a, P_b, a.T, b.T)
    X = (X[:3] / X[3]).T
    in_b = X @ R.T + t.reshape(1, 3)

    def reprojection_error(points, camera_points):
        projected = camera_points @ K.T
        return np.linalg.norm(projected[:, :2] / projected[:, 2:3] - points, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        good = (X[:, 2] > 0) & (in_b[:, 2] > 0) & \
            (reprojection_error(a, X) < threshold_px) & (reprojection_error(b, in_b) < threshold_px)
    centre_b = -R.T @ t.reshape(3)
    ray_a, ray_b = X, X - centre_b
    cosine = np.sum(ray_a * ray_b, axis=1) / (np.linalg.norm(ray_a, axis=1) *
                                              np.linalg.norm(ray_b, axis=1))
    good &= np.degrees(np.arccos(np.clip(cosine, -1, 1))) >= min_parallax_deg
    return a[good], X[good, 2]


def draw_depth_discs(pixels: np.ndarray, depth: np.ndarray, shape: tuple[int, int],
                     radius: int = 4) -> np.ndarray:
    """A depth image (float32, NaN = none) with each point drawn as a disc of `radius` pixels;
    where discs overlap the nearest point wins (a point in front hides what lies behind)."""
    image = np.full(shape, np.nan, np.float32)
    centres = np.round(pixels).astype(int)
    for point in np.argsort(-depth):  # far first, so the nearest of an overlap is drawn last
        if depth[point] > 0:
            cv2.circle(image, tuple(int(v) for v in centres[point]), radius, float(depth[point]), -1)
    return image
