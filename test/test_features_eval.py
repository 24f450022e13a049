"""`dl-perception eval features`: the pair layout of ../shared/data/homography, the metrics, and
the shipped LIFT weights against OpenCV SIFT and ORB on the real pairs."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dl_perception.datasets.homography import read_pair_set
from dl_perception.datasets.strecha import pose_pairs, read_scene, relative_pose
from dl_perception.evaluation.features import (SUMMARY_KEYS, format_report, map_points,
                                               paired_differences,
                                               pair_metrics, pose_auc, read_homography_pairs,
                                               relative_pose_error)
from dl_perception.core.matching import mutual_nearest_neighbours
from dl_perception.core.paths import shipped_weights

BIN = os.path.dirname(sys.executable)


def test_homography_pairs_read_with_the_right_direction(shared_data):
    folder = os.path.join(shared_data, "homography")
    pairs, notes = read_homography_pairs(folder)
    assert [p.name for p in pairs] == ["adam", "boat", "graf"]
    for pair in pairs:
        # the annotated correspondences agree with the derived A->B homography (not model.txt,
        # which maps B into A)
        points = np.loadtxt(os.path.join(folder, f"{pair.name}_vpts.derived.txt"), comments="#")
        assert np.abs(map_points(pair.H, points[:, :2]) - points[:, 2:]).max() < 0.01


def test_incomplete_pairs_are_noted(tmp_path):
    (tmp_path / "loneA.png").write_bytes(b"")
    with pytest.raises(ValueError, match="holds no"):
        read_homography_pairs(str(tmp_path))


def test_mutual_nearest_neighbours_and_ratio_test():
    a = np.eye(4, dtype=np.float32)
    b = np.eye(4, dtype=np.float32)[[2, 0, 3, 1]]
    np.testing.assert_array_equal(mutual_nearest_neighbours(a, b), [[0, 1], [1, 3], [2, 0], [3, 2]])
    between = np.array([[1.0, 0.07]], np.float32)  # about as close to both
    candidates = np.array([[1.0, 0.0], [1.0, 0.141]], np.float32)
    assert len(mutual_nearest_neighbours(between, candidates)) == 1
    assert len(mutual_nearest_neighbours(between, candidates, ratio=0.8)) == 0
    bits = np.array([[0b1111_0000], [0b0000_1111]], np.uint8)
    np.testing.assert_array_equal(mutual_nearest_neighbours(bits, bits[::-1], metric="hamming"),
                                  [[0, 1], [1, 0]])


def test_metrics_of_a_perfect_and_a_wrong_feature_set():
    rng = np.random.default_rng(0)
    H = np.array([[0.9, 0.1, 20.0], [-0.1, 0.95, 10.0], [1e-4, 0.0, 1.0]])
    points_a = rng.uniform(50, 350, (300, 2))
    descriptors = rng.normal(size=(300, 128)).astype(np.float32)
    points_b = map_points(H, points_a)
    perfect = pair_metrics(points_a, descriptors, points_b, descriptors, H, (400, 400), (400, 400))
    assert perfect["repeatability"] == 1.0 and perfect["mma@1"] == 1.0
    assert perfect["matching_score"] == pytest.approx(1.0)
    assert perfect["corner_error"] < 1e-3 and perfect["homography@1"] == 1.0
    shuffled = pair_metrics(points_a, descriptors, points_b, descriptors[rng.permutation(300)], H,
                            (400, 400), (400, 400))
    assert shuffled["matching_score"] < 0.05 and shuffled["homography@10"] == 0.0


def _half_size_pairs(folder, out):
    """The pairs at half resolution (images and homographies), in `out`: a sixth of the time."""
    import cv2

    out.mkdir()
    S = np.diag([0.5, 0.5, 1.0])
    for pair in read_homography_pairs(folder)[0]:
        for path in (pair.image_a, pair.image_b):
            image = cv2.imread(path)
            cv2.imwrite(str(out / os.path.basename(path)),
                        cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA))
        np.savetxt(out / f"{pair.name}_H_A_to_B.derived.txt", S @ pair.H @ np.linalg.inv(S))
    return str(out)


@pytest.mark.skipif(not os.path.isfile(shipped_weights("lift")), reason="no shipped LIFT weights")
def test_shipped_lift_beats_orb_on_the_real_pairs(shared_data, tmp_path):
    """At half resolution and 300 keypoints (here matching score 0.31 vs ORB's 0.22, within 3 px
    1.0 vs 0.33 of the pairs; at full resolution and 1000 keypoints 0.237 vs 0.229, 0.67 vs 0)."""
    out = tmp_path / "features.json"
    pairs = _half_size_pairs(os.path.join(shared_data, "homography"), tmp_path / "pairs")
    result = subprocess.run(
        [os.path.join(BIN, "dl-perception"), "eval", "features", "--pairs", pairs,
         "--max-keypoints", "300", "--json", str(out), "--threads", "1", "--device", "cpu"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    assert "pair by pair" in result.stdout and "LIFT against the baselines" in result.stdout
    summary = json.loads(out.read_text())["summary"]
    lift, orb = summary["LIFT"], summary["ORB"]
    assert lift["matching_score"] > orb["matching_score"]
    # homography accuracy: at least as many pairs within every threshold, more within some
    thresholds = [k for k in lift if k.startswith("homography@")]
    assert all(lift[k] >= orb[k] for k in thresholds)
    assert any(lift[k] > orb[k] for k in thresholds)


def _random_pose(rng):
    axis = rng.normal(size=3)
    R, _ = cv2.Rodrigues(axis / np.linalg.norm(axis) * np.radians(10))
    return R, np.array([1.0, 0.1, 0.2])


def test_relative_pose_error_on_a_scene_with_a_known_answer():
    rng = np.random.default_rng(0)
    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    X = rng.uniform([-3, -2, 6], [3, 2, 12], (300, 3))  # camera a's coordinates
    R, t = _random_pose(rng)
    pixels_a = (X @ K.T)[:, :2] / X[:, 2:]
    in_b = X @ R.T + t
    pixels_b = (in_b @ K.T)[:, :2] / in_b[:, 2:]
    noisy_b = pixels_b + rng.normal(0, 0.3, pixels_b.shape)
    noisy_b[:60] = rng.uniform([0, 0], [640, 480], (60, 2))  # 20 % wrong matches
    result = relative_pose_error(pixels_a, noisy_b, K, K, R, t)
    assert result["pose_error_deg"] < 1.0 and result["pose_inliers"] > 200
    # the translation is compared as a direction (scale-free)
    assert relative_pose_error(pixels_a, noisy_b, K, K, R, 7 * t)["pose_error_deg"] < 1.0
    # against another truth, the same estimate is far off: the metric can fail
    wrong = relative_pose_error(pixels_a, noisy_b, K, K, R.T, t)
    assert wrong["rotation_error_deg"] > 15
    assert relative_pose_error(pixels_a[:4], pixels_b[:4], K, K, R, t)["pose_error_deg"] == np.inf


def test_pose_auc():
    # recall 1/3 at 1 deg, 2/3 at 3 deg, a failure: area (1/6 + 1 + 4/3) / 5 under 5 deg
    assert pose_auc([1.0, 3.0, np.inf], (5,))["auc@5"] == pytest.approx(0.5)
    assert pose_auc([0.0, 0.0], (5, 10)) == {"auc@5": 1.0, "auc@10": 1.0}
    assert pose_auc([np.inf], (5,))["auc@5"] == 0.0


def test_pose_pairs_of_a_scene_and_their_ground_truth(shared_data):
    views = read_scene(os.path.join(shared_data, "strecha_mvs", "fountain-P11"))
    pairs = pose_pairs(views, 3)
    assert len(pairs) == 27 and (0, 3) in pairs and (0, 4) not in pairs
    R, t = relative_pose(views[0], views[1])
    # camera b's centre seen from camera a: -R^T t
    centre_b_in_a = views[0].R @ (-views[1].R.T @ views[1].t) + views[0].t
    np.testing.assert_allclose(-R.T @ t, centre_b_in_a, atol=1e-4)  # R: 6 digits in the file


def test_hpatches_sequence_reader(shared_data):
    pairs, notes = read_pair_set(os.path.join(shared_data, "churchill_homography"))
    assert [p.name for p in pairs] == [f"churchill_homography:1-{k}" for k in range(2, 7)]
    assert not notes and all(p.H[2, 2] == 1.0 for p in pairs)
    # H_1_k maps image 1 into image k: the image centre lands inside image k
    for pair in pairs:
        assert (0 < map_points(pair.H, np.array([[383.5, 511.5]]))).all()


def test_report_columns_stay_apart_with_long_pair_names():
    rows = {"pair": "churchill_homography:1-6", "set": "churchill_homography", "matches": 10,
            **{k: 0.5 for k in SUMMARY_KEYS if k != "matches"}}
    result = {"pairs": [rows["pair"]], "sets": ["churchill_homography"], "notes": [],
              "threshold_px": 3.0, "per_pair": {"LIFT": [rows], "SIFT": [rows]},
              "summary": {"LIFT": rows, "SIFT": rows},
              "set_summary": {"churchill_homography": {"LIFT": rows, "SIFT": rows}},
              "pose_summary": {}, "pose_pairs": []}
    report = format_report(result)
    line = next(line for line in report.splitlines() if line.startswith("churchill_homography:1-6"))
    assert line.split()[:2] == ["churchill_homography:1-6", "LIFT"]


def _fake_result(lift_mma, sift_mma, lift_pose_errors, sift_pose_errors):
    def rows(mma):
        return [{"pair": f"p{i}", "mma@3": v, "homography@3": float(v > 0.5)}
                for i, v in enumerate(mma)]

    def pose_rows(errors):
        return [{"pair": f"q{i}", "pose_error_deg": e} for i, e in enumerate(errors)]
    return {"pairs": [f"p{i}" for i in range(len(lift_mma))],
            "per_pair": {"LIFT": rows(lift_mma), "SIFT": rows(sift_mma)},
            "pose_per_pair": {"LIFT": pose_rows(lift_pose_errors),
                              "SIFT": pose_rows(sift_pose_errors)}}


def test_paired_differences_separate_a_consistent_gain_from_noise():
    rng = np.random.default_rng(0)
    sift = rng.uniform(0.2, 0.8, 30)
    # a gain of 0.05 on every pair: the interval is that point, whatever the pairs' own spread
    consistent = paired_differences(_fake_result(sift + 0.05, sift, [1.0] * 20, [4.0] * 20))
    cell = consistent["SIFT"]["mma@3"]
    assert cell["difference"] == pytest.approx(0.05)
    assert cell["low"] == pytest.approx(0.05) and cell["high"] == pytest.approx(0.05)
    # 1 deg against 4 deg on every pose pair: every resampling gives the same AUC@10 gap
    gap = pose_auc([1.0] * 20, (10,))["auc@10"] - pose_auc([4.0] * 20, (10,))["auc@10"]
    assert gap > 0.2
    cell = consistent["SIFT"]["auc@10"]
    assert cell["difference"] == pytest.approx(gap) and cell["low"] == pytest.approx(gap)
    # differences of either sign, averaging zero: the interval holds 0 and is wide
    noise = rng.choice([-0.2, 0.2], 30)
    noise -= noise.mean()
    noisy = paired_differences(_fake_result(sift + noise, sift, [1.0, 8.0] * 10,
                                            [8.0, 1.0] * 10))
    cell = noisy["SIFT"]["mma@3"]
    assert cell["low"] < 0 < cell["high"] and cell["high"] - cell["low"] > 0.1
    assert noisy["SIFT"]["auc@10"]["low"] < 0 < noisy["SIFT"]["auc@10"]["high"]


def test_report_prints_the_paired_differences():
    result = _fake_result([0.6, 0.7], [0.5, 0.6], [1.0, 2.0], [2.0, 3.0])
    rows = result["per_pair"]
    for method in rows:
        for row in rows[method]:
            row.update({k: 0.5 for k in SUMMARY_KEYS if k not in row}, set="s")
    result.update(sets=["s"], notes=[], threshold_px=3.0,
                  summary={m: rows[m][0] for m in rows}, set_summary={},
                  pose_summary={}, pose_pairs=[], differences=paired_differences(result))
    section = format_report(result).split("LIFT minus each baseline")[1]
    line = next(line for line in section.splitlines() if line.startswith("mma@3 "))
    assert line.split()[1:4] == ["+0.100", "[+0.100,", "+0.100]"]
