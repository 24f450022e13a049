"""Monocular visual odometry on local features (LIFT by default), with metric scale from a depth
image when one is available. Numpy + OpenCV; vo_node and `dl-perception eval vo` wrap it.

Per frame:
1. match the frame to the current keyframe: mutual nearest neighbours with Lowe's ratio test;
2. initialisation (no 3-D points yet): with a depth image, the keyframe's keypoints are
   back-projected at their measured depth (metric); without, the matches are verified by an
   essential matrix with RANSAC (OpenCV, 5-point) and, once the median image motion shows
   enough parallax, the pose is recovered from it (cv2.recoverPose) and the inliers are
   triangulated; that first baseline sets the unit (the last known speed after a
   re-initialisation), so the trajectory is up to scale;
3. tracking: camera pose from the map points of the matched keyframe keypoints by PnP with
   RANSAC, refined on inliers; the map carries the scale from frame to frame;
4. keyframes: when few of the keyframe's points are still tracked, or after a long parallax,
   the frame becomes the keyframe. With depth its points are the depth measurements. Without,
   the local map grows: PnP inliers carry their points over, other matches are triangulated
   from all their sightings (cheirality, reprojection and parallax checks; the rest wait for a
   longer baseline), points seen again are re-triangulated, and a windowed bundle adjustment
   refines the recent keyframes and their points, dropping those that do not fit;
5. tracking loss: too few matches or inliers, or a pose jump beyond what the recent motion
   allows, is reported and not published; after `lost_frames_to_reset` such frames the odometry
   re-initialises from the last good pose instead of publishing a wild one.

Poses are T_world_camera (optical frame); the world is the first camera's optical frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..core.geometry import OPTICAL_TO_BODY, invert
from ..core.matching import mutual_nearest_neighbours


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
    ba_window: int = 6  # keyframes in the local bundle adjustment (monocular); 0 = off
    ba_iterations: int = 20
    retriangulate: bool = True
    map_keyframes: int = 20  # keyframes (and the points they see) kept in the map


@dataclass
class Features:
    keypoints: np.ndarray  # N x 2 pixels
    descriptors: np.ndarray  # N x D

    def __post_init__(self):
        """Shapes are checked here, before a frame can reach the VO state. Empty arrays of any
        shape become 0 x 2 and 0 x D: extractors return (0,) on a featureless (e.g. black)
        frame, depending on the OpenCV build."""
        keypoints = np.asarray(self.keypoints, dtype=np.float64)
        descriptors = np.asarray(self.descriptors)
        if keypoints.size == 0:
            keypoints = keypoints.reshape(0, 2)
        if descriptors.size == 0:
            descriptors = descriptors.reshape(0, descriptors.shape[-1] if descriptors.ndim == 2
                                              else 0)
        if keypoints.ndim != 2 or keypoints.shape[1] != 2:
            raise ValueError(f"keypoints must be N x 2 pixels, got shape {keypoints.shape}")
        if descriptors.ndim != 2 or len(descriptors) != len(keypoints):
            raise ValueError(f"descriptors must be N x D for {len(keypoints)} keypoints, got "
                             f"shape {descriptors.shape}")
        if not np.isfinite(keypoints).all():
            raise ValueError("keypoints must be finite")
        self.keypoints, self.descriptors = keypoints, descriptors


@dataclass
class DepthImage:
    """Metric depth along the optical axis on its own pixel grid (intrinsics K)."""

    depth: np.ndarray
    K: np.ndarray

    def __post_init__(self):
        if np.ndim(self.depth) != 2 or np.shape(self.K) != (3, 3):
            raise ValueError(f"depth must be an H x W image with 3 x 3 intrinsics, got shapes "
                             f"{np.shape(self.depth)} and {np.shape(self.K)}")


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
    serial: int  # keyframe number
    points: dict = field(default_factory=dict)  # keypoint index -> map point id
    # keypoint index -> its sightings [(keyframe serial, pixel), ...] while it has no 3-D point
    # yet: it is triangulated from the first one once the baseline gives enough parallax
    tracks: dict = field(default_factory=dict)


class _Map:
    """Map points (world positions) with their keyframe observations, and keyframe poses."""

    def __init__(self):
        self.positions: dict[int, np.ndarray] = {}
        self.observations: dict[int, list] = {}  # point id -> [(keyframe serial, pixel), ...]
        self.poses: dict[int, np.ndarray] = {}  # keyframe serial -> T_world_camera
        self.next_id = 0

    def add(self, position: np.ndarray, observations: list) -> int:
        self.positions[self.next_id] = np.asarray(position, np.float64)
        self.observations[self.next_id] = list(observations)
        self.next_id += 1
        return self.next_id - 1

    def remove(self, point_id: int) -> None:
        self.positions.pop(point_id, None)
        self.observations.pop(point_id, None)

    def snapshot(self) -> tuple:
        """What a step may change in place: the containers, each point's observation list and
        the keyframe pose matrices (the bundle adjustment writes into them)."""
        return (dict(self.positions), {p: list(obs) for p, obs in self.observations.items()},
                {k: (pose, pose.copy()) for k, pose in self.poses.items()}, self.next_id)

    def restore(self, snapshot: tuple) -> None:
        self.positions, self.observations, poses, self.next_id = snapshot
        for pose, saved in poses.values():
            pose[:] = saved  # the same matrices, which the keyframes share
        self.poses = {k: pose for k, (pose, _) in poses.items()}

    def forget_before(self, serial: int) -> None:
        """Drop keyframes older than `serial` and the points no longer seen since."""
        for old in [k for k in self.poses if k < serial]:
            del self.poses[old]
        for point_id in [p for p, obs in self.observations.items() if obs[-1][0] < serial]:
            self.remove(point_id)


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
        self.map = _Map()
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
                      carried: dict | None = None, new_points: dict | None = None,
                      tracks: dict | None = None) -> _Keyframe:
        """The frame becomes the keyframe. Its 3-D points: with depth, its own depth readings;
        without, `carried` (keypoint index -> map point id, now observed here too) and
        `new_points` (keypoint index -> (world point, earlier sightings)) added to the map."""
        self.keyframes += 1
        serial = self.keyframes
        keyframe = _Keyframe(features, pose.copy(), self.frame_count, serial,
                             tracks=dict(tracks or {}))
        self.map.poses[serial] = keyframe.pose
        self.map.forget_before(serial - self.config.map_keyframes)
        keypoints = features.keypoints.astype(np.float64)
        if depth is not None:
            z = depth_at(depth, features.keypoints, self.K, self.config.max_depth_m)
            valid = np.nonzero(np.isfinite(z))[0]
            world = _backproject(keypoints[valid], z[valid], self.K) @ pose[:3, :3].T + pose[:3, 3]
            new_points = {int(i): (point, []) for i, point in zip(valid, world)}
            carried = {}
        for index, point_id in (carried or {}).items():
            if point_id in self.map.positions:
                self.map.observations[point_id].append((serial, keypoints[index]))
                keyframe.points[index] = point_id
        if carried and self.config.retriangulate:
            self._retriangulate(list(keyframe.points.values()))
        for index, (point, sightings) in (new_points or {}).items():
            keyframe.points[index] = self.map.add(point, sightings + [(serial, keypoints[index])])
        return keyframe

    def _triangulate(self, tracks: list) -> tuple[np.ndarray, np.ndarray]:
        """World points from their sightings [(T_world_camera, pixel), ...] by linear
        (DLT) triangulation over all of them, and whether each is trustworthy: in front of every
        camera, reprojected within `pnp_threshold_px` in each, and seen under at least
        `min_triangulation_angle_deg` of parallax between the first and the last sighting."""
        cfg = self.config
        K_inv = np.linalg.inv(self.K)
        world = np.full((len(tracks), 3), np.nan)
        ok = np.zeros(len(tracks), bool)
        min_cosine = math.cos(math.radians(cfg.min_triangulation_angle_deg))
        for index, track in enumerate(tracks):
            T_camera_world = [invert(pose) for pose, _ in track]
            rows = []
            for T, (_, pixel) in zip(T_camera_world, track):
                x, y, _ = K_inv @ np.append(pixel, 1.0)
                rows += [x * T[2] - T[0], y * T[2] - T[1]]
            _, _, Vt = np.linalg.svd(np.array(rows))
            if abs(Vt[-1, 3]) < 1e-12:
                continue
            point = Vt[-1, :3] / Vt[-1, 3]
            camera = np.array([T[:3, :3] @ point + T[:3, 3] for T in T_camera_world])
            if np.any(camera[:, 2] <= 0):
                continue
            projected = camera @ self.K.T
            error = np.linalg.norm(projected[:, :2] / projected[:, 2:3]
                                   - np.array([pixel for _, pixel in track]), axis=1)
            ray_first, ray_last = point - track[0][0][:3, 3], point - track[-1][0][:3, 3]
            cosine = ray_first @ ray_last / (np.linalg.norm(ray_first)
                                             * np.linalg.norm(ray_last) + 1e-12)
            world[index] = point
            ok[index] = error.max() < cfg.pnp_threshold_px and cosine <= min_cosine
        return world, ok

    def _grow_map(self, kf: _Keyframe, features: Features, pose: np.ndarray,
                  pairs: np.ndarray) -> tuple[dict, dict]:
        """New 3-D points for keyframe/frame matches without one, triangulated from all the
        keyframes that saw the keypoint (the first gives the longest baseline); the others keep
        their sightings for a later keyframe. Returns (frame keypoint index -> (world point,
        sightings)) and (frame keypoint index -> sightings)."""
        tracks = []
        for i in pairs[:, 0].tolist():
            sightings = [s for s in kf.tracks.get(i, []) if s[0] in self.map.poses]
            tracks.append(sightings + [(kf.serial, kf.features.keypoints[i].astype(np.float64))])
        if not tracks:
            return {}, {}
        pixels = features.keypoints[pairs[:, 1]].astype(np.float64)
        world, ok = self._triangulate([[(self.map.poses[s], p) for s, p in track] + [(pose, pixel)]
                                       for track, pixel in zip(tracks, pixels)])
        frame_index = pairs[:, 1].tolist()
        points = {frame_index[k]: (world[k], tracks[k]) for k in np.nonzero(ok)[0]}
        waiting = {frame_index[k]: tracks[k] for k in np.nonzero(~ok)[0]}
        return points, waiting

    def _retriangulate(self, point_ids: list) -> None:
        """Points again from all their sightings: the longer baseline cuts the depth error (and
        the bias of having been accepted at the first parallax that passed)."""
        tracks = [[(self.map.poses[s], pixel) for s, pixel in self.map.observations[p]
                   if s in self.map.poses] for p in point_ids]
        usable = [k for k, track in enumerate(tracks) if len(track) > 2]
        if not usable:
            return
        world, ok = self._triangulate([tracks[k] for k in usable])
        for k, point, good in zip(usable, world, ok):
            if good:
                self.map.positions[point_ids[k]] = point

    def _bundle_adjust(self) -> None:
        """Local bundle adjustment (monocular): keyframe poses of the window but its two oldest
        (they fix position, orientation and scale) and the points seen at least twice in it,
        by robust (Huber) least squares on the reprojection errors; points that still do not
        fit are dropped."""
        from scipy.optimize import least_squares
        from scipy.sparse import lil_matrix

        cfg = self.config
        serials = sorted(self.map.poses)[-cfg.ba_window:]
        if len(serials) < 3:
            return
        free = {serial: slot for slot, serial in enumerate(serials[2:])}
        in_window = set(serials)
        point_ids = [p for p, obs in self.map.observations.items()
                     if sum(s in in_window for s, _ in obs) >= 2]
        if len(point_ids) < cfg.min_inliers:
            return
        pose_slot, point_slot, pixels, fixed = [], [], [], []
        for slot, point_id in enumerate(point_ids):
            for serial, pixel in self.map.observations[point_id]:
                if serial in in_window:
                    pose_slot.append(free.get(serial, -1))
                    point_slot.append(slot)
                    pixels.append(pixel)
                    fixed.append(invert(self.map.poses[serial]))
        pose_slot, point_slot = np.array(pose_slot), np.array(point_slot)
        pixels, fixed = np.array(pixels), np.array(fixed)
        x0 = []
        for serial in serials[2:]:
            T = invert(self.map.poses[serial])
            x0 += [cv2.Rodrigues(T[:3, :3])[0].ravel(), T[:3, 3]]
        x0 = np.concatenate(x0 + [self.map.positions[p] for p in point_ids])
        n_pose = 6 * len(free)

        def residuals(x):
            T = fixed.copy()
            for slot in range(len(free)):
                rows = pose_slot == slot
                T[rows, :3, :3] = cv2.Rodrigues(x[6 * slot:6 * slot + 3])[0]
                T[rows, :3, 3] = x[6 * slot + 3:6 * slot + 6]
            points = x[n_pose:].reshape(-1, 3)[point_slot]
            camera = np.einsum("nij,nj->ni", T[:, :3, :3], points) + T[:, :3, 3]
            projected = camera @ self.K.T
            return (projected[:, :2] / np.maximum(projected[:, 2:3], 1e-6) - pixels).ravel()

        sparsity = lil_matrix((2 * len(pixels), len(x0)), dtype=int)
        for row, (pose_index, point_index) in enumerate(zip(pose_slot, point_slot)):
            if pose_index >= 0:
                sparsity[2 * row:2 * row + 2, 6 * pose_index:6 * pose_index + 6] = 1
            sparsity[2 * row:2 * row + 2, n_pose + 3 * point_index:n_pose + 3 * point_index + 3] = 1
        solution = least_squares(residuals, x0, jac_sparsity=sparsity, loss="huber",
                                 f_scale=cfg.pnp_threshold_px, max_nfev=cfg.ba_iterations,
                                 method="trf")  # x_scale="jac" stalled short of the minimum
        x = solution.x
        for serial, slot in free.items():
            T = np.eye(4)
            T[:3, :3] = cv2.Rodrigues(x[6 * slot:6 * slot + 3])[0]
            T[:3, 3] = x[6 * slot + 3:6 * slot + 6]
            self.map.poses[serial][:] = invert(T)  # in place: the keyframes share the matrix
        for point_id, point in zip(point_ids, x[n_pose:].reshape(-1, 3)):
            self.map.positions[point_id] = point
        error = np.linalg.norm(residuals(x).reshape(-1, 2), axis=1)
        for slot in np.unique(point_slot[error > 2 * cfg.pnp_threshold_px]):
            self.map.remove(point_ids[slot])
        self.keyframe.points = {i: p for i, p in self.keyframe.points.items()
                                if p in self.map.positions}
        self.pose = self.keyframe.pose.copy()

    def _solve_pnp(self, object_points: np.ndarray, image_points: np.ndarray):
        """T_camera_world and the inlier indices from 3-D/2-D matches, or None: RANSAC over
        SQPnP, then the reprojection error of the inliers minimised. OpenCV 5.0's
        Levenberg-Marquardt PnP (SOLVEPNP_ITERATIVE, solvePnPRefineLM) is not used: it returned
        poses 10^8 m away now and then, depending on what earlier calls left behind."""
        from scipy.optimize import least_squares

        cfg = self.config
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(
            object_points, image_points, self.K, None, iterationsCount=200,
            reprojectionError=cfg.pnp_threshold_px, confidence=0.999, flags=cv2.SOLVEPNP_SQPNP)
        if not ok or inliers is None or len(inliers) < cfg.min_inliers:
            return None
        keep = inliers.ravel()
        points, pixels = object_points[keep], image_points[keep]

        def residuals(x):
            camera = points @ cv2.Rodrigues(x[:3])[0].T + x[3:]
            projected = camera @ self.K.T
            return (projected[:, :2] / np.maximum(projected[:, 2:3], 1e-6) - pixels).ravel()

        x = least_squares(residuals, np.concatenate([rvec.ravel(), tvec.ravel()]),
                          method="lm").x
        if not np.isfinite(x).all():
            return None
        T = np.eye(4)
        T[:3, :3] = cv2.Rodrigues(x[:3])[0]
        T[:3, 3] = x[3:]
        return T, keep

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
        """One frame. A step that raises leaves the odometry as it was before the frame."""
        if (self.keyframe is not None and len(features.keypoints)
                and len(self.keyframe.features.keypoints)
                and features.descriptors.shape[1] != self.keyframe.features.descriptors.shape[1]):
            raise ValueError(f"descriptors of length {features.descriptors.shape[1]}, the "
                             f"keyframe's have {self.keyframe.features.descriptors.shape[1]}")
        attributes, map_state = dict(self.__dict__), self.map.snapshot()
        keyframe_maps = (self.keyframe.points, self.keyframe.tracks) if self.keyframe else None
        try:
            return self._step(features, depth)
        except BaseException:
            self.__dict__.update(attributes)
            self.map.restore(map_state)
            if keyframe_maps:
                self.keyframe.points, self.keyframe.tracks = keyframe_maps
            raise

    def _step(self, features: Features, depth: DepthImage | None) -> VOResult:
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
        parallax = float(np.median(np.linalg.norm(pa - pb, axis=1)))
        if initialising:
            E, inlier = self._essential_inliers(pa, pb)
            if E is None or inlier.sum() < cfg.min_inliers:
                return self._lost(features, depth, f"{int(inlier.sum())} essential-matrix inliers")
            return self._initialise(kf, features, pairs[inlier], pa[inlier], pb[inlier], E,
                                    parallax, depth)

        # tracking: PnP's RANSAC rejects the wrong matches; new points pass the reprojection
        # test of the triangulation
        with_point = np.array([int(i) in kf.points for i in pairs[:, 0]])
        if with_point.sum() < cfg.min_inliers:
            return self._lost(features, depth, f"{int(with_point.sum())} tracked 3-D points")
        point_ids = [kf.points[int(i)] for i in pairs[with_point, 0]]
        object_points = np.array([self.map.positions[p] for p in point_ids])
        solved = self._solve_pnp(object_points, pb[with_point])
        if solved is None:
            return self._lost(features, depth, "PnP failed")
        T, keep = solved
        pose = invert(T)
        if not self._plausible(pose, self.lost_frames + 1):
            return self._lost(features, depth, self.last_reason)
        self._accept(pose)
        tracked_fraction = len(keep) / max(1, len(kf.points))
        status = "tracking"
        if tracked_fraction < cfg.keyframe_tracked_fraction or parallax > cfg.keyframe_parallax_px:
            carried = {int(pairs[with_point][i, 1]): point_ids[i] for i in keep}
            new, waiting = {}, {}
            if depth is None:
                new, waiting = self._grow_map(kf, features, pose, pairs[~with_point])
            if depth is not None or len(carried) + len(new) >= cfg.min_inliers:
                self.keyframe = self._new_keyframe(features, pose, depth, carried, new, waiting)
                if depth is None and cfg.ba_window:
                    self._bundle_adjust()
                    pose = self.pose
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
        points, waiting = self._grow_map(kf, features, pose, pairs[mask.ravel() > 0])
        if len(points) < cfg.min_inliers:
            return VOResult(None, "initialising", len(pairs), len(points), self.metric)
        self.pose = pose
        self.last_good_frame = self.frame_count
        self.lost_frames = 0
        self.recent_steps = []
        self.keyframe = self._new_keyframe(features, pose, None, {}, points, waiting)
        return VOResult(pose.copy(), "keyframe", len(pairs), len(points), self.metric)


def body_pose(T_world_camera: np.ndarray) -> np.ndarray:
    """The optical-frame trajectory in REP-103 body axes: odom = the first camera's body frame
    (x forward, y left, z up), child = the camera's body frame (camera_link)."""
    B = np.eye(4)
    B[:3, :3] = OPTICAL_TO_BODY
    return B @ T_world_camera @ B.T
