"""DroNet: architecture, parity with the official Keras model, checkpoints, training recipe."""
import csv
import math
import os

import cv2
import numpy as np
import pytest
import torch

from dl_perception import models
from dl_perception.core.checkpoint import CheckpointError
from dl_perception.core.imaging import DecodedImage
from dl_perception.models.dronet import tf_same_padding
from dl_perception.training.dronet import (DroNetTrainConfig, collision_weight, dronet_loss,
                                           hard_mining_k, hard_mining_mean)


def test_tensorflow_same_padding():
    assert tf_same_padding(200, 5, 2) == (1, 2)  # the extra pixel goes after, as TF does
    assert tf_same_padding(49, 3, 2) == (1, 1)
    assert tf_same_padding(50, 3, 2) == (0, 1)
    assert tf_same_padding(25, 1, 2) == (0, 0)
    assert tf_same_padding(7, 3, 1) == (1, 1)


def test_architecture_shapes_and_size():
    model = models.create("dronet").eval()
    out = model(torch.zeros(2, 1, 200, 200))
    assert set(out) == {"steering", "collision_logit", "collision_probability"}
    assert out["steering"].shape == (2,) and out["collision_probability"].shape == (2,)
    assert model.steering.in_features == 7 * 7 * 128
    # the official HDF5 holds 321,634 values: 320,930 trainable + 704 BN moving statistics
    assert sum(p.numel() for p in model.parameters()) == 320930
    assert sum(b.numel() for n, b in model.named_buffers() if "running" in n) == 704
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_preprocessing_matches_the_authors():
    model = models.create("dronet")
    gray = np.random.default_rng(0).integers(0, 255, (244, 324), dtype=np.uint8)
    batch = model.preprocess(DecodedImage(gray, "mono8"))
    expected = cv2.resize(gray, (320, 240), interpolation=cv2.INTER_LINEAR)[40:, 60:260]
    np.testing.assert_allclose(batch[0, 0].numpy(), expected.astype(np.float32) / 255.0, atol=1e-7)
    rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    np.testing.assert_array_equal(model.preprocess(DecodedImage(rgb, "rgb8")).numpy(), batch.numpy())


def _reference(shared_data):
    with open(os.path.join(shared_data, "dronet_collision", "reference_outputs.keras.csv")) as f:
        return list(csv.DictReader(f))


def test_official_weights_reproduce_keras(official_dronet, shared_data):
    model = models.load(official_dronet, expected="dronet")
    rows = _reference(shared_data)
    assert len(rows) == 52
    images = [cv2.imread(os.path.join(shared_data, "dronet_collision", r["sequence"], r["frame"]),
                         cv2.IMREAD_GRAYSCALE) for r in rows]
    batch = torch.cat([model.preprocess(DecodedImage(img, "mono8")) for img in images])
    with torch.inference_mode():
        out = model(batch)
    steering = np.array([float(r["steering"]) for r in rows])
    collision = np.array([float(r["collision"]) for r in rows])
    assert np.abs(out["steering"].numpy() - steering).max() < 1e-4
    assert np.abs(out["collision_probability"].numpy() - collision).max() < 1e-4


def test_checkpoint_round_trip_and_refusals(tmp_path):
    model = models.create("dronet").eval()
    path = str(tmp_path / "d.safetensors")
    model.save(path, info={"note": "test"})
    loaded = models.load(path, expected="dronet")
    x = torch.rand(1, 1, 200, 200)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x)["steering"], model(x)["steering"])
    assert loaded.checkpoint_info == {"note": "test"}
    with pytest.raises(CheckpointError, match="expected 'netvlad'"):
        models.load(path, expected="netvlad")
    with pytest.raises(CheckpointError, match="not found"):
        models.load(str(tmp_path / "missing.safetensors"))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(CheckpointError, match="not a readable"):
        models.load(str(corrupt))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(open(path, "rb").read()[:5000])
    with pytest.raises(CheckpointError):
        models.load(str(truncated))
    # a checkpoint whose tensors don't fit the declared config
    state = dict(model.state_dict())
    state["steering.weight"] = torch.zeros(1, 10)
    from dl_perception.core.checkpoint import save_checkpoint
    bad = model.to_checkpoint()
    bad.state_dict = state
    save_checkpoint(str(tmp_path / "bad.safetensors"), bad)
    with pytest.raises(CheckpointError, match="wrong shape"):
        models.load(str(tmp_path / "bad.safetensors"))


def test_hard_mining_keeps_the_k_largest_valid_losses():
    losses = torch.tensor([0.1, 5.0, 2.0, 9.0, 1.0])
    valid = torch.tensor([True, True, True, False, True])
    assert math.isclose(float(hard_mining_mean(losses, valid, 2)), (5.0 + 2.0) / 2, rel_tol=1e-6)
    # fewer valid samples than k: all of them, still divided by k (official behaviour)
    assert math.isclose(float(hard_mining_mean(losses, valid, 8)), (0.1 + 5 + 2 + 1) / 8,
                        rel_tol=1e-6)
    assert float(hard_mining_mean(losses, torch.zeros(5, dtype=torch.bool), 3)) == 0.0


def test_official_schedules():
    cfg = DroNetTrainConfig()
    assert collision_weight(0, cfg) == 0.0 and collision_weight(10, cfg) == 0.0
    assert math.isclose(collision_weight(20, cfg), 1 - math.exp(-1))
    assert hard_mining_k(0, cfg, 10) == 32 and hard_mining_k(30, cfg, 10) == 32
    assert hard_mining_k(1000, cfg, 10) == 10 and hard_mining_k(1000, cfg, 5) == 5


def test_loss_uses_only_available_labels():
    outputs = {"steering": torch.tensor([0.5, 0.0]), "collision_logit": torch.tensor([0.0, 0.0])}
    steering = torch.tensor([0.0, float("nan")])
    collision = torch.tensor([float("nan"), 1.0])
    loss, parts = dronet_loss(outputs, steering, collision, 2, 2, beta=1.0)
    assert math.isclose(parts["steering_mse"], 0.25 / 2)
    assert math.isclose(parts["collision_bce"], math.log(2) / 2, rel_tol=1e-6)
    assert math.isclose(float(loss), 0.125 + math.log(2) / 2, rel_tol=1e-6)


def test_training_step_learns_a_batch():
    torch.manual_seed(0)
    model = models.create("dronet").train()
    images = torch.rand(8, 1, 200, 200)
    steering = torch.linspace(-1, 1, 8)
    collision = torch.tensor([0.0, 1.0] * 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        loss, _ = dronet_loss(model(images), steering, collision, 8, 8, beta=1.0)
        loss = loss + model.regularization_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * losses[0]


def test_flip_augmentation_mirrors_the_image_and_negates_steering():
    from dl_perception.training.dronet import DroNetData
    data = DroNetData.__new__(DroNetData)  # the arrays only, no image files
    data.crops = np.tile(np.arange(200, dtype=np.uint8)[None, None, :], (4, 200, 1))
    data.steering = np.array([0.5, -0.25, 1.0, 0.0], np.float32)
    data.collision = np.array([0, 1, 0, 1], np.float32)
    cfg = DroNetTrainConfig(flip_probability=1.0, shift_fraction=0.0, rotation_deg=0.0)
    images, steering, collision = data.batch(np.arange(4), np.random.default_rng(0), cfg)
    assert torch.equal(steering, -torch.from_numpy(data.steering))
    assert torch.equal(collision, torch.from_numpy(data.collision))
    assert images[0, 0, 0, 0] == pytest.approx(199 / 255) and images[0, 0, 0, -1] == 0.0
    images, steering, _ = data.batch(np.arange(4), np.random.default_rng(0),
                                     DroNetTrainConfig(shift_fraction=0.0, rotation_deg=0.0))
    assert torch.equal(steering, torch.from_numpy(data.steering)) and images[0, 0, 0, 0] == 0.0
