"""Depth data: the NYU-, KITTI- and sequence-layout readers on tiny fabricated folders, depth
scales and invalid values, training targets and augmentation, the depth error measures."""
import json
import os

import cv2
import numpy as np
import pytest

from dl_perception import models
from dl_perception.datasets.depth import (detect_format, load_depth, read_depth_dataset)
from dl_perception.datasets.sequence import Camera, SequenceWriter
from dl_perception.evaluation.metrics import DepthErrorMeans, depth_errors, median_scale
from dl_perception.training.common import TrainingDataError
from dl_perception.training.depth import (DepthData, DepthTrainConfig, collect_samples,
                                          resize_depth, split_by_source)


def _write_rgb(path, width=64, height=48, value=100):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8))


def _write_depth(path, values):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), np.asarray(values, np.uint16))


def make_sequence(root, frames=6, world_seed=7, depth_m=None, size=(64, 48)):
    width, height = size
    writer = SequenceWriter(str(root), Camera(width, height, 50.0, 50.0, width / 2, height / 2),
                            {"world_seed": world_seed})
    rng = np.random.default_rng(world_seed)
    for i in range(frames):
        depth = np.full((height, width), depth_m if depth_m else 1.0 + i, np.float32)
        depth[:4] = np.nan  # sky: no return
        rgb = rng.integers(0, 255, (height, width, 3)).astype(np.uint8)
        writer.add(i * 0.1, rgb, depth, [0, 0, 0], [0, 0, 0, 1])
    writer.close()
    return str(root)


def test_nyu_style_layouts(tmp_path):
    root = tmp_path / "nyu"
    # the "sync" export: rgb_N.jpg beside sync_depth_N.png, in scene folders
    _write_rgb(root / "bedroom_0001" / "rgb_00000.jpg")
    _write_depth(root / "bedroom_0001" / "sync_depth_00000.png", np.full((48, 64), 1500))
    _write_depth(root / "bedroom_0001" / "sync_depth_00001.png", np.full((48, 64), 1500))  # no rgb
    # rgb/ + depth/ with matching names
    _write_rgb(root / "rgb" / "a.png")
    depth = np.full((48, 64), 2500)
    depth[0, 0] = 0
    _write_depth(root / "depth" / "a.png", depth)
    assert detect_format(str(root)) == "nyu"
    samples = read_depth_dataset(str(root))
    assert [os.path.basename(s.image) for s in samples] == ["rgb_00000.jpg", "a.png"]
    assert all(s.depth_scale == 1000.0 for s in samples)
    first = load_depth(samples[0].depth, samples[0].depth_scale)
    assert first.dtype == np.float32 and np.allclose(first, 1.5)  # millimetres
    second = load_depth(samples[1].depth, samples[1].depth_scale)
    assert np.isnan(second[0, 0]) and np.allclose(second.flat[1:], 2.5)  # 0 = no measurement


def test_kitti_style_layout(tmp_path):
    drive = tmp_path / "kitti" / "2011_09_26_drive_0001_sync"
    for camera in ("image_02", "image_03"):
        _write_rgb(drive / camera / "data" / "0000000005.png", 120, 36)
        sparse = np.zeros((36, 120), np.uint16)
        sparse[20:, ::7] = 256 * 12 + 128  # 12.5 m, laser rows only
        _write_depth(drive / "proj_depth" / "groundtruth" / camera / "0000000005.png", sparse)
    # annotated depth without its raw frame is skipped
    _write_depth(drive / "proj_depth" / "groundtruth" / "image_02" / "0000000006.png",
                 np.zeros((36, 120)))
    assert detect_format(str(tmp_path / "kitti")) == "kitti"
    samples = read_depth_dataset(str(tmp_path / "kitti"))
    assert len(samples) == 2 and all(s.depth_scale == 256.0 for s in samples)
    assert samples[0].image.endswith(os.path.join("image_02", "data", "0000000005.png"))
    depth = load_depth(samples[0].depth, samples[0].depth_scale)
    valid = np.isfinite(depth)
    assert valid.sum() == 16 * 18 and np.allclose(depth[valid], 12.5)


def test_sequences_and_folders_of_sequences(tmp_path):
    make_sequence(tmp_path / "all" / "seq_a", frames=3)
    make_sequence(tmp_path / "all" / "seq_b", frames=4, world_seed=8)
    assert detect_format(str(tmp_path / "all")) == "sequence"
    samples = read_depth_dataset(str(tmp_path / "all"))
    assert len(samples) == 7 and len({s.source for s in samples}) == 2
    depth = load_depth(samples[1].depth, samples[1].depth_scale)
    assert np.isnan(depth[:4]).all() and np.allclose(depth[4:], 2.0)
    train, val = split_by_source(samples, 0.34)
    assert sorted(train + val) == list(range(7))
    assert val == [2, 6]  # the last frame of each sequence


def test_unusable_folders_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no depth data found"):
        read_depth_dataset(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="not found"):
        read_depth_dataset(str(tmp_path / "missing"))
    _write_rgb(tmp_path / "eight" / "rgb" / "a.png")
    os.makedirs(tmp_path / "eight" / "depth")
    cv2.imwrite(str(tmp_path / "eight" / "depth" / "a.png"), np.full((48, 64), 9, np.uint8))
    (sample,) = read_depth_dataset(str(tmp_path / "eight"), "nyu")
    with pytest.raises(ValueError, match="16-bit"):
        load_depth(sample.depth, sample.depth_scale)
    with pytest.raises(ValueError, match="unknown depth dataset format"):
        read_depth_dataset(str(tmp_path / "eight"), "bogus")


def test_training_refuses_evaluation_worlds(tmp_path):
    make_sequence(tmp_path / "data" / "train_world", world_seed=12)
    make_sequence(tmp_path / "data" / "eval_world", world_seed=1042)
    with pytest.raises(TrainingDataError, match="1042"):
        collect_samples([str(tmp_path / "data")], "auto")
    with pytest.raises(TrainingDataError, match="reserved for evaluation"):
        collect_samples([str(tmp_path / "data" / "eval_world")], "sequence")
    samples, sources = collect_samples([str(tmp_path / "data" / "train_world")], "auto", stride=2)
    assert len(samples) == 3 and len(sources) == 1


def test_targets_follow_the_output_grid_and_scale_augmentation(tmp_path):
    model = models.create("depth", "cpu")
    # a depth ramp along x on a 320x240 frame: the centre-crop target at output cell j must be
    # the depth at the image column the cell looks at (x = 2 * (5 + 4j) + 0.5)
    seq = tmp_path / "ramp"
    writer = SequenceWriter(str(seq), Camera(320, 240, 160, 160, 160, 120), {"world_seed": 3})
    ramp = np.tile(1.0 + np.arange(320, dtype=np.float32) / 32, (240, 1))
    writer.add(0.0, np.zeros((240, 320, 3), np.uint8), ramp, [0, 0, 0], [0, 0, 0, 1])
    writer.close()
    constant = make_sequence(tmp_path / "flat", frames=1, depth_m=4.0, size=(320, 240))
    samples, _ = collect_samples([str(seq), constant], "auto")
    data = DepthData(samples, model, log=lambda *_: None)
    rgb, target = data.sample(0, None)
    assert rgb.shape == (120, 160, 3) and target.shape == (28, 38)
    columns = 2 * (5 + 4 * np.arange(38))
    assert np.allclose(target[10], 1.0 + columns / 32, atol=1 / 32 + 1e-3)
    # zoom s in [1, 1.5] divides depth by s; rotation leaves unmeasured corners
    cfg = DepthTrainConfig(max_scale=1.5, rotation_deg=5.0)
    rng = np.random.default_rng(0)
    flat = [data.sample(1, rng, cfg)[1] for _ in range(20)]
    values = np.concatenate([t[np.isfinite(t)] for t in flat])
    assert values.min() >= 4.0 / 1.5 - 1e-3 and values.max() <= 4.0 + 1e-3
    assert values.min() < 4.0 / 1.2
    assert all(np.isnan(t[:2]).all() for t in flat if np.isfinite(t[:2]).sum() == 0)


def test_resize_depth_keeps_sparse_measurements():
    depth = np.full((100, 100), np.nan, np.float32)
    depth[3::10, 7::10] = np.linspace(2.0, 9.0, 100).reshape(10, 10)  # between nearest's picks
    small = resize_depth(depth, 20, 20)
    nearest = cv2.resize(depth, (20, 20), interpolation=cv2.INTER_NEAREST)
    assert np.isfinite(nearest).sum() == 0 and np.isfinite(small).sum() == 100
    assert np.nanmin(small) >= 2.0 and np.nanmax(small) <= 9.0


def test_depth_error_measures():
    truth = np.array([[1.0, 2.0, 4.0], [8.0, 0.0, np.inf]], np.float32)
    truth_nan = truth.copy()
    truth_nan[1, 2] = np.nan
    prediction = 1.5 * np.nan_to_num(truth, posinf=1.0)
    for gt in (truth, truth_nan):
        errors = depth_errors(prediction, gt)
        # 0, inf and NaN ground truth are masked: 4 valid pixels, each predicted 1.5x too far
        assert errors["abs_rel"] == pytest.approx(0.5)
        assert errors["sq_rel"] == pytest.approx(0.25 * np.mean([1.0, 2.0, 4.0, 8.0]))
        assert errors["rmse"] == pytest.approx(0.5 * np.sqrt(np.mean([1.0, 4.0, 16.0, 64.0])))
        assert errors["rmse_log"] == pytest.approx(np.log(1.5))
        assert errors["si_rmse_log"] == pytest.approx(0.0, abs=1e-6)
        assert errors["delta_1"] == 0.0  # 1.25 < 1.5 < 1.25^2
        assert errors["delta_2"] == 1.0 and errors["delta_3"] == 1.0
    assert median_scale(prediction, truth) == pytest.approx(1 / 1.5)
    means = DepthErrorMeans()
    means.add(prediction, truth)
    means.add(prediction, np.zeros_like(truth))  # no valid pixel: skipped, counted
    summary = means.summary()
    assert summary["images"] == 1 and summary["images_without_valid_depth"] == 1
    assert summary["pixels"] == 4
    assert summary["median_scaled"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert summary["median_scaled"]["delta_1"] == 1.0
    assert json.dumps(summary)
