"""Monocular visual odometry on local features (LIFT by default), with metric scale from a depth
image when one is available. Numpy + OpenCV; vo_node and `dl-perception eval vo` wrap it.

Per frame:
1. match the frame to the current keyframe: mutual nearest neighbours with Lowe's ratio test;
2. verify the matches geometrically: essential matrix with RANSAC (OpenCV, 5-point);
3. initialisation (no 3-D points yet): with a depth image, the keyframe's keypoints are
   back-projected at their measured depth (metric); without, once the median image motion shows
   enough parallax, the pose is recovered from the essential matrix (cv2.recoverPose) and the
   inliers are triangulated; the first baseline sets the unit (the last known one after a
   re-initialisation), so the trajectory is up to scale;
4. tracking: camera pose from the keyframe's 3-D points by PnP with RANSAC, refined on inliers;
5. keyframes: when few of the keyframe's points are still tracked, or after a long parallax,
   the frame becomes the keyframe; its 3-D points are the depth measurements (with depth) or
   carried over from matched points and triangulated for new ones (without);
6. tracking loss: too few matches or inliers, or a pose jump beyond what the recent motion
   allows, is reported and not published; after `lost_frames_to_reset` such frames the odometry
   re-initialises from the last good pose instead of publishing a wild one.

Poses are T_world_camera (optical frame); the world is the first camera's optical frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .geometry import OPTICAL_TO_BODY, invert
from .matching import mutual_nearest_neighbours


@dataclass
class VOConfig:
    ratio: float = 0.9  # Lowe's ratio test on top of mutual nearest neighbours
    ransac_threshold_px: float = 1.0  # essential-matrix RANSAC
    pnp_threshold_px: float = 2.0
    min_matches: int = 15
    min_inliers: int = 10
    init_parallax_px: float = 12.0  # median motion needed to initialise without depth
    keyframe_parallax_px: float = 30.0
    keyframe_tracked_fraction: float = 0.5
    min_triangulation_angle_deg: float = 1.0
    max_depth_m: float = 40.0  # depth readings beyond this are ignored (sky, far field)
    max_rotation_deg: float = 30.0  # per frame; more is a wild pose
    max_speed_factor: float = 4.0  # translation per frame vs the recent median (up to scale)
    max_translation_m: float = 2.0  # per frame, metric mode
    lost_frames_to_reset: int = 3


@dataclass
class Features:
    keypoints: np.ndarray  # N x 2 pixels
    descriptors: np.ndarray  # N x D


@dataclass
class DepthImage:
    """Metric depth along the optical axis on its own pixel grid (intrinsics K)."""

    depth: np.ndarray
    K: np.ndarray


@dataclass
class VOResult:
    pose: np.ndarray | None  # 4x4 T_world_camera, None while initialising or lost
    status: str  # initialising | tracking | keyframe | lost | reinitialised
    matches: int = 0
    inliers: int = 0
    metric: bool = False


@dataclass
class _Keyframe:
    features: Features
    pose: np.ndarray  # T_world_camera
    frame: int  # frame counter when it was taken
    points: dict = field(default_factory=dict)  # keypoint index -> 3-D point (world)


def depth_at(depth: DepthImage, keypoints: np.ndarray, K: np.ndarray, max_depth: float) -> np.ndarray:
    """Depth of each keypoint (NaN where unknown), reading the depth grid along the same ray."""
    rays_x = (keypoints[:, 0] - K[0, 2]) / K[0, 0]
    rays_y = (keypoints[:, 1] - K[1, 2]) / K[1, 1]
    u = np.round(rays_x * depth.K[0, 0] + depth.K[0, 2]).astype(int)
    v = np.round(rays_y * depth.K[1, 1] + depth.K[1, 2]).astype(int)
    height, width = depth.depth.shape
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    values = np.full(len(keypoints), np.nan)
    values[inside] = depth.depth[v[inside], u[inside]]
    values[~(np.isfinite(values) & (values > 0.05) & (values < max_depth))] = np.nan
    return values


def _backproject(keypoints: np.ndarray, z: np.ndarray, K: np.ndarray) -> np.ndarray:
    x = (keypoints[:, 0] - K[0, 2]) / K[0, 0] * z
    y = (keypoints[:, 1] - K[1, 2]) / K[1, 1] * z
    return np.stack([x, y, z], axis=1)


def _rotation_deg(R: np.ndarray) -> float:
    return math.degrees(math.acos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)))


class MonocularVO:
    def __init__(self, K: np.ndarray, config: VOConfig | None = None):
        self.K = np.asarray(K, dtype=np.float64)
        self.config = config or VOConfig()
        self.keyframe: _Keyframe | None = None
        self.pose = np.eye(4)  # last good T_world_camera
        self.lost_frames = 0
        self.losses = 0
        self.reinitialisations = 0
        self.keyframes = 0
        self.metric = False
        self.unit_baseline = 1.0  # length unit of an up-to-scale initialisation
        self.recent_steps: list[float] = []
        self.speed_before_loss = 0.0  # median step before a re-initialisation (up to scale)
        self.frame_count = 0
        self.velocity = np.eye(4)  # last frame-to-frame motion
        self.last_good_frame = 0
        self.last_reason = ""

    # --- helpers ------------------------------------------------------------------------------
    def _match(self, a: Features, b: Features) -> np.ndarray:
        return mutual_nearest_neighbours(a.descriptors, b.descriptors, ratio=self.config.ratio)

    def _essential_inliers(self, pa: np.ndarray, pb: np.ndarray):
        E, mask = cv2.findEssentialMat(pa, pb, self.K, cv2.RANSAC, 0.999,
                                       self.config.ransac_threshold_px)
        if E is None or E.shape != (3, 3):
            return None, np.zeros(len(pa), bool)
        return E, mask.ravel().astype(bool)

    def _new_keyframe(self, features: Features, pose: np.ndarray, depth: DepthImage | None,
                      carried: dict | None = None) -> _Keyframe:
        keyframe = _Keyframe(features, pose.copy(), self.frame_count, dict(carried or {}))
        if depth is not None:
            z = depth_at(depth, features.keypoints, self.K, self.config.max_depth_m)
            valid = np.isfinite(z)
            points = _backproject(features.keypoints[valid], z[valid], self.K)
            world = points @ pose[:3, :3].T + pose[:3, 3]
            keyframe.points = dict(zip(np.nonzero(valid)[0].tolist(), world))
        self.keyframes += 1
        return keyframe

    def _triangulate(self, kf: _Keyframe, features: Features, pose: np.ndarray,
                     pairs: np.ndarray) -> dict:
        """World points for keyframe/frame matches with enough parallax and a small
        reprojection error, keyed by the frame's keypoint index."""
        if len(pairs) == 0:
            return {}
        P1 = self.K @ invert(kf.pose)[:3]
        P2 = self.K @ invert(pose)[:3]
        a = kf.features.keypoints[pairs[:, 0]].T.astype(np.float64)
        b = features.keypoints[pairs[:, 1]].T.astype(np.float64)
        homogeneous = cv2.triangulatePoints(P1, P2, a, b)
        world = (homogeneous[:3] / homogeneous[3]).T
        out = {}
        c1, c2 = kf.pose[:3, 3], pose[:3, 3]
        for index, point in enumerate(world):
            if not np.isfinite(point).all():
                continue
            ok = True
            for P, pixel in ((P1, a[:, index]), (P2, b[:, index])):
                projected = P @ np.append(point, 1.0)
                if projected[2] <= 0 or np.linalg.norm(projected[:2] / projected[2] - pixel) > 2.0:
                    ok = False
                    break
            ray1, ray2 = point - c1, point - c2
            cosine = ray1 @ ray2 / (np.linalg.norm(ray1) * np.linalg.norm(ray2) + 1e-12)
            if ok and math.degrees(math.acos(np.clip(cosine, -1, 1))) >= \
                    self.config.min_triangulation_angle_deg:
                out[int(pairs[index, 1])] = point
        return out

    def _plausible(self, pose: np.ndarray, frames_since_good: int) -> bool:
        step = invert(self.pose) @ pose
        rotation = _rotation_deg(step[:3, :3])
        translation = float(np.linalg.norm(step[:3, 3]))
        frames = max(1, frames_since_good)
        if rotation > self.config.max_rotation_deg * frames:
            self.last_reason = f"rotation jump {rotation:.1f} deg"
            return False
        if self.metric:
            limit = self.config.max_translation_m * frames
        elif len(self.recent_steps) >= 3:
            limit = self.config.max_speed_factor * max(np.median(self.recent_steps),
                                                       0.05 * self.unit_baseline) * frames
        else:
            limit = 10 * self.unit_baseline * frames
        if translation > limit:
            self.last_reason = f"translation jump {translation:.2f} > {limit:.2f}"
            return False
        return True

    def _coasted_pose(self) -> np.ndarray:
        """The last good pose moved on at the last velocity over the frames since (otherwise the
        motion during lost frames would be missing); becomes the pose to restart from."""
        elapsed = self.frame_count - self.last_good_frame
        if elapsed > 0:
            self.pose = self.pose @ np.linalg.matrix_power(self.velocity, elapsed)
            self.last_good_frame = self.frame_count
        return self.pose

    def _accept(self, pose: np.ndarray) -> None:
        motion = invert(self.pose) @ pose
        self.velocity = motion
        self.recent_steps = (self.recent_steps + [float(np.linalg.norm(motion[:3, 3]))])[-20:]
        self.pose = pose
        self.last_good_frame = self.frame_count
        self.lost_frames = 0

    def _lost(self, features: Features, depth: DepthImage | None, reason: str) -> VOResult:
        self.lost_frames += 1
        self.losses += 1
        self.last_reason = reason
        if self.lost_frames >= self.config.lost_frames_to_reset:
            # start again from the last good pose; scale carries over as well as it can
            self.keyframe = self._new_keyframe(features, self._coasted_pose(), depth)
            if self.recent_steps:
                self.speed_before_loss = float(np.median(self.recent_steps))
            self.recent_steps = []
            self.lost_frames = 0
            self.reinitialisations += 1
            return VOResult(None, "reinitialised", metric=self.metric)
        return VOResult(None, "lost", metric=self.metric)

    # --- the per-frame step -------------------------------------------------------------------
    def process(self, features: Features, depth: DepthImage | None = None) -> VOResult:
        cfg = self.config
        self.frame_count += 1
        if depth is not None:
            self.metric = True
        if self.keyframe is None:
            self.keyframe = self._new_keyframe(features, self.pose, depth)
            return VOResult(self.pose.copy(), "keyframe", metric=self.metric)
        kf = self.keyframe
        pairs = self._match(kf.features, features)
        initialising = len(kf.points) < cfg.min_inliers
        if initialising and len(pairs) < cfg.min_matches:
            # no 3-D points to lose yet: start the two-view initialisation again from here
            self.keyframe = self._new_keyframe(features, self._coasted_pose(), depth)
            return VOResult(None, "initialising", len(pairs), 0, self.metric)
        if len(pairs) < cfg.min_matches:
            return self._lost(features, depth, f"{len(pairs)} matches")
        pa = kf.features.keypoints[pairs[:, 0]].astype(np.float64)
        pb = features.keypoints[pairs[:, 1]].astype(np.float64)
        E, inlier = self._essential_inliers(pa, pb)
        parallax = float(np.median(np.linalg.norm(pa - pb, axis=1)))
        if E is None or inlier.sum() < cfg.min_inliers:
            return self._lost(features, depth, f"{int(inlier.sum())} essential-matrix inliers")
        pairs, pa, pb = pairs[inlier], pa[inlier], pb[inlier]

        if initialising:
            return self._initialise(kf, features, pairs, pa, pb, E, parallax, depth)

        with_point = np.array([int(i) in kf.points for i in pairs[:, 0]])
        if with_point.sum() < cfg.min_inliers:
            return self._lost(features, depth, f"{int(with_point.sum())} tracked 3-D points")
        object_points = np.array([kf.points[int(i)] for i in pairs[with_point, 0]])
        image_points = pb[with_point]
        T_c_w = invert(self.pose)
        rvec, _ = cv2.Rodrigues(T_c_w[:3, :3])
        ok, rvec, tvec, pnp_inliers = cv2.solvePnPRansac(
            object_points, image_points, self.K, None, rvec=rvec, tvec=T_c_w[:3, 3].copy(),
            useExtrinsicGuess=True, iterationsCount=200,
            reprojectionError=cfg.pnp_threshold_px, confidence=0.999, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok or pnp_inliers is None or len(pnp_inliers) < cfg.min_inliers:
            return self._lost(features, depth, "PnP failed")
        keep = pnp_inliers.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(object_points[keep], image_points[keep], self.K, None,
                                          rvec, tvec)
        T = np.eye(4)
        T[:3, :3] = cv2.Rodrigues(rvec)[0]
        T[:3, 3] = tvec.ravel()
        pose = invert(T)
        if not self._plausible(pose, self.lost_frames + 1):
            return self._lost(features, depth, self.last_reason)
        self._accept(pose)
        tracked_fraction = len(keep) / max(1, len(kf.points))
        status = "tracking"
        if tracked_fraction < cfg.keyframe_tracked_fraction or parallax > cfg.keyframe_parallax_px:
            carried = {int(pairs[with_point][i, 1]): object_points[i] for i in keep}
            if depth is None:
                new = self._triangulate(kf, features, pose, pairs[~with_point])
                carried = {**new, **carried}
            if depth is not None or len(carried) >= cfg.min_inliers:
                self.keyframe = self._new_keyframe(features, pose, depth, carried)
                status = "keyframe"
        return VOResult(pose.copy(), status, len(pairs), len(keep), self.metric)

    def _initialise(self, kf: _Keyframe, features: Features, pairs, pa, pb, E, parallax,
                    depth: DepthImage | None) -> VOResult:
        """Two-view start from the essential matrix (the keyframe has no 3-D points)."""
        cfg = self.config
        if parallax < cfg.init_parallax_px:
            return VOResult(None, "initialising", len(pairs), len(pairs), self.metric)
        count, R, t, mask = cv2.recoverPose(E, pa, pb, self.K)
        if count < cfg.min_inliers:
            return VOResult(None, "initialising", len(pairs), int(count), self.metric)
        if self.speed_before_loss > 0:  # re-initialising: keep the speed we had
            self.unit_baseline = self.speed_before_loss * (self.frame_count - kf.frame)
        T_c2_c1 = np.eye(4)
        T_c2_c1[:3, :3] = R
        T_c2_c1[:3, 3] = t.ravel() * self.unit_baseline
        pose = kf.pose @ invert(T_c2_c1)
        points = self._triangulate(kf, features, pose, pairs[mask.ravel() > 0])
        if len(points) < cfg.min_inliers:
            return VOResult(None, "initialising", len(pairs), len(points), self.metric)
        self.pose = pose
        self.last_good_frame = self.frame_count
        self.lost_frames = 0
        self.recent_steps = []
        self.keyframe = self._new_keyframe(features, pose, None, points)
        return VOResult(pose.copy(), "keyframe", len(pairs), len(points), self.metric)


def body_pose(T_world_camera: np.ndarray) -> np.ndarray:
    """The optical-frame trajectory in REP-103 body axes: odom = the first camera's body frame
    (x forward, y left, z up), child = the camera's body frame (camera_link)."""
    B = np.eye(4)
    B[:3, :3] = OPTICAL_TO_BODY
    return B @ T_world_camera @ B.T
