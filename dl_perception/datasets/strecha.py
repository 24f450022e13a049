"""The Strecha/EPFL multi-view scenes (../shared/data/strecha_mvs): images with ground-truth
intrinsics and poses, relative-pose pairs for evaluation, and multi-view correspondences (tracks
of one 3D point across views) for training.

Scene layout: <scene>/images/<name>.jpg and <scene>/cameras.csv with
`image,fx,fy,cx,cy,r11..r33,t1,t2,t3`, where X_cam = R X_world + t (metres) and the intrinsics
put the top-left image CORNER at (0, 0). This project's pixel convention has the centre of the
top-left pixel at (0, 0), so the principal point read here is shifted by -0.5 px (the files
hold the 3072x2048 originals' values divided by 4, exact in the corner convention).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import cKDTree

from .two_view import draw_depth_discs


@dataclass
class View:
    name: str
    path: str
    K: np.ndarray  # 3x3, pixel-centre convention
    R: np.ndarray  # world -> camera rotation
    t: np.ndarray  # world -> camera translation (m)

    @property
    def P(self) -> np.ndarray:
        return self.K @ np.c_[self.R, self.t]


def read_scene(folder: str) -> list[View]:
    table = os.path.join(folder, "cameras.csv")
    if not os.path.isfile(table):
        raise FileNotFoundError(f"{folder}: no cameras.csv (not a Strecha-layout scene)")
    views = []
    with open(table, newline="") as handle:
        for row in csv.DictReader(handle):
            path = os.path.join(folder, "images", row["image"])
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path} is listed in {table} but missing")
            K = np.array([[float(row["fx"]), 0, float(row["cx"]) - 0.5],
                          [0, float(row["fy"]), float(row["cy"]) - 0.5], [0, 0, 1.0]])
            R = np.array([float(row[f"r{i}{j}"]) for i in (1, 2, 3) for j in (1, 2, 3)]).reshape(3, 3)
            t = np.array([float(row[f"t{i}"]) for i in (1, 2, 3)])
            views.append(View(os.path.splitext(row["image"])[0], path, K, R, t))
    if len(views) < 2:
        raise ValueError(f"{folder}: a scene needs at least two views")
    return views


def relative_pose(a: View, b: View) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) mapping camera a's coordinates into camera b's: X_b = R X_a + t."""
    R = b.R @ a.R.T
    return R, b.t - R @ a.t


def fundamental_matrix(a: View, b: View) -> np.ndarray:
    """F with x_b^T F x_a = 0 for pixels x_a of a and x_b of b."""
    R, t = relative_pose(a, b)
    skew = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    return np.linalg.inv(b.K).T @ skew @ R @ np.linalg.inv(a.K)


def epipolar_distance(F: np.ndarray, points_a: np.ndarray, points_b: np.ndarray) -> np.ndarray:
    """Symmetric distance (px): the larger of each point's distance to the other's epipolar line."""
    ha = np.c_[points_a, np.ones(len(points_a))]
    hb = np.c_[points_b, np.ones(len(points_b))]
    lines_b = ha @ F.T  # epipolar lines in b
    lines_a = hb @ F
    residual = np.abs((hb * lines_b).sum(1))
    return np.maximum(residual / np.linalg.norm(lines_b[:, :2], axis=1),
                      residual / np.linalg.norm(lines_a[:, :2], axis=1))


def project(view: View, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points N x 3 -> (pixels N x 2, depth N)."""
    camera = X @ view.R.T + view.t
    z = camera[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        pixels = (camera @ view.K.T)[:, :2] / z[:, None]
    return pixels, z


def triangulate(views: list[View], points: np.ndarray) -> np.ndarray:
    """Linear (DLT) triangulation of one point from its pixels in several views."""
    rows = []
    for view, (x, y) in zip(views, points):
        P = view.P
        rows += [x * P[2] - P[0], y * P[2] - P[1]]
    _, _, vt = np.linalg.svd(np.array(rows))
    return vt[-1, :3] / vt[-1, 3]


def pose_pairs(views: list[View], max_gap: int = 3) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j <= i + max_gap, of a scene's views in capture order."""
    return [(i, j) for i in range(len(views)) for j in range(i + 1, min(len(views), i + max_gap + 1))]


# ---------------------------------------------------------------------------------------------
# multi-view correspondences

@dataclass
class Tracks:
    """Observations of 3D points in the views of one scene. Positions are the projections of the
    triangulated point (exact under the ground-truth poses); `sigma` is the point's SIFT scale
    carried into each view by its depth; `angle` is the image direction of one fixed 3D
    direction at the point (the reference view's x axis), so angle_b - angle_a is the in-plane
    rotation between two observations."""

    points: np.ndarray  # T x 3, world
    track: np.ndarray  # M, index into points
    view: np.ndarray  # M, index into the scene's views
    xy: np.ndarray  # M x 2
    sigma: np.ndarray  # M
    angle: np.ndarray  # M
    detected: np.ndarray  # M, True where a SIFT keypoint matched (else added by re-projection)

    def save(self, path: str) -> None:
        np.savez_compressed(path, **{k: getattr(self, k) for k in self.__dataclass_fields__})

    @classmethod
    def load(cls, path: str) -> "Tracks":
        with np.load(path) as data:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def pair(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the observations of tracks seen in both views a and b (aligned)."""
        in_a = {t: i for i, t in zip(np.nonzero(self.view == a)[0], self.track[self.view == a])}
        index_a, index_b = [], []
        for i, t in zip(np.nonzero(self.view == b)[0], self.track[self.view == b]):
            if t in in_a:
                index_a.append(in_a[t])
                index_b.append(i)
        return np.array(index_a, int), np.array(index_b, int)


def _sift_features(path: str, count: int):
    gray = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise ValueError(f"cannot read {path}")
    sift = cv2.SIFT_create(nfeatures=count, contrastThreshold=0.02)
    keypoints, descriptors = sift.detectAndCompute(gray, None)
    points = np.array([k.pt for k in keypoints], np.float64).reshape(-1, 2)
    sigmas = np.array([k.size / 2 for k in keypoints], np.float64)
    return points, sigmas, descriptors, gray.shape


class _UnionFind:
    def __init__(self):
        self.parent: dict = {}

    def find(self, node):
        self.parent.setdefault(node, node)
        while self.parent[node] != node:
            self.parent[node] = self.parent[self.parent[node]]
            node = self.parent[node]
        return node

    def union(self, a, b):
        self.parent[self.find(a)] = self.find(b)


def build_tracks(views: list[View], max_gap: int = 3, features: int = 4000,
                 epipolar_px: float = 1.0, reprojection_px: float = 1.5, margin: float = 16.0,
                 log=None) -> Tracks:
    """Correspondences of the same 3D point across the views of a scene, as an SfM system gives
    them (LIFT's supervision): SIFT keypoints matched between views up to `max_gap` apart (mutual,
    ratio test), kept when consistent with the known epipolar geometry, joined into tracks,
    triangulated from all their views (observations re-projecting more than `reprojection_px`
    away are dropped), then re-projected into every other view and added there where that view
    has a SIFT keypoint within `reprojection_px` of the projection at a compatible scale (seen,
    not occluded)."""
    features_of = [_sift_features(v.path, features) for v in views]
    joined = _UnionFind()
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    for i, j in pose_pairs(views, max_gap):
        pa, _, da, _ = features_of[i]
        pb, _, db, _ = features_of[j]
        if da is None or db is None or len(da) < 2 or len(db) < 2:
            continue
        forward = matcher.knnMatch(da, db, k=2)
        backward = {m[0].queryIdx: m[0].trainIdx for m in matcher.knnMatch(db, da, k=1) if m}
        pairs = np.array([(m.queryIdx, m.trainIdx) for m, n in (f for f in forward if len(f) == 2)
                          if m.distance < 0.85 * n.distance and backward.get(m.trainIdx) == m.queryIdx],
                         int).reshape(-1, 2)
        if not len(pairs):
            continue
        distance = epipolar_distance(fundamental_matrix(views[i], views[j]), pa[pairs[:, 0]],
                                     pb[pairs[:, 1]])
        for ka, kb in pairs[distance < epipolar_px]:
            joined.union((i, int(ka)), (j, int(kb)))
    components: dict = {}
    for node in list(joined.parent):
        components.setdefault(joined.find(node), []).append(node)
    points, observations = [], []  # observations: (track, view, keypoint)
    for nodes in components.values():
        seen = [v for v, _ in nodes]
        if len(nodes) < 2 or len(set(seen)) != len(seen):
            continue  # one point cannot be two keypoints of one view
        pixels = np.array([features_of[v][0][k] for v, k in nodes])
        X = triangulate([views[v] for v in seen], pixels)
        kept = []
        for (v, k), pixel in zip(nodes, pixels):
            projected, z = project(views[v], X[None])
            if z[0] > 0 and np.linalg.norm(projected[0] - pixel) <= reprojection_px:
                kept.append((v, k))
        if len(kept) >= 2:
            observations += [(len(points), v, k) for v, k in kept]
            points.append(X)
    points = np.array(points).reshape(-1, 3)
    # re-projection into the views a track was not matched in
    used = {(v, k) for _, v, k in observations}
    world_size: dict[int, list] = {}
    for t, v, k in observations:
        _, z = project(views[v], points[t][None])
        world_size.setdefault(t, []).append(features_of[v][1][k] * z[0] / views[v].K[0, 0])
    size = np.array([np.median(world_size[t]) for t in range(len(points))])
    tracks_in = {}
    for t, v, _ in observations:
        tracks_in.setdefault(t, set()).add(v)
    added = 0
    for v, view in enumerate(views):
        keypoints, sigmas, _, (height, width) = features_of[v]
        if not len(keypoints) or not len(points):
            continue
        tree = cKDTree(keypoints)
        projected, z = project(view, points)
        inside = ((z > 0) & (projected[:, 0] >= margin) & (projected[:, 0] <= width - 1 - margin)
                  & (projected[:, 1] >= margin) & (projected[:, 1] <= height - 1 - margin))
        for t in np.nonzero(inside)[0]:
            if v in tracks_in[t]:
                continue
            distance, k = tree.query(projected[t])
            expected = size[t] * view.K[0, 0] / z[t]
            if (distance <= reprojection_px and (v, k) not in used
                    and 0.67 < sigmas[k] / expected < 1.5):
                observations.append((t, v, int(k)))
                used.add((v, k))
                tracks_in[t].add(v)
                added += 1
    track = np.array([o[0] for o in observations], int)
    view_index = np.array([o[1] for o in observations], int)
    detected = np.ones(len(observations), bool)
    detected[len(observations) - added:] = False
    xy = np.zeros((len(observations), 2))
    sigma = np.zeros(len(observations))
    angle = np.zeros(len(observations))
    for v, view in enumerate(views):
        mine = view_index == v
        if not mine.any():
            continue
        X = points[track[mine]]
        xy[mine], z = project(view, X)
        sigma[mine] = size[track[mine]] * view.K[0, 0] / z
    # the image direction of a fixed 3D direction (the first view's x axis, at 1 % of the depth)
    axis = views[0].R[0]
    for v, view in enumerate(views):
        mine = view_index == v
        if not mine.any():
            continue
        X = points[track[mine]]
        _, z = project(view, X)
        moved, _ = project(view, X + axis[None] * (0.01 * z)[:, None])
        delta = moved - xy[mine]
        angle[mine] = np.arctan2(delta[:, 1], delta[:, 0])
    if log:
        log(f"{len(points)} tracks, {len(observations)} observations "
            f"({added} added by re-projection) in {len(views)} views")
    return Tracks(points, track, view_index, xy, sigma, angle, detected)


def sparse_depth(view: View, tracks: Tracks, index: int, shape: tuple[int, int],
                 radius: int = 4) -> np.ndarray:
    """Depth along the optical axis (m, float32, NaN = none) of every track observed in view
    `index` of its scene, each drawn as a disc of `radius` pixels around the observation; where
    discs overlap the nearest point wins (a point seen in front hides what lies behind)."""
    mine = tracks.view == index
    depth = (tracks.points[tracks.track[mine]] @ view.R.T + view.t)[:, 2]
    return draw_depth_discs(tracks.xy[mine], depth, shape, radius)
