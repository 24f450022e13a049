"""Sparse depth up to scale from two video frames with a known camera
(dl_perception/datasets/two_view.py, scripts/make_video_depth.py)."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dl_perception.core.paths import REPO_DIR
from dl_perception.datasets.two_view import draw_depth_discs, two_view_depth

K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])


def _project(points, R, t):
    camera = points @ R.T + t
    pixels = camera @ K.T
    return pixels[:, :2] / pixels[:, 2:3], camera[:, 2]


def test_known_motion_gives_depth_up_to_one_factor():
    """Points 2-6 m away, the camera moved 0.3 m sideways and turned 5 degrees: the recovered
    depths are the true ones times one factor (the unknown baseline), mismatches dropped."""
    rng = np.random.default_rng(1)
    points = np.column_stack([rng.uniform(-2, 2, 400), rng.uniform(-1.5, 1.5, 400),
                              rng.uniform(2, 6, 400)])
    R = cv2.Rodrigues(np.array([0.0, np.radians(5), 0.0]))[0]
    t = np.array([-0.3, 0.02, 0.05])
    pixels_a, depth_a = _project(points, np.eye(3), np.zeros(3))
    pixels_b, _ = _project(points, R, t)
    pixels_a = pixels_a + rng.normal(0, 0.2, pixels_a.shape)
    pixels_b = pixels_b + rng.normal(0, 0.2, pixels_b.shape)
    wrong = rng.permutation(400)[:40]  # 10 % of the matches point elsewhere
    pixels_b[wrong] = rng.uniform([0, 0], [640, 480], (40, 2))
    kept, depth = two_view_depth(pixels_a, pixels_b, K)
    assert len(kept) > 300
    index = [int(np.argmin(np.linalg.norm(pixels_a - p, axis=1))) for p in kept]
    assert len(set(index) & set(wrong.tolist())) <= 2  # RANSAC and the reprojection test
    ratio = depth / depth_a[index]
    assert np.median(ratio) == pytest.approx(1 / np.linalg.norm(t), rel=0.05)
    assert np.percentile(np.abs(ratio / np.median(ratio) - 1), 90) < 0.03


def test_too_few_matches_give_nothing():
    kept, depth = two_view_depth(np.zeros((5, 2)), np.ones((5, 2)), K)
    assert kept.shape == (0, 2) and depth.shape == (0,)


def test_discs_nearest_point_wins():
    image = draw_depth_discs(np.array([[10.0, 10.0], [12.0, 10.0]]), np.array([5.0, 2.0]),
                             (20, 30), radius=3)
    assert image[10, 12] == 2.0 and image[10, 8] == 5.0 and np.isnan(image[0, 0])


def test_script_on_real_frames(tmp_path, shared_data):
    from dl_perception.datasets.depth import load_sample_depth, read_depth_dataset
    result = subprocess.run([sys.executable, os.path.join(REPO_DIR, "scripts",
                                                          "make_video_depth.py"), str(tmp_path),
                             "--frames", os.path.join(shared_data, "tum_fr3_long_office", "rgb")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    samples = read_depth_dataset(str(tmp_path))
    assert len(samples) >= 15
    depth = load_sample_depth(samples[0])
    known = depth[np.isfinite(depth)]
    assert known.size > 1000 and np.median(known) == pytest.approx(2.0, rel=0.05)
