"""LIFT training: pairs with known geometry (homographies, sequences with depth and poses), the
losses, and `dl-perception train lift` end to end on tiny data."""
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from dl_perception.datasets.sequence import read_sequence
from dl_perception.training.common import TrainingDataError
from dl_perception.models.lift import LIFT
from dl_perception.training.lift import (LIFTTrainConfig, PairBank, PairSource, apply_homography,
                                         classification_loss, descriptor_loss, descriptor_step,
                                         homography_pair, local_similarity, overlap_loss,
                                         pair_points, sequence_pair)

sys.path.insert(0, os.path.dirname(__file__))
from scenes import PlanesScene, texture  # noqa: E402

BIN = os.path.dirname(sys.executable)


def _agreement(pair, points, mapped):
    """Correlation of (smoothed) intensities at corresponding points of A and B."""
    a = cv2.GaussianBlur(pair.image_a, (0, 0), 1.5)
    b = cv2.GaussianBlur(pair.image_b, (0, 0), 1.5)
    va = cv2.remap(a, points[:, :1].astype(np.float32), points[:, 1:].astype(np.float32),
                   cv2.INTER_LINEAR)[:, 0]
    vb = cv2.remap(b, mapped[:, :1].astype(np.float32), mapped[:, 1:].astype(np.float32),
                   cv2.INTER_LINEAR)[:, 0]
    return np.corrcoef(va, vb)[0, 1]


def test_homography_pairs_correspond():
    cfg = LIFTTrainConfig(image_size=[160, 120])
    rng = np.random.default_rng(1)
    pair = homography_pair(texture(0).astype(np.float32) / 255, rng, cfg)
    points = rng.uniform([5, 5], [155, 115], (400, 2))
    mapped, valid = pair.correspond(points)
    assert valid.sum() > 50
    assert _agreement(pair, points[valid], mapped[valid]) > 0.8
    # a wrong map does not agree: the test can fail
    assert _agreement(pair, points[valid], mapped[valid] + 7) < 0.6


def test_local_similarity_of_a_similarity_is_exact():
    angle, zoom = 0.7, 1.6
    H = np.array([[zoom * math.cos(angle), -zoom * math.sin(angle), 10],
                  [zoom * math.sin(angle), zoom * math.cos(angle), -5], [0, 0, 1.0]])

    def correspond(points):
        return apply_homography(H, points), np.ones(len(points), bool)
    points = np.array([[10.0, 20.0], [50.0, 60.0]])
    mapped, scale, rotation, valid = local_similarity(correspond, points, np.array([2.0, 3.0]))
    assert valid.all()
    np.testing.assert_allclose(scale, zoom, rtol=1e-9)
    np.testing.assert_allclose(rotation, angle, rtol=1e-9)
    np.testing.assert_allclose(mapped, apply_homography(H, points))


def test_sequence_pairs_correspond_through_depth_and_poses(tmp_path):
    root = PlanesScene(160, 120).write_sequence(str(tmp_path / "seq"), 6)
    sequence = read_sequence(root)
    cfg = LIFTTrainConfig(image_size=[160, 120])
    rng = np.random.default_rng(0)
    pair = sequence_pair(sequence, 0, 4, cfg, rng)
    points = rng.uniform([5, 5], [155, 115], (400, 2))
    mapped, valid = pair.correspond(points)
    assert valid.sum() > 100
    assert _agreement(pair, points[valid], mapped[valid]) > 0.8
    found = pair_points(pair, cfg, rng)
    assert len(found.points_a) > 10 and len(found.negatives) > 0
    assert np.all(found.sigma_b > 0)


def test_training_refuses_evaluation_worlds(tmp_path):
    root = PlanesScene(64, 48).write_sequence(str(tmp_path / "eval_world"), 2, world_seed=1042)
    with pytest.raises(TrainingDataError, match="evaluation world"):
        PairSource([], [root], LIFTTrainConfig(), np.random.default_rng(0))


def test_losses():
    eye = torch.eye(4)
    loss, terms = descriptor_loss(eye, eye, margin=1.0)  # matches identical, others sqrt(2) apart
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    same = torch.ones(4, 4) / 2
    loss, _ = descriptor_loss(same, same, margin=1.0)  # everything identical: the hinge bites
    assert loss.item() == pytest.approx(1.0, abs=1e-5)
    points = torch.tensor([[0.0, 0.0], [1.0, -2.0]])
    assert overlap_loss(points, points, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert overlap_loss(points, points + 20.0, 4.0).item() > 1.0
    assert classification_loss([torch.tensor([2.0])], torch.tensor([-2.0])).item() == 0.0
    assert classification_loss([torch.tensor([0.0])], torch.tensor([0.0])).item() == pytest.approx(1.0)


def test_descriptor_step_at_learned_orientations_needs_no_known_rotation(tmp_path):
    """`descriptor_orientation: learned` crops both patches at the orientation network's angles
    (as at run time): the known rotation of the pair plays no part; with `known` it does."""
    from dataclasses import replace
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "0.png"), texture(0, 300))
    cfg = LIFTTrainConfig(image_size=[160, 120])
    rng = np.random.default_rng(0)
    bank = PairBank(PairSource([str(images)], [], cfg, rng), 1, cfg, rng, torch.device("cpu"), 4)
    batch = bank.sample(16)
    wrong = {**batch, "rotation": batch["rotation"] + 1.0}
    model = LIFT(LIFT.make_config("cpu"))

    def loss(config, sample):
        return descriptor_step(model, bank, sample, config, torch.Generator().manual_seed(0))[0]
    learned = replace(cfg, descriptor_orientation="learned")
    assert torch.isfinite(loss(learned, batch))
    assert torch.equal(loss(learned, batch), loss(learned, wrong))
    assert not torch.equal(loss(cfg, batch), loss(cfg, wrong))
    with pytest.raises(ValueError, match="known' or 'learned"):
        loss(replace(cfg, descriptor_orientation="sift"), batch)


def test_train_command_end_to_end(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for seed in range(2):
        cv2.imwrite(str(images / f"{seed}.png"), texture(seed, 300))
    sequence = PlanesScene(160, 120).write_sequence(str(tmp_path / "seq"), 5)
    out = tmp_path / "lift.safetensors"
    command = [os.path.join(BIN, "dl-perception"), "train", "lift", "--images", str(images),
               "--sequences", sequence, "--out", str(out), "--image-size", "160", "120",
               "--descriptor-steps", "2", "--orientation-steps", "1", "--detector-steps", "1",
               "--batch-size", "8", "--pairs-in-memory", "2", "--validation-pairs", "1",
               "--validate-every", "2", "--threads", "1", "--device", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "descriptor 2/2" in result.stdout and "detector 1/1" in result.stdout
    from dl_perception import models
    model = models.load(str(out), expected="lift")
    assert set(model.checkpoint_info["stages"]) == {"descriptor", "orientation", "detector"}
    assert model.checkpoint_info["trained_on"]["sequences"] == [sequence]
    # every stage keeps a history and a state to resume from; a resumed finished run trains no
    # further step
    history = (tmp_path / "lift.safetensors.descriptor.history.csv").read_text().splitlines()
    assert len(history) == 2  # header + one chunk of 2 steps
    assert (tmp_path / "lift.safetensors.detector.resume.pt").is_file()
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "descriptor: resuming after step 2" in resumed.stdout
    assert "descriptor 2/2" not in resumed.stdout


def test_training_refuses_the_validation_sets(shared_data):
    for name in ("homography", "churchill_homography", os.path.join("strecha_mvs", "fountain-P11"),
                 "strecha_mvs"):
        with pytest.raises(TrainingDataError, match="validation"):
            PairSource([os.path.join(shared_data, name)], [], LIFTTrainConfig(),
                       np.random.default_rng(0))


def test_covariance_loss_sees_whether_the_score_map_moves_with_the_image():
    """B's map is A's moved 3 px right: resampled through the true mapping it matches A's
    (loss near 0); through a wrong one (identity) it does not."""
    from dl_perception.training.lift import covariance_loss, warp_score_map
    rng = np.random.default_rng(0)
    score_a = cv2.GaussianBlur(rng.normal(0, 1, (96, 96)).astype(np.float32), (0, 0), 2) * 8
    score_b = np.roll(score_a, 3, axis=1)
    a, b = torch.from_numpy(score_a)[None, None], torch.from_numpy(score_b)[None, None]
    shift = np.array([[1.0, 0, 3], [0, 1, 0], [0, 0, 1]])
    right, valid = warp_score_map(b, shift, margin=8)
    wrong, valid_wrong = warp_score_map(b, np.eye(3), margin=8)
    good = covariance_loss(a, right, valid, 16, 10.0)
    bad = covariance_loss(a, wrong, valid_wrong, 16, 10.0)
    assert good < 0.01 and bad > 5 * good
    assert covariance_loss(a, right, torch.zeros_like(valid), 16, 10.0) is None


def test_covariance_stage_trains_the_detector_only_and_keeps_the_keypoint_rate(tmp_path):
    from dl_perception.training.lift import keypoint_rate_threshold, train_lift
    images = tmp_path / "images"
    images.mkdir()
    for seed in range(2):
        cv2.imwrite(str(images / f"{seed}.png"), texture(seed, 300))
    torch.manual_seed(0)
    start = LIFT(LIFT.make_config("cpu"))
    start.save(str(tmp_path / "start.safetensors"))
    cfg = LIFTTrainConfig(image_size=[160, 120], covariance_steps=4, covariance_crop=96,
                          covariance_batch=2, pairs_in_memory=1,
                          validation_pairs=1, batch_size=8, validate_every=4)
    trained = train_lift([str(images)], [], str(tmp_path / "out.safetensors"), cfg,
                         torch.device("cpu"), init_weights=str(tmp_path / "start.safetensors"),
                         stages=("covariance",), log=lambda _: None)
    before, after = start.state_dict(), trained.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith("detector.") for name in changed)
    assert set(trained.checkpoint_info["stages"]) == {"covariance"}
    # the stored threshold gives the fine-tuned detector the initial one's keypoint count
    photos = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
              for path in sorted(images.iterdir())]

    def count(model, threshold=None):
        settings = model.default_settings(max_keypoints=10**7) if threshold is None else \
            model.default_settings(max_keypoints=10**7, score_threshold=threshold)
        return sum(len(model.detect(torch.from_numpy(p)[None, None], settings)[2])
                   for p in photos)
    with torch.inference_mode():
        assert count(trained) == pytest.approx(count(start), rel=0.02)
        assert trained.config.score_threshold != start.config.score_threshold
        # the same detector: a threshold between the same two scores, the same count
        assert count(start, keypoint_rate_threshold(start, start, photos)) == count(start)
