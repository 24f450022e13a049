"""Real depth from a calibrated stereo pair sequence: the stereo rig is calibrated from the
chessboard the pairs show (OpenCV's stereo calibration pairs in the Debian package opencv-doc,
left01.jpg/right01.jpg ..., an indoor office), each pair rectified and matched densely (semi-global
block matching) with a left-right consistency check, and depth = f * baseline / disparity in the
rectified left image. Used by scripts/make_stereo_depth.py as real indoor training depth for
`train depth --sparse`.

The board's square size is not published with those images, so metric scale rests on an
assumed `square_size`; depth is right up to that one factor (the depth training's sparse term
is a scale-invariant loss and its validation is median-scaled)."""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

import cv2
import numpy as np

BOARD = (9, 6)  # inner corners of the chessboard in opencv-doc's stereo pairs


@dataclass
class StereoCalibration:
    K_left: np.ndarray
    dist_left: np.ndarray
    K_right: np.ndarray
    dist_right: np.ndarray
    R: np.ndarray  # right camera from left camera
    T: np.ndarray  # in the units of square_size
    size: tuple[int, int]  # width, height
    rms_px: float
    pairs_used: int


@dataclass
class RectifiedDepth:
    image: np.ndarray  # rectified left image, as loaded (BGR or gray)
    depth: np.ndarray  # float32 metres, NaN where stereo gave no consistent match


def stereo_pairs(folder: str) -> list[tuple[str, str]]:
    """(leftNN, rightNN) image paths of a folder, in number order."""
    pairs = []
    for left in glob.glob(os.path.join(folder, "left[0-9]*.*")):
        match = re.fullmatch(r"left(\d+)(\.\w+)", os.path.basename(left))
        right = os.path.join(folder, f"right{match.group(1)}{match.group(2)}") if match else ""
        if match and os.path.isfile(right):
            pairs.append((int(match.group(1)), left, right))
    return [(left, right) for _, left, right in sorted(pairs)]


def board_corners(gray: np.ndarray, board: tuple[int, int] = BOARD) -> np.ndarray | None:
    """Sub-pixel inner corners (N x 2, row by row) or None where the whole board is not seen."""
    found, corners = cv2.findChessboardCorners(
        gray, board, flags=cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE)
    if not found:
        return None
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3)
    return cv2.cornerSubPix(gray, corners, (11, 11), (-1, -1), criteria).reshape(-1, 2)


def _gray(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    return image


def calibrate_stereo(pairs: list[tuple[str, str]], square_size: float,
                     board: tuple[int, int] = BOARD) -> StereoCalibration:
    """Both cameras' intrinsics and distortion and their relative pose from the pairs in which
    both views see the whole board."""
    grid = np.zeros((board[0] * board[1], 3), np.float32)
    grid[:, :2] = np.mgrid[0:board[0], 0:board[1]].T.reshape(-1, 2) * square_size
    objects, lefts, rights, size = [], [], [], None
    for left_path, right_path in pairs:
        left, right = _gray(left_path), _gray(right_path)
        if size is None:
            size = (left.shape[1], left.shape[0])
        if (left.shape[1], left.shape[0]) != size or (right.shape[1], right.shape[0]) != size:
            raise ValueError(f"{left_path}/{right_path}: every image must be {size[0]}x{size[1]}")
        corners_left, corners_right = board_corners(left, board), board_corners(right, board)
        if corners_left is not None and corners_right is not None:
            objects.append(grid)
            lefts.append(corners_left.astype(np.float32))
            rights.append(corners_right.astype(np.float32))
    if len(objects) < 3:
        raise ValueError(f"the board ({board[0]}x{board[1]} inner corners) is seen in both views "
                         f"of only {len(objects)} pairs; at least 3 are needed")
    _, K_left, dist_left, _, _ = cv2.calibrateCamera(objects, lefts, size, None, None)
    _, K_right, dist_right, _, _ = cv2.calibrateCamera(objects, rights, size, None, None)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-6)
    rms, K_left, dist_left, K_right, dist_right, R, T, _, _ = cv2.stereoCalibrate(
        objects, lefts, rights, K_left, dist_left, K_right, dist_right, size,
        criteria=criteria, flags=cv2.CALIB_USE_INTRINSIC_GUESS)
    return StereoCalibration(K_left, dist_left, K_right, dist_right, R, T.reshape(3), size,
                             float(rms), len(objects))


class StereoRectifier:
    """Rectifies pairs of a calibrated rig and turns them into depth in the rectified left view."""

    def __init__(self, calibration: StereoCalibration, min_depth: float = 0.3):
        c = calibration
        R1, R2, P1, P2, _, _, _ = cv2.stereoRectify(
            c.K_left, c.dist_left, c.K_right, c.dist_right, c.size, c.R, c.T.reshape(3, 1), alpha=0,
            flags=cv2.CALIB_ZERO_DISPARITY)
        if abs(P2[1, 3]) > abs(P2[0, 3]):
            raise ValueError("the rig is vertical; only side-by-side stereo is handled")
        if P2[0, 3] > 0:
            raise ValueError("the 'right' camera is left of the 'left' one: swap the pairs")
        self.maps = [cv2.initUndistortRectifyMap(K, dist, R, P, c.size, cv2.CV_32FC1)
                     for K, dist, R, P in ((c.K_left, c.dist_left, R1, P1),
                                           (c.K_right, c.dist_right, R2, P2))]
        self.K = P1[:, :3].copy()  # intrinsics of the rectified left image
        self.focal = float(P1[0, 0])
        self.baseline = float(abs(P2[0, 3] / P2[0, 0]))  # in the calibration's length unit
        # the largest disparity that can occur: a point at min_depth
        largest = self.focal * self.baseline / min_depth
        self.num_disparities = int(min(c.size[0] // 2, max(16, np.ceil(largest / 16) * 16)))

    def rectify(self, image: np.ndarray, which: int) -> np.ndarray:
        map_x, map_y = self.maps[which]
        return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR)

    def _matcher(self) -> cv2.StereoSGBM:
        block = 5
        return cv2.StereoSGBM_create(
            minDisparity=0, numDisparities=self.num_disparities, blockSize=block,
            P1=8 * block * block, P2=32 * block * block, disp12MaxDiff=-1, uniquenessRatio=10,
            speckleWindowSize=100, speckleRange=2, mode=cv2.STEREO_SGBM_MODE_HH)

    def disparity(self, left: np.ndarray, right: np.ndarray, max_disagreement: float = 1.0):
        """Left-view disparity (pixels, NaN where unmatched or where the right view's own
        matching disagrees by more than `max_disagreement`)."""
        matcher, pad = self._matcher(), self.num_disparities

        def match(first, second):
            # SGBM leaves the first num_disparities columns unmatched: pad them on
            padded = [cv2.copyMakeBorder(i, 0, 0, pad, 0, cv2.BORDER_CONSTANT, value=0)
                      for i in (first, second)]
            return matcher.compute(*padded)[:, pad:].astype(np.float32) / 16.0
        forward = match(left, right)
        # the right view's disparity: match the mirrored pair the other way round
        backward = match(np.ascontiguousarray(right[:, ::-1]),
                         np.ascontiguousarray(left[:, ::-1]))[:, ::-1]
        height, width = forward.shape
        columns = np.arange(width, dtype=np.float32)[None, :] - forward
        target = np.clip(np.round(columns).astype(int), 0, width - 1)
        other = backward[np.arange(height)[:, None], target]
        valid = (forward > 0) & (columns >= 0) & (other > 0) & \
            (np.abs(forward - other) <= max_disagreement)
        return np.where(valid, forward, np.nan).astype(np.float32)

    def depth(self, left_image: np.ndarray, right_image: np.ndarray) -> RectifiedDepth:
        left, right = self.rectify(left_image, 0), self.rectify(right_image, 1)
        gray = [cv2.cvtColor(i, cv2.COLOR_BGR2GRAY) if i.ndim == 3 else i for i in (left, right)]
        disparity = self.disparity(*gray)
        depth = (self.focal * self.baseline / disparity).astype(np.float32)
        return RectifiedDepth(left, depth)
