"""Real RGB-D validation readers (TUM layout, ViSP castel, Middlebury stereo) on small real
samples and fabricated folders, and `eval depth`'s constant baseline, out-of-view accounting and
error maps."""
import json
import os

import cv2
import numpy as np
import pytest

from dl_perception.datasets.depth import (disparity_to_depth, load_sample_depth, read_depth_dataset,
                                          read_visp_depth, register_depth, write_pfm)

VISP_CASTEL = "/usr/share/visp-images-data/ViSP-images/mbt-depth/castel"
OPENCV_DATA = "/usr/share/doc/opencv-doc/examples/data"


def test_tum_layout_on_the_real_tum2klg_frames(shared_data):
    folder = os.path.join(shared_data, "tum2klg_rgbd")
    samples = read_depth_dataset(folder)  # auto: associations.txt -> tum
    assert len(samples) == 17  # the associated pairs whose files exist
    assert all(s.depth_scale == 5000.0 and s.metric for s in samples)
    depth = load_sample_depth(samples[0])
    assert depth.shape == (480, 640)
    valid = depth[np.isfinite(depth)]
    assert 0.3 < np.median(valid) < 3.0  # an office at arm's length to a few metres
    raw = cv2.imread(samples[0].depth, cv2.IMREAD_UNCHANGED)
    assert np.all(np.isnan(depth[raw == 65535]))  # saturated values are no measurement


@pytest.mark.skipif(not os.path.isdir(VISP_CASTEL),
                    reason="Debian package visp-images-data is not installed")
def test_visp_castel_frames_are_registered_into_the_colour_image():
    samples = read_depth_dataset(VISP_CASTEL)
    assert len(samples) == 30 and samples[0].kind == "visp"
    depth = load_sample_depth(samples[0])
    assert depth.shape == (480, 640)
    valid = depth[np.isfinite(depth)]
    assert valid.size > 0.5 * depth.size
    assert 0.15 < np.percentile(valid, 5) and np.percentile(valid, 95) < 0.6  # a toy castle


def test_registration_moves_depth_into_the_colour_camera():
    """A fronto-parallel plane 0.5 m from a depth camera with other intrinsics, 2.5 cm to the
    side of the colour camera: registered, every colour pixel that sees it reads 0.5 m and the
    plane's edge moves by f * 0.025 / 0.5 pixels."""
    depth = np.full((120, 160), np.nan, np.float32)
    depth[:, :80] = 0.5  # the plane covers the depth image's left half
    depth_k, colour_k = (100.0, 100.0, 79.5, 59.5), (130.0, 130.0, 79.5, 59.5)
    shifted = np.eye(4)
    shifted[0, 3] = -0.025  # X_depth = X_colour - 2.5 cm
    registered = register_depth(depth, depth_k, colour_k, (160, 120), shifted)
    valid = np.isfinite(registered)
    assert np.allclose(registered[valid], 0.5, atol=1e-5)
    # the plane's last depth column (79) lies at X = -0.0025 m, X_colour = X + 0.025 m
    columns = np.nonzero(valid[60])[0]
    expected_edge = 130 * ((79 - 79.5) * 0.5 / 100 + 0.025) / 0.5 + 79.5
    assert abs(columns.max() - expected_edge) <= 1.5
    assert valid[:, 10:columns.max() - 2].mean() > 0.98  # the finer grid's holes are filled


def test_visp_depth_files_are_checked(tmp_path):
    path = tmp_path / "depth_image_0000.bin"
    header = np.array([2, 3], "<u4").tobytes()
    path.write_bytes(header + np.array([0, 8000, 8000, 8000, 8000, 8000], "<u2").tobytes())
    depth = read_visp_depth(str(path))
    assert depth.shape == (2, 3) and np.isnan(depth[0, 0])
    assert depth[1, 2] == pytest.approx(8000 * 0.000124986647)
    path.write_bytes(header + b"\0" * 5)
    with pytest.raises(ValueError, match="not a ViSP depth map"):
        read_visp_depth(str(path))


def test_middlebury_layouts(tmp_path):
    # 2014: im0.png + disp0.pfm + calib.txt, metric depth = f * B / (d + doffs)
    scene = tmp_path / "2014" / "Toy-perfect"
    scene.mkdir(parents=True)
    cv2.imwrite(str(scene / "im0.png"), np.full((4, 6, 3), 90, np.uint8))
    disparity = np.full((4, 6), 100.0, np.float32)
    disparity[0, 0] = np.inf  # unknown
    write_pfm(str(scene / "disp0.pfm"), disparity)
    (scene / "calib.txt").write_text("cam0=[4000 0 3; 0 4000 2; 0 0 1]\ncam1=[4000 0 53; 0 4000 2;"
                                     " 0 0 1]\ndoffs=50\nbaseline=180.0\nwidth=6\nheight=4\n")
    (sample,) = read_depth_dataset(str(tmp_path / "2014"))
    depth = load_sample_depth(sample)
    assert sample.metric and np.isnan(depth[0, 0])
    assert depth[1, 1] == pytest.approx(4000 * 0.18 / 150)
    # 2005/2006 as OpenCV ships Aloe: NAMEL.jpg + NAMEGT.png (8-bit disparity), uncalibrated
    pair = tmp_path / "2006"
    pair.mkdir()
    cv2.imwrite(str(pair / "toyL.png"), np.full((4, 6, 3), 90, np.uint8))
    gt = np.full((4, 6), 40, np.uint8)
    gt[3, 5] = 0
    cv2.imwrite(str(pair / "toyGT.png"), gt)
    (sample,) = read_depth_dataset(str(pair), doffs=10.0)
    assert not sample.metric
    depth = load_sample_depth(sample)
    assert np.isnan(depth[3, 5]) and depth[0, 0] == pytest.approx(1 / 50)
    assert np.isnan(disparity_to_depth(np.array([[-20.0]], np.float32), 1.0, 10.0)[0, 0])


@pytest.mark.skipif(not os.path.isfile(os.path.join(OPENCV_DATA, "aloeGT.png")),
                    reason="Debian package opencv-doc is not installed")
def test_opencv_aloe_pair_reads_as_relative_depth():
    (sample,) = read_depth_dataset(OPENCV_DATA)
    assert sample.kind == "disparity" and os.path.basename(sample.image) == "aloeL.jpg"
    depth = load_sample_depth(sample)
    assert depth.shape == (1110, 1282)
    valid = depth[np.isfinite(depth)]
    assert valid.size > 0.9 * depth.size
    assert valid.max() / valid.min() > 3  # disparity ~40-210 px: plant near, cloth far


def test_eval_scores_a_constant_baseline_on_the_same_pixels_and_counts_unseen_ones(tmp_path):
    """An 8:3 frame: the cpu network sees its centre 4:3 (half the columns); the other half
    have ground truth but no prediction and are counted, and the baseline's errors are those of
    the median depth over the scored pixels."""
    import torch

    from dl_perception.evaluation.depth import evaluate_depth, format_report
    from dl_perception.models.depth import EigenDepth

    torch.manual_seed(0)
    weights = str(tmp_path / "random.safetensors")
    EigenDepth(EigenDepth.make_config("cpu")).save(weights)
    root = tmp_path / "tum"
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    rng = np.random.default_rng(1)
    truths = []
    for name in ("a", "b"):
        cv2.imwrite(str(root / "rgb" / f"{name}.png"),
                    rng.integers(0, 255, (60, 160, 3)).astype(np.uint8))
        truth = np.tile(np.linspace(1.0, 3.0, 160, dtype=np.float32), (60, 1))
        truth[:10] = 0  # no measurement
        cv2.imwrite(str(root / "depth" / f"{name}.png"), np.round(truth * 5000).astype(np.uint16))
        truths.append(np.round(truth * 5000) / 5000)
    (root / "associations.txt").write_text("1 rgb/a.png 1 depth/a.png\n2 rgb/b.png 2 depth/b.png\n")
    maps = tmp_path / "maps"
    result = evaluate_depth(weights, [str(root)], torch.device("cpu"), error_maps=str(maps))
    assert result["ground_truth_pixels"] == 2 * 50 * 160
    assert result["outside_view_pixels"] == 2 * 50 * 80  # the sides the network does not see
    assert result["pixels"] == 2 * 50 * 80
    seen = truths[0][10:, 40:120]
    expected = np.mean(np.abs(np.median(seen) - seen) / seen)
    baseline = result["baseline_constant"]["median_scaled"]
    assert baseline["abs_rel"] == pytest.approx(expected, rel=1e-4)
    assert baseline["si_rmse_log"] > 0.1
    report = format_report(result)
    assert "constant (median GT)" in report and "network / constant baseline" in report
    # two images: the interval of the ratio lies around it
    low, high = result["ratio_interval"]
    ratio = result["median_scaled"]["abs_rel"] / baseline["abs_rel"]
    assert low <= ratio + 1e-9 and ratio <= high + 1e-9
    assert f"95 % interval over the images {low:.3f}-{high:.3f}" in report
    assert "outside the network's view (not scored) 8000" in report
    pictures = sorted(os.listdir(maps))
    assert len(pictures) == 2
    assert cv2.imread(str(maps / pictures[0])).shape == (60, 4 * 160, 3)
    json.dumps(result)


def test_ratio_interval_is_tight_for_a_steady_ratio_and_wide_for_a_varying_one():
    from dl_perception.evaluation.depth import ratio_interval

    constant = np.linspace(0.1, 0.5, 20)
    low, high = ratio_interval(2 * constant, constant)
    assert low == pytest.approx(2.0) and high == pytest.approx(2.0)
    varying = constant * np.where(np.arange(20) % 2 == 0, 0.5, 1.5)  # mean ratio about 1
    low, high = ratio_interval(varying, constant)
    assert low < 1.0 < high and high - low > 0.2
    assert ratio_interval([0.1], [0.2]) is None  # one image: nothing to resample
