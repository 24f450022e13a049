"""Visual odometry: the evo-based metrics checked on real trajectories against an independent
implementation, the VO on a ray-cast scene (metric and monocular), tracking loss and
re-initialisation, and `dl-perception eval vo`."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dl_perception.evaluation.vo import evaluate_vo, trajectory_errors, write_tum
from dl_perception.core.geometry import pose_matrix
from dl_perception.navigation.vo import DepthImage, Features, MonocularVO, body_pose

sys.path.insert(0, os.path.dirname(__file__))
from scenes import PlanesScene  # noqa: E402

BIN = os.path.dirname(sys.executable)


# --- an independent reference for ATE: association + Umeyama (1991) + RMSE ---------------------

def _read_tum(path):
    rows = np.loadtxt(path, comments="#")
    return rows[:, 0], rows[:, 1:4]


def _associate(t_ref, t_est, max_diff):
    pairs, used = [], set()
    for j, t in enumerate(t_est):
        i = int(np.argmin(np.abs(t_ref - t)))
        if abs(t_ref[i] - t) <= max_diff and i not in used:
            used.add(i)
            pairs.append((i, j))
    return np.array(pairs)


def _umeyama_ate(ref, est, with_scale):
    mu_r, mu_e = ref.mean(0), est.mean(0)
    covariance = (ref - mu_r).T @ (est - mu_e) / len(ref)
    U, D, Vt = np.linalg.svd(covariance)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    scale = np.trace(np.diag(D) @ S) / ((est - mu_e) ** 2).sum(1).mean() if with_scale else 1.0
    aligned = scale * est @ R.T + (mu_r - scale * R @ mu_e)
    return float(np.sqrt(((aligned - ref) ** 2).sum(1).mean()))


@pytest.mark.parametrize("estimate, with_scale", [("freiburg1_xyz-rgbdslam.txt", False),
                                                  ("freiburg1_xyz-ORB_kf_mono.txt", True)])
def test_evo_ate_matches_an_independent_computation(shared_data, estimate, with_scale):
    folder = os.path.join(shared_data, "trajectories")
    reference = os.path.join(folder, "freiburg1_xyz-groundtruth.txt")
    estimated = os.path.join(folder, estimate)
    errors = trajectory_errors(reference, estimated, correct_scale=with_scale)
    t_ref, p_ref = _read_tum(reference)
    t_est, p_est = _read_tum(estimated)
    pairs = _associate(t_ref, t_est, 0.01)
    assert errors["poses"] == len(pairs)
    expected = _umeyama_ate(p_ref[pairs[:, 0]], p_est[pairs[:, 1]], with_scale)
    assert errors["ate_rmse"] == pytest.approx(expected, rel=1e-6)
    # plausible magnitudes for these well-known runs: centimetres on fr1/xyz
    assert 0.001 < errors["ate_rmse"] < 0.05
    assert errors["alignment"] == ("Sim(3)" if with_scale else "SE(3)")
    assert (errors["alignment_scale"] != pytest.approx(1.0)) == with_scale
    assert errors["rpe_translation_rmse"] > 0 and errors["rpe_rotation_rmse_deg"] > 0


def test_tum_files_round_trip(tmp_path):
    poses = [pose_matrix([i, 0.3 * i * i, np.sin(i)], [0, 0, np.sin(0.1 * i), np.cos(0.1 * i)])
             for i in range(30)]
    path = str(tmp_path / "t.tum")
    write_tum(path, [0.1 * i for i in range(30)], poses)
    stamps, positions = _read_tum(path)
    expected = np.array([p[:3, 3] for p in poses])
    np.testing.assert_allclose(positions, expected, atol=1e-8)
    same = trajectory_errors(path, path, correct_scale=False)
    assert same["ate_rmse"] < 1e-6
    assert same["path_length_m"] == pytest.approx(
        np.linalg.norm(np.diff(expected, axis=0), axis=1).sum())


def test_trajectory_plot_shows_the_estimate_aligned_as_the_ate(tmp_path, monkeypatch):
    """An estimate that is the ground truth rotated, moved and scaled: drawn after the Sim(3)
    alignment it lies on the ground truth; the PNG is written."""
    from dl_perception.evaluation import vo as evaluation
    poses = [pose_matrix([0.5 * i, np.sin(0.3 * i), 0.1 * i], [0, 0, 0, 1]) for i in range(20)]
    similarity = pose_matrix([3.0, -2.0, 1.0], [0, 0, np.sin(0.4), np.cos(0.4)])
    scaled = [p.copy() for p in poses]
    for p in scaled:
        p[:3, 3] *= 2.5
    moved = [similarity @ p for p in scaled]
    write_tum(str(tmp_path / "ref.tum"), [0.1 * i for i in range(20)], poses)
    write_tum(str(tmp_path / "est.tum"), [0.1 * i for i in range(20)], moved)
    drawn = {}
    real_plot = evaluation.plot_trajectory

    def plot(path, reference, estimate, title):
        drawn.update(reference=reference, estimate=estimate, title=title)
        real_plot(path, reference, estimate, title)
    monkeypatch.setattr(evaluation, "plot_trajectory", plot)
    plot_path = tmp_path / "plot.png"
    errors = trajectory_errors(str(tmp_path / "ref.tum"), str(tmp_path / "est.tum"),
                               correct_scale=True, plot_path=str(plot_path))
    assert errors["ate_rmse"] < 1e-6
    np.testing.assert_allclose(drawn["estimate"], drawn["reference"], atol=1e-6)
    np.testing.assert_allclose(drawn["reference"], [p[:3, 3] for p in poses], atol=1e-8)
    assert "Sim(3)" in drawn["title"]
    assert cv2.imread(str(plot_path)).shape == (600, 600, 3)


def test_body_pose_uses_ros_axes():
    forward = np.eye(4)
    forward[2, 3] = 1.0  # one metre along the optical axis
    np.testing.assert_allclose(body_pose(forward)[:3, 3], [1.0, 0.0, 0.0], atol=1e-12)


@pytest.fixture(scope="module")
def scene_sequence(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene") / "planes"
    return PlanesScene().write_sequence(str(root), 50, black_frames=(25, 26, 27, 28))


def _sift():
    sift = cv2.SIFT_create(nfeatures=500)

    def extract(rgb):
        keypoints, descriptors = sift.detectAndCompute(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), None)
        if descriptors is None:
            return np.zeros((0, 2)), np.zeros((0, 128), np.float32)
        return np.array([k.pt for k in keypoints]), descriptors
    return extract


@pytest.mark.parametrize("use_depth", [True, False])
def test_vo_follows_the_scene_through_black_frames(scene_sequence, tmp_path, use_depth):
    result = evaluate_vo([scene_sequence], _sift(), str(tmp_path), use_depth=use_depth)
    row = result["sequences"][0]
    print(row)
    assert row["alignment"] == ("SE(3)" if use_depth else "Sim(3)")
    assert row["ate_percent_of_path"] < 2.0
    # the black frames were not given a pose; the odometry re-initialised and went on
    assert row["reinitialisations"] >= 1 and row["tracked"] <= row["frames"] - 4
    stamps, _ = _read_tum(row["estimate_tum"])
    assert not np.any(np.isclose(stamps, 2.6)) and np.any(stamps > 3.5)


def _step_ratios(estimate_tum, reference_tum):
    """Estimated over true distance between consecutive estimated poses."""
    t_est, p_est = _read_tum(estimate_tum)
    t_ref, p_ref = _read_tum(reference_tum)
    p_ref = p_ref[_associate(t_ref, t_est, 0.01)[:, 0]]
    return (np.linalg.norm(np.diff(p_est, axis=0), axis=1)
            / np.linalg.norm(np.diff(p_ref, axis=0), axis=1))


def test_monocular_map_holds_the_initial_scale(scene_sequence, tmp_path):
    """Without depth, PnP against the triangulated map keeps the unit of the two-view start:
    no re-initialisation, and the step lengths at the end have the scale of the start."""
    result = evaluate_vo([scene_sequence], _sift(), str(tmp_path), use_depth=False,
                         max_frames=25)
    row = result["sequences"][0]
    assert row["reinitialisations"] == 0 and row["tracked"] >= 20
    ratios = _step_ratios(row["estimate_tum"], row["reference_tum"])[1:]
    start, end = np.median(ratios[:6]), np.median(ratios[-6:])
    assert end == pytest.approx(start, rel=0.05)
    assert row["ate_percent_of_path"] < 1.0


def test_triangulation_keeps_only_points_it_can_trust():
    """Map points must lie in front of every camera, reproject within the threshold in each and
    be seen under enough parallax; all sightings of a track take part."""
    scene = PlanesScene(160, 120)
    vo = MonocularVO(scene.camera.K)
    K = scene.camera.K
    poses = [np.eye(4) for _ in range(3)]
    for k, pose in enumerate(poses):
        pose[0, 3] = 0.5 * k  # sideways, 0.5 m apart

    def pixel(point, pose):
        camera = np.linalg.inv(pose) @ np.append(point, 1.0)
        return (K @ camera[:3])[:2] / camera[2]

    good = np.array([0.3, -0.2, 6.0])
    far = np.array([0.0, 0.0, 500.0])  # under 0.1 degree of parallax
    tracks = [[(pose, pixel(good, pose)) for pose in poses],
              [(pose, pixel(far, pose)) for pose in poses],
              # 6 px off the epipolar line
              [(poses[0], pixel(good, poses[0])), (poses[2], pixel(good, poses[2]) + [0, 6.0])],
              # consistent rays that meet behind the cameras
              [(pose, pixel(np.array([0.3, -0.2, -6.0]), pose)) for pose in poses]]
    world, ok = vo._triangulate(tracks)
    np.testing.assert_allclose(world[0], good, atol=1e-6)
    assert ok.tolist() == [True, False, False, False]


def test_lost_tracking_publishes_no_wild_pose():
    """Unrelated features (a different scene each frame) never yield a pose."""
    scene = PlanesScene(160, 120)
    vo = MonocularVO(scene.camera.K)
    rng = np.random.default_rng(0)
    results = []
    for _ in range(8):
        keypoints = rng.uniform(0, 160, (200, 2))
        results.append(vo.process(Features(keypoints, rng.normal(size=(200, 128)).astype(np.float32))))
    assert results[0].status == "keyframe"
    assert all(r.pose is None for r in results[1:])
    assert all(r.status == "initialising" for r in results[1:])


def test_features_shapes_are_checked_and_empty_ones_normalised():
    black = np.zeros((120, 160, 3), np.uint8)
    keypoints, descriptors = _sift()(black)  # shape (0,) with some OpenCV builds, (0, 2) others
    empty = Features(keypoints, descriptors)
    assert empty.keypoints.shape == (0, 2) and empty.descriptors.shape == (0, 128)
    assert Features(np.array([]), np.array([])).descriptors.shape == (0, 0)
    with pytest.raises(ValueError, match="N x 2"):
        Features(np.zeros((5, 3)), np.zeros((5, 128)))
    with pytest.raises(ValueError, match="descriptors"):
        Features(np.zeros((5, 2)), np.zeros((4, 128)))
    with pytest.raises(ValueError, match="descriptors"):
        Features(np.zeros((5, 2)), np.zeros(5))
    with pytest.raises(ValueError, match="finite"):
        Features(np.full((5, 2), np.nan), np.zeros((5, 128)))


def _vo_state(vo):
    """Everything a step may change, as plain comparable values."""
    keyframe = vo.keyframe
    return (vo.pose.tolist(), vo.frame_count, vo.lost_frames, vo.losses, vo.keyframes,
            vo.reinitialisations, vo.recent_steps, vo.velocity.tolist(), vo.metric,
            vo.unit_baseline, keyframe.serial if keyframe else None,
            sorted(keyframe.points.items()) if keyframe else None,
            {k: p.tolist() for k, p in vo.map.positions.items()},
            {k: [(s, list(px)) for s, px in obs] for k, obs in vo.map.observations.items()},
            {k: p.tolist() for k, p in vo.map.poses.items()}, vo.map.next_id)


@pytest.fixture(scope="module")
def scene_features(scene_sequence):
    """SIFT features of the scene's first frames (once for this module)."""
    from dl_perception.datasets.sequence import read_sequence
    sequence = read_sequence(scene_sequence)
    extract = _sift()
    return sequence, [Features(*extract(frame.load_rgb())) for frame in sequence.frames[:15]]


def test_a_step_that_fails_leaves_the_previous_state(scene_features, monkeypatch):
    """A step that raises (here the bundle adjustment, after the new keyframe was added to the
    map) leaves the odometry as before the frame: the same frame again, and the run from there,
    give exactly what a run without the failure gives."""
    sequence, features = scene_features
    reference = MonocularVO(sequence.camera.K)
    expected = [reference.process(f) for f in features]
    # the third and fourth keyframes: a map to lose and a bundle adjustment that runs
    failing_steps = [i for i, r in enumerate(expected) if r.status == "keyframe"][2:4]
    assert len(failing_steps) == 2
    vo = MonocularVO(sequence.camera.K)
    real_bundle_adjust = vo._bundle_adjust

    def failing_bundle_adjust():
        real_bundle_adjust()
        raise RuntimeError("injected")
    got = []
    for index, f in enumerate(features):
        if index in failing_steps:
            before = _vo_state(vo)
            monkeypatch.setattr(vo, "_bundle_adjust", failing_bundle_adjust)
            with pytest.raises(RuntimeError, match="injected"):
                vo.process(f)
            assert _vo_state(vo) == before
            monkeypatch.setattr(vo, "_bundle_adjust", real_bundle_adjust)
        got.append(vo.process(f))
    assert [r.status for r in got] == [r.status for r in expected]
    for a, b in zip(got, expected):
        assert (a.pose is None) == (b.pose is None)
        if a.pose is not None:
            np.testing.assert_array_equal(a.pose, b.pose)


def test_black_frames_with_depth_lose_track_and_reinitialise(scene_features, scene_sequence):
    """Featureless frames (as SIFT gives them on black images) with depth: lost, no pose, then a
    re-initialisation on an empty keyframe, and tracking again on the next real frame."""
    from dl_perception.datasets.sequence import read_sequence
    sequence, features = scene_features
    depths = [DepthImage(frame.load_depth(), sequence.camera.K)
              for frame in read_sequence(scene_sequence).frames[:15]]
    vo = MonocularVO(sequence.camera.K)
    for f, depth in zip(features[:10], depths):
        assert vo.process(f, depth).pose is not None
    pose = vo.pose.copy()
    black = Features(*_sift()(np.zeros((240, 320, 3), np.uint8)))
    statuses = [vo.process(black, depths[10]).status for _ in range(2)]
    assert statuses == ["lost", "lost"]
    np.testing.assert_array_equal(vo.pose, pose)
    assert vo.process(black, depths[10]).status == "reinitialised"
    assert vo.keyframe.features.keypoints.shape == (0, 2)
    again = [vo.process(f, d) for f, d in zip(features[11:14], depths[11:14])]
    assert again[0].status == "initialising" and again[-1].pose is not None


def test_eval_vo_command(scene_sequence, tmp_path):
    out = tmp_path / "vo.json"
    result = subprocess.run(
        [os.path.join(BIN, "dl-perception"), "eval", "vo", "--sequences", scene_sequence,
         "--features", "sift", "--depth", "recorded", "--out", str(tmp_path / "traj"),
         "--json", str(out), "--feature-cache", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "ATE_%path" in result.stdout and "all sequences pass" in result.stdout
    data = json.loads(out.read_text())
    assert data["all_pass"] and data["depth"] == "recorded"
    assert os.path.isfile(tmp_path / "traj" / "planes.vo.tum")
    plot = cv2.imread(str(tmp_path / "traj" / "planes.trajectory.png"))
    assert data["sequences"][0]["trajectory_plot"] == str(tmp_path / "traj" / "planes.trajectory.png")
    red = (plot[..., 2] > 180) & (plot[..., 1] < 80) & (plot[..., 0] < 80)  # the estimate's line
    assert red.sum() > 200
    # the cached features give the same run without the extractor
    cached, = (tmp_path / "cache").iterdir()
    assert cached.name.startswith("planes-")
    row = data["sequences"][0]
    again = evaluate_vo([scene_sequence], None, str(tmp_path / "again"), use_depth=True,
                        feature_cache=(str(tmp_path / "cache"), cached.name[7:-4]))
    assert again["sequences"][0]["ate_rmse"] == pytest.approx(row["ate_rmse"])


def test_bundle_adjustment_converges_back_to_the_true_window():
    """The local bundle adjustment, given perturbed poses (all but the two oldest keyframes,
    which fix the gauge) with exact points and observations, must converge to the true ones. With
    scipy's x_scale="jac" it stalled about 0.08 m off (median residual 1.4 px) and dropped
    points; later keyframes inherit such a pose and scale error."""
    from dl_perception.navigation.vo import Features, _Keyframe
    rng = np.random.default_rng(3)

    def transform(rotation_vector, translation):
        T = np.eye(4)
        T[:3, :3] = cv2.Rodrigues(np.asarray(rotation_vector, float))[0]
        T[:3, 3] = translation
        return T

    K = np.array([[160.0, 0, 160], [0, 160.0, 120], [0, 0, 1]])
    vo = MonocularVO(K)
    truth = {}
    for serial in range(1, 7):
        pose = transform([0.0, 0.02 * serial, 0.0], [0.05 * serial, 0.0, 0.3 * serial])
        truth[serial] = pose
        vo.map.poses[serial] = pose.copy()
        if serial > 2:
            vo.map.poses[serial] = pose @ transform(rng.normal(0, 0.01, 3), rng.normal(0, 0.03, 3))
    points = np.column_stack([rng.uniform(-6, 6, 150), rng.uniform(-3, 3, 150),
                              rng.uniform(6, 20, 150)])
    for point in points:
        observations = []
        for serial, pose in truth.items():
            camera = np.linalg.inv(pose) @ np.append(point, 1.0)
            observations.append((serial, (K @ camera[:3])[:2] / camera[2]))
        vo.map.add(point, observations)
    vo.keyframe = _Keyframe(Features(np.zeros((0, 2)), np.zeros((0, 8))), vo.map.poses[6], 6, 6)
    vo._bundle_adjust()
    assert len(vo.map.positions) == len(points)  # none dropped
    for serial in range(3, 7):
        np.testing.assert_allclose(vo.map.poses[serial][:3, 3], truth[serial][:3, 3], atol=2e-3)


def test_pnp_recovers_the_pose_and_rejects_outliers_the_same_way_every_call():
    """Tracking's PnP (RANSAC over SQPnP, reprojection refinement): the true pose from noisy
    matches with 30% outliers, the outliers out, and the same answer on every call. OpenCV 5.0's
    Levenberg-Marquardt PnP answered 10^8 m now and then, depending on earlier calls, which made
    vo_node lose track in one process and not in another."""
    rng = np.random.default_rng(5)
    K = np.array([[160.0, 0, 160], [0, 160.0, 120], [0, 0, 1]])
    vo = MonocularVO(K)
    T_c_w = np.eye(4)
    T_c_w[:3, :3] = cv2.Rodrigues(np.array([0.02, -0.1, 0.01]))[0]
    T_c_w[:3, 3] = [0.3, -0.1, -1.5]
    world = np.column_stack([rng.uniform(-6, 6, 80), rng.uniform(-3, 3, 80),
                             rng.uniform(6, 20, 80)])
    camera = world @ T_c_w[:3, :3].T + T_c_w[:3, 3]
    pixels = (camera @ K.T)[:, :2] / camera[:, 2:3] + rng.normal(0, 0.3, (80, 2))
    outliers = rng.choice(80, 24, replace=False)
    pixels[outliers] += rng.uniform(15, 60, (24, 2)) * rng.choice([-1, 1], (24, 2))
    answers = [vo._solve_pnp(world, pixels) for _ in range(5)]
    T, inliers = answers[0]
    np.testing.assert_allclose(T[:3, 3], T_c_w[:3, 3], atol=0.02)
    assert not set(outliers) & set(inliers.tolist())
    assert len(inliers) >= 50
    for other, other_inliers in answers[1:]:
        np.testing.assert_array_equal(other, T)
        np.testing.assert_array_equal(other_inliers, inliers)


def test_vo_on_predicted_depth_with_either_alignment(scene_sequence, tmp_path):
    """`predict_depth` stands in for depth_node: here a network that overestimates every depth
    by 10%. The run is metric; SE(3) alignment shows the scale error, Sim(3) takes it out."""
    from dl_perception.datasets.sequence import read_sequence
    frames = iter(read_sequence(scene_sequence).frames)

    def predict_depth(rgb):
        frame = next(frames)
        np.testing.assert_array_equal(rgb, frame.load_rgb())  # called in frame order
        return 1.1 * frame.load_depth()

    rows = {}
    for alignment in ("se3", "sim3"):
        frames = iter(read_sequence(scene_sequence).frames)
        rows[alignment] = evaluate_vo([scene_sequence], _sift(), str(tmp_path / alignment),
                                      predict_depth=predict_depth,
                                      alignment=alignment)["sequences"][0]
    assert rows["se3"]["metric"] and rows["se3"]["alignment"] == "SE(3)"
    assert rows["sim3"]["alignment"] == "Sim(3)"
    assert rows["sim3"]["alignment_scale"] == pytest.approx(1 / 1.1, abs=0.03)
    assert rows["sim3"]["ate_percent_of_path"] < 2.0 < rows["se3"]["ate_percent_of_path"]
    with pytest.raises(ValueError, match="alignment"):
        evaluate_vo([scene_sequence], _sift(), str(tmp_path), alignment="umeyama")


def test_eval_vo_command_with_the_depth_network(scene_sequence, tmp_path):
    import torch

    from dl_perception import models
    torch.manual_seed(0)
    weights = str(tmp_path / "depth.safetensors")
    models.create("depth").save(weights)  # untrained: this checks the wiring, not accuracy
    out = tmp_path / "vo.json"
    result = subprocess.run(
        [os.path.join(BIN, "dl-perception"), "eval", "vo", "--sequences", scene_sequence,
         "--features", "sift", "--depth", "model", "--depth-weights", weights, "--align", "sim3",
         "--max-frames", "12", "--threads", "1", "--out", str(tmp_path / "traj"),
         "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "metric scale from the depth network" in result.stdout
    data = json.loads(out.read_text())
    assert data["depth"] == "model"
    row = data["sequences"][0]
    assert row["metric"] and row["alignment"] == "Sim(3)" and row["frames"] == 12
