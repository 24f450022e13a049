"""Real depth from calibrated stereo (dl_perception/datasets/stereo.py,
scripts/make_stereo_depth.py): a synthetic rig with a known disparity, then opencv-doc's real
chessboard pairs (calibration, rectification, depth against the board's own geometry)."""
import os

import cv2
import numpy as np
import pytest

from dl_perception.datasets.stereo import (BOARD, StereoCalibration, StereoRectifier,
                                           board_corners, calibrate_stereo, stereo_pairs)

OPENCV_DATA = "/usr/share/doc/opencv-doc/examples/data"
needs_opencv_doc = pytest.mark.skipif(not os.path.isfile(os.path.join(OPENCV_DATA, "left01.jpg")),
                                      reason="Debian package opencv-doc is not installed")


def test_known_disparity_gives_known_depth():
    """A textured plane seen by an ideal rig (no distortion, 0.1 m baseline) 40 px apart:
    depth f * B / d = 500 * 0.1 / 40 = 1.25 m wherever the pair is matched."""
    rng = np.random.default_rng(0)
    texture = cv2.resize(rng.integers(0, 256, (80, 134)).astype(np.uint8), (400, 240),
                         interpolation=cv2.INTER_CUBIC)
    left = np.ascontiguousarray(texture[:, 40:360])
    right = np.ascontiguousarray(texture[:, 80:400])  # a scene point at left x sits at x - 40
    K = np.array([[500.0, 0, 159.5], [0, 500.0, 119.5], [0, 0, 1]])
    rig = StereoCalibration(K, np.zeros(5), K, np.zeros(5), np.eye(3), np.array([-0.1, 0, 0]),
                            (320, 240), 0.0, 0)
    rectifier = StereoRectifier(rig, min_depth=0.5)
    result = rectifier.depth(left, right)
    valid = np.isfinite(result.depth)
    assert valid[:, 45:].mean() > 0.9
    assert np.abs(result.depth[valid] / 1.25 - 1).max() < 0.03
    assert not valid[:, :30].any()  # no partner there: never a guessed depth


def test_swapped_cameras_are_refused():
    K = np.array([[500.0, 0, 159.5], [0, 500.0, 119.5], [0, 0, 1]])
    rig = StereoCalibration(K, np.zeros(5), K, np.zeros(5), np.eye(3), np.array([0.1, 0, 0]),
                            (320, 240), 0.0, 0)
    with pytest.raises(ValueError, match="swap"):
        StereoRectifier(rig)


def test_pairs_are_left_right_numbered_images_only(tmp_path):
    for name in ("left01.jpg", "right01.jpg", "left02.jpg", "left10.png", "right10.png",
                 "aloeL.jpg", "aloeR.jpg", "left.jpg", "right.jpg"):
        (tmp_path / name).write_bytes(b"")
    assert [(os.path.basename(a), os.path.basename(b)) for a, b in stereo_pairs(tmp_path)] == \
        [("left01.jpg", "right01.jpg"), ("left10.png", "right10.png")]


@pytest.fixture(scope="module")
def office_rig():
    return calibrate_stereo(stereo_pairs(OPENCV_DATA), square_size=0.03)


@needs_opencv_doc
def test_real_rig_calibrates_side_by_side(office_rig):
    assert office_rig.pairs_used >= 10
    assert office_rig.rms_px < 1.0
    direction = office_rig.T / np.linalg.norm(office_rig.T)
    assert direction[0] < -0.95  # right camera to the right of the left one


@needs_opencv_doc
def test_real_pair_rectifies_and_its_depth_matches_the_board(office_rig):
    rectifier = StereoRectifier(office_rig)
    left_path, right_path = stereo_pairs(OPENCV_DATA)[0]
    left, right = cv2.imread(left_path, cv2.IMREAD_GRAYSCALE), \
        cv2.imread(right_path, cv2.IMREAD_GRAYSCALE)
    corners = [board_corners(rectifier.rectify(image, which))
               for which, image in enumerate((left, right))]
    assert corners[0] is not None and corners[1] is not None
    # rectified: the same corner on the same row in both views
    assert np.median(np.abs(corners[0][:, 1] - corners[1][:, 1])) < 0.5
    # the board's plane from its corners in the rectified left view (pose from the known grid)
    grid = np.zeros((BOARD[0] * BOARD[1], 3), np.float32)
    grid[:, :2] = np.mgrid[0:BOARD[0], 0:BOARD[1]].T.reshape(-1, 2) * 0.03
    ok, rvec, tvec = cv2.solvePnP(grid, corners[0], rectifier.K, None)
    assert ok
    R = cv2.Rodrigues(rvec)[0]
    normal, offset = R[:, 2], float(R[:, 2] @ tvec.ravel())
    result = rectifier.depth(left, right)
    inside = np.zeros(left.shape, np.uint8)
    cv2.fillConvexPoly(inside, cv2.convexHull(corners[0].astype(np.int32)), 1)
    ys, xs = np.nonzero(inside)
    rays = np.linalg.solve(rectifier.K, np.stack([xs, ys, np.ones_like(xs)]).astype(float))
    plane_depth = offset / (normal @ rays)
    stereo_depth = result.depth[ys, xs]
    valid = np.isfinite(stereo_depth)
    assert valid.mean() > 0.5
    error = np.abs(stereo_depth[valid] / plane_depth[valid] - 1)
    assert np.median(error) < 0.02 and np.percentile(error, 90) < 0.06


@needs_opencv_doc
def test_script_writes_a_depth_folder_the_depth_readers_take(tmp_path):
    import subprocess
    import sys

    from dl_perception.core.paths import REPO_DIR
    from dl_perception.datasets.depth import load_sample_depth, read_depth_dataset
    out = tmp_path / "office"
    result = subprocess.run([sys.executable, os.path.join(REPO_DIR, "scripts",
                                                          "make_stereo_depth.py"), str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "13 pairs, board seen in 13" in result.stdout
    samples = read_depth_dataset(str(out))
    assert len(samples) == 13 and not any("aloe" in s.image for s in samples)
    depth = np.nan_to_num(load_sample_depth(samples[0]))
    known = depth[depth > 0]
    assert known.size > 0.2 * depth.size and 0.25 < np.median(known) < 3.0


def test_pairs_without_the_board_are_a_clear_error(tmp_path):
    rng = np.random.default_rng(2)
    for index in range(1, 4):
        for side in ("left", "right"):
            cv2.imwrite(str(tmp_path / f"{side}{index:02d}.png"),
                        rng.integers(0, 256, (120, 160), dtype=np.uint8))
    with pytest.raises(ValueError, match="only 0 pairs"):
        calibrate_stereo(stereo_pairs(tmp_path), square_size=0.03)
