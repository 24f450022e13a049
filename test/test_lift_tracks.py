"""Multi-view correspondences for LIFT training (dl_perception/datasets/strecha.py): the Strecha
scene reader and the track builder (match, epipolar check, triangulate, re-project) on a scene
with a known answer, and a scene pair for training built from the tracks."""
import math
import os
import sys

import cv2
import numpy as np
import pytest

from dl_perception.datasets.strecha import (Tracks, View, build_tracks, epipolar_distance,
                                            fundamental_matrix, project, read_scene,
                                            sparse_depth)
from dl_perception.training.lift import LIFTTrainConfig, SceneSet

sys.path.insert(0, os.path.dirname(__file__))
from scenes import texture  # noqa: E402

PLANE_Z = 5.0  # the textured plane z = 5 m of the world, 1 texel = 1 cm, texel (0, 0) at x = y = -2.56
WIDTH, HEIGHT = 400, 300


def _look_at(centre: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    forward = (target - centre) / np.linalg.norm(target - centre)
    right = np.cross([0.0, 1.0, 0.0], forward)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    return R, -R @ centre


def _plane_views(folder, count: int = 3) -> list[View]:
    """Views of a textured plane, rendered exactly by the homography the plane induces."""
    K = np.array([[420.0, 0, WIDTH / 2 - 0.5], [0, 420.0, HEIGHT / 2 - 0.5], [0, 0, 1]])
    tex = texture(3, 512)
    texel_to_plane = np.array([[0.01, 0, -2.56 + 0.005], [0, 0.01, -2.56 + 0.005], [0, 0, 1]])
    views = []
    for index in range(count):
        angle = math.radians(-12 + 12 * index)
        centre = np.array([5 * math.sin(angle), 0.3 * index, PLANE_Z - 5 * math.cos(angle)])
        R, t = _look_at(centre, np.array([0.0, 0.0, PLANE_Z]))
        # plane point (x, y, PLANE_Z) -> pixel: K [r1 r2 (PLANE_Z r3 + t)]
        H = K @ np.c_[R[:, 0], R[:, 1], PLANE_Z * R[:, 2] + t] @ texel_to_plane
        image = cv2.warpPerspective(tex, H, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)
        path = os.path.join(folder, f"{index:04d}.png")
        cv2.imwrite(path, image)
        views.append(View(f"{index:04d}", path, K, R, t))
    return views


def test_tracks_of_a_known_plane_lie_on_it_and_reproject(tmp_path):
    views = _plane_views(str(tmp_path))
    tracks = build_tracks(views, max_gap=2, features=1500)
    assert len(tracks.points) > 100
    # triangulated from the known poses: on the plane (within 1 % of the 5 m distance)
    assert np.median(np.abs(tracks.points[:, 2] - PLANE_Z)) < 0.01
    assert np.percentile(np.abs(tracks.points[:, 2] - PLANE_Z), 95) < 0.05
    # every observation is the re-projection of its track's point
    for v, view in enumerate(views):
        mine = tracks.view == v
        projected, z = project(view, tracks.points[tracks.track[mine]])
        assert np.all(z > 0)
        assert np.abs(projected - tracks.xy[mine]).max() < 1e-6
    # the same point seen from two views lies at corresponding pixels of the two images:
    # their intensities agree (a wrong correspondence would not)
    index_a, index_b = tracks.pair(0, 2)
    assert len(index_a) > 50
    images = [cv2.GaussianBlur(cv2.imread(v.path, cv2.IMREAD_GRAYSCALE).astype(np.float32),
                               (0, 0), 1.0) for v in views]

    def sample(image, xy):
        return cv2.remap(image, xy[:, :1].astype(np.float32), xy[:, 1:].astype(np.float32),
                         cv2.INTER_LINEAR)[:, 0]
    a = sample(images[0], tracks.xy[index_a])
    b = sample(images[2], tracks.xy[index_b])
    assert np.corrcoef(a, b)[0, 1] > 0.9
    assert np.corrcoef(a, sample(images[2], tracks.xy[index_b] + 6))[0, 1] < 0.6
    assert np.all(tracks.sigma > 0)
    assert np.median(epipolar_distance(fundamental_matrix(views[0], views[2]),
                                       tracks.xy[index_a], tracks.xy[index_b])) < 1e-6
    # sparse depth for depth training: the plane's true depth along the optical axis
    depth = sparse_depth(views[1], tracks, 1, (HEIGHT, WIDTH), radius=2)
    v, u = np.nonzero(np.isfinite(depth))
    assert 0.05 < len(u) / depth.size < 0.9
    rays = np.linalg.inv(views[1].K) @ np.stack([u, v, np.ones_like(u)]).astype(float)
    centre = -views[1].R.T @ views[1].t
    true = (PLANE_Z - centre[2]) / (views[1].R.T @ rays)[2]  # rays have z = 1 in the camera
    assert np.percentile(np.abs(depth[v, u] / true - 1), 95) < 0.01


def test_sparse_depth_keeps_the_nearest_point_where_discs_overlap():
    K = np.array([[100.0, 0, 19.3], [0, 100.0, 14.2], [0, 0, 1]])
    R = cv2.Rodrigues(np.array([0.0, 0.3, 0.0]))[0]
    view = View("v", "", K, R, np.array([0.0, 0.0, 1.0]))
    points = np.array([[0.0, 0.0, 3.0], [0.04, 0.0, 1.0]]) @ R  # camera (0, 0, 4), (0.04, 0, 2)
    xy, z = project(view, points)
    tracks = Tracks(points, np.array([0, 1]), np.array([0, 0]), xy, np.ones(2), np.zeros(2),
                    np.ones(2, bool))
    depth = sparse_depth(view, tracks, 0, (30, 40), radius=3)
    np.testing.assert_allclose(z, [4.0, 2.0])
    x0, y0 = np.round(xy[0]).astype(int)
    x1, y1 = np.round(xy[1]).astype(int)
    assert depth[y1, x1] == np.float32(2.0) and depth[y0, x0 - 3] == np.float32(4.0)
    assert depth[y0, x0] == np.float32(2.0)  # the nearer disc covers the farther point
    assert np.isnan(depth[0, 0]) and np.isfinite(depth).sum() < 60


def test_scene_pairs_for_training(tmp_path):
    views = _plane_views(str(tmp_path), 3)
    scene = tmp_path / "scene"
    (scene / "images").mkdir(parents=True)
    lines = ["image,fx,fy,cx,cy,r11,r12,r13,r21,r22,r23,r31,r32,r33,t1,t2,t3"]
    for view in views:
        os.replace(view.path, scene / "images" / os.path.basename(view.path))
        K = view.K
        lines.append(",".join([os.path.basename(view.path), str(K[0, 0]), str(K[1, 1]),
                               str(K[0, 2] + 0.5), str(K[1, 2] + 0.5),
                               *(str(float(v)) for v in view.R.ravel()),
                               *(str(float(v)) for v in view.t)]))
    (scene / "cameras.csv").write_text("\n".join(lines) + "\n")
    read = read_scene(str(scene))
    np.testing.assert_allclose(read[1].K, views[1].K)
    np.testing.assert_allclose(read[1].R, views[1].R)
    cfg = LIFTTrainConfig(image_size=[160, 120], scene_max_gap=2)
    scenes = SceneSet([str(scene)], str(tmp_path / "cache"), log=lambda *_: None)
    assert os.path.isfile(tmp_path / "cache" / "scene.npz")
    rng = np.random.default_rng(0)
    pairs = [p for p in (scenes.pair(rng, cfg) for _ in range(12)) if p is not None]
    assert pairs
    for pair in pairs:
        points = pair.points
        assert pair.image_a.shape == (120, 160) and pair.image_b.shape == (120, 160)
        assert len(points.points_a) >= 16 and len(points.negatives) > 0
        # corresponding crops show the same texture at the paired points
        a = cv2.GaussianBlur(pair.image_a, (0, 0), 1.0)
        b = cv2.GaussianBlur(pair.image_b, (0, 0), 1.0)
        va = cv2.remap(a, points.points_a[:, :1].astype(np.float32),
                       points.points_a[:, 1:].astype(np.float32), cv2.INTER_LINEAR)[:, 0]
        vb = cv2.remap(b, points.points_b[:, :1].astype(np.float32),
                       points.points_b[:, 1:].astype(np.float32), cv2.INTER_LINEAR)[:, 0]
        assert np.corrcoef(va, vb)[0, 1] > 0.7


def test_strecha_scene_reader_matches_its_images(shared_data):
    """Ground truth of a real scene: SIFT matches of two neighbouring views are within a pixel
    of their epipolar lines under the poses read (the principal-point convention included)."""
    views = read_scene(os.path.join(shared_data, "strecha_mvs", "entry-P10"))
    assert len(views) == 10
    sift = cv2.SIFT_create(2000)
    found = [sift.detectAndCompute(cv2.imread(v.path, cv2.IMREAD_GRAYSCALE), None) for v in views[:2]]
    matches = cv2.BFMatcher().knnMatch(found[0][1], found[1][1], k=2)
    good = [m for m, n in matches if m.distance < 0.7 * n.distance]
    a = np.array([found[0][0][m.queryIdx].pt for m in good])
    b = np.array([found[1][0][m.trainIdx].pt for m in good])
    distance = epipolar_distance(fundamental_matrix(views[0], views[1]), a, b)
    assert len(good) > 200 and np.median(distance) < 0.6


def test_read_scene_refuses_a_folder_without_cameras(tmp_path):
    with pytest.raises(FileNotFoundError, match="cameras.csv"):
        read_scene(str(tmp_path))
