"""Rigid-body and camera geometry shared by the simulator, training and evaluation (numpy).

Conventions: quaternions are (x, y, z, w), Hamilton, as geometry_msgs. A pose T_a_b maps
points from frame b into frame a: p_a = R @ p_b + t. Camera frames are optical (REP-103:
x right, y down, z forward); world frames are x forward, y left, z up.
"""
from __future__ import annotations

import numpy as np

# rotation taking optical-frame vectors into a body frame with x forward, y left, z up
OPTICAL_TO_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def quat_to_matrix(q) -> np.ndarray:
    """(..., 4) quaternions (x, y, z, w), normalised first, to (..., 3, 3) rotation matrices."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def matrix_to_quat(m) -> np.ndarray:
    """(..., 3, 3) rotation matrices to (..., 4) unit quaternions (x, y, z, w) with w >= 0."""
    m = np.asarray(m, dtype=np.float64)
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    candidates = np.stack([
        np.stack([1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0],
                  m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] - m[..., 1, 2]], -1),
        np.stack([m[..., 0, 1] + m[..., 1, 0], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
                  m[..., 1, 2] + m[..., 2, 1], m[..., 0, 2] - m[..., 2, 0]], -1),
        np.stack([m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                  1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2], m[..., 1, 0] - m[..., 0, 1]], -1),
        np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                  m[..., 1, 0] - m[..., 0, 1], 1 + trace], -1),
    ], -2)
    # pick the numerically largest of the four equivalent formulas
    best = np.argmax(np.stack([m[..., 0, 0], m[..., 1, 1], m[..., 2, 2], trace], -1), axis=-1)
    q = np.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., 3:4] < 0, -q, q)


def canonical_quaternion(q) -> np.ndarray:
    """Unit quaternions (..., 4) (x, y, z, w) on the w >= 0 hemisphere: q and -q are the same
    rotation, and a regression target must pick one. Ties at w == 0 go to the first nonzero of
    z, y, x being positive, so the choice is unique."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    sign = np.ones(q.shape[:-1])
    decided = np.zeros(q.shape[:-1], dtype=bool)
    for axis in (3, 2, 1, 0):
        component = q[..., axis]
        deciding = ~decided & (np.abs(component) > 1e-12)
        sign = np.where(deciding & (component < 0), -1.0, sign)
        decided |= deciding
    return q * sign[..., None]


def quat_conjugate(q) -> np.ndarray:
    """The inverse rotation of unit quaternions (x, y, z, w)."""
    q = np.asarray(q, dtype=np.float64)
    return np.concatenate([-q[..., :3], q[..., 3:]], axis=-1)


def slerp(q0, q1, fraction: float) -> np.ndarray:
    """Spherical linear interpolation between two unit quaternions along the shorter arc."""
    q0 = np.asarray(q0, dtype=np.float64) / np.linalg.norm(q0)
    q1 = np.asarray(q1, dtype=np.float64) / np.linalg.norm(q1)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: linear interpolation is exact to float precision
        q = q0 + fraction * (q1 - q0)
        return q / np.linalg.norm(q)
    angle = np.arccos(dot)
    return (np.sin((1 - fraction) * angle) * q0 + np.sin(fraction * angle) * q1) / np.sin(angle)


def yaw_to_quat(yaw: float) -> np.ndarray:
    return np.array([0.0, 0.0, np.sin(yaw / 2), np.cos(yaw / 2)])


def pose_matrix(position, quaternion) -> np.ndarray:
    """4x4 homogeneous transform from a translation and a quaternion."""
    transform = np.eye(4)
    transform[:3, :3] = quat_to_matrix(quaternion)
    transform[:3, 3] = position
    return transform


def invert(transform: np.ndarray) -> np.ndarray:
    inverse = np.eye(4)
    rotation = transform[:3, :3]
    inverse[:3, :3] = rotation.T
    inverse[:3, 3] = -rotation.T @ transform[:3, 3]
    return inverse


def rotation_angle_deg(q1, q2) -> np.ndarray:
    """Angle between orientations, 2*acos|q1.q2| (sign- and scale-invariant), degrees."""
    q1 = np.asarray(q1, dtype=np.float64)
    q2 = np.asarray(q2, dtype=np.float64)
    q1 = q1 / np.linalg.norm(q1, axis=-1, keepdims=True)
    q2 = q2 / np.linalg.norm(q2, axis=-1, keepdims=True)
    dot = np.clip(np.abs(np.sum(q1 * q2, axis=-1)), 0.0, 1.0)
    return np.degrees(2.0 * np.arccos(dot))


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """HxW metric depth (z along the optical axis) -> HxWx3 points in the camera frame."""
    height, width = depth.shape
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    x = (u - K[0, 2]) / K[0, 0] * depth
    y = (v - K[1, 2]) / K[1, 1] * depth
    return np.stack([x, y, depth], axis=-1)


def project(points: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) camera-frame points -> (N, 2) pixel coordinates and their depth z."""
    z = points[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * points[:, 0] / z + K[0, 2]
        v = K[1, 1] * points[:, 1] / z + K[1, 2]
    return np.stack([u, v], axis=-1), z


def transform_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ transform[:3, :3].T + transform[:3, 3]
