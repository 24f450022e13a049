"""PoseNet network and loss: both presets' shapes and a training step, auxiliary heads, the
normalised quaternion output, quaternion sign ambiguity, the beta and learned weightings, scene
normalisation through checkpoints."""
import math

import numpy as np
import pytest
import torch

from dl_perception import models
from dl_perception.core.checkpoint import CheckpointError
from dl_perception.core.geometry import (canonical_quaternion, matrix_to_quat, quat_to_matrix,
                                         rotation_angle_deg, slerp)
from dl_perception.core.imaging import DecodedImage
from dl_perception.models.posenet import PoseNet, pose_covariance
from dl_perception.training.posenet import (AUX_LOSS_WEIGHT, orientation_error, posenet_loss,
                                            scene_normalization)


def _batch(model, count=2):
    width, height = model.config.crop
    return torch.rand(count, 3, height, width)


@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_presets_shapes_and_one_training_step(preset):
    torch.manual_seed(0)
    model = models.create("posenet", preset, aux_heads=True, learned_weighting=True)
    assert model.config.crop == ([224, 224] if preset == "paper" else [144, 112])
    model.train()
    batch = _batch(model)
    out = model(batch)
    for prefix in ("", "aux1_", "aux2_"):
        assert out[prefix + "position"].shape == (2, 3)
        assert out[prefix + "quaternion"].shape == (2, 4)
    assert out["log_variance_position"].shape == (2,)
    target_q = torch.tensor([[0.0, 0.0, 0.0, 1.0]] * 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss, parts = posenet_loss(out, torch.zeros(2, 3), target_q, beta=500.0)
    assert torch.isfinite(loss)
    before = model.head.position.weight.detach().clone()
    log_var_before = model.log_variances.detach().clone()
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, model.head.position.weight)
    assert not torch.equal(log_var_before, model.log_variances)  # s_x, s_q are learned
    assert set(parts) >= {"position_error", "aux1_position_error", "aux2_orientation_error"}
    model.eval()
    with torch.inference_mode():
        out = model(batch)
    assert "aux1_position" not in out  # auxiliary heads only shape training


def test_paper_preset_is_googlenet():
    model = models.create("posenet", "paper")
    assert model.config.normalization == "lrn"
    assert any(isinstance(m, torch.nn.LocalResponseNorm) for m in model.modules())
    modules = [len(stage) for stage in model.stages]
    assert modules == [2, 5, 2]  # inception 3a-b, 4a-e, 5a-b
    assert model.stages[-1][-1].out_channels == 1024
    assert model.head.fc.out_features == 2048
    backbone = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head"))
    assert 5.8e6 < backbone < 6.1e6  # GoogLeNet without its classifier: about 6.0 M


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="normalization"):
        models.create("posenet", normalization="groupnorm")
    with pytest.raises(ValueError, match="aux_after"):
        models.create("posenet", aux_heads=True, aux_after=[[1, 7]])
    with pytest.raises(ValueError, match="unknown preset"):
        models.create("posenet", "huge")


def test_quaternion_output_is_normalised_even_for_large_raw_outputs():
    model = models.create("posenet").eval()
    with torch.no_grad():
        model.head.quaternion.bias.copy_(torch.tensor([30.0, -40.0, 0.0, 120.0]))
        out = model(_batch(model, 3))
    assert torch.allclose(out["quaternion"].norm(dim=1), torch.ones(3), atol=1e-6)
    assert (out["quaternion_raw"].norm(dim=1) > 50).all()


def test_orientation_error_handles_sign_and_scale():
    q = torch.nn.functional.normalize(torch.tensor([[0.1, -0.3, 0.2, 0.9]]), dim=1)
    other = torch.nn.functional.normalize(torch.tensor([[0.2, -0.1, 0.25, 0.8]]), dim=1)
    reference = orientation_error(other, q)
    assert reference.item() > 0.05
    # -q is the same rotation: same error, whichever sign the label or the prediction has
    assert torch.allclose(orientation_error(other, -q), reference)
    assert torch.allclose(orientation_error(-other, q), reference)
    assert orientation_error(-q, q).item() == pytest.approx(0.0, abs=1e-7)
    # unnormalised predictions and labels: the term is that of the unit quaternions
    assert torch.allclose(orientation_error(7.5 * other, q), reference)
    assert torch.allclose(orientation_error(other, 0.2 * q), reference)
    # for small angles the term is about half the rotation angle (2 sin(theta/4))
    angle = math.radians(rotation_angle_deg(other.numpy(), q.numpy())[0])
    assert reference.item() == pytest.approx(2 * math.sin(angle / 4), rel=1e-5)


def test_canonical_quaternion_and_geometry_helpers():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(200, 4))
    canon = canonical_quaternion(q)
    assert (canon[:, 3] >= 0).all()
    assert np.allclose(np.linalg.norm(canon, axis=1), 1.0)
    assert np.allclose(canonical_quaternion(-q), canon)  # both signs map to the same label
    assert np.allclose(rotation_angle_deg(canon, q), 0.0, atol=1e-5)
    # ties at w == 0 are broken deterministically
    assert np.allclose(canonical_quaternion([0.0, 0.0, -1.0, 0.0]), [0.0, 0.0, 1.0, 0.0])
    assert np.allclose(canonical_quaternion([-1.0, 0.0, 0.0, 0.0]), [1.0, 0.0, 0.0, 0.0])
    assert np.allclose(matrix_to_quat(quat_to_matrix(canon)), canon, atol=1e-9)
    q0, q1 = canon[0], canon[1]
    middle = slerp(q0, q1, 0.5)
    assert rotation_angle_deg(q0, middle) == pytest.approx(rotation_angle_deg(middle, q1), abs=1e-6)
    assert np.allclose(slerp(q0, -q1, 1.0) * np.sign(slerp(q0, -q1, 1.0) @ q1), q1)


def test_beta_weighting_and_aux_heads():
    position = torch.tensor([[1.0, 2.0, 3.0]])
    label_q = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    yaw = math.radians(10)
    predicted_q = torch.tensor([[0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)]])
    out = {"position": position + torch.tensor([[3.0, 4.0, 0.0]]), "quaternion": predicted_q}
    loss, parts = posenet_loss(out, position, label_q, beta=250.0)
    q_term = 2 * math.sin(yaw / 4)
    assert parts["position_error"] == pytest.approx(5.0)
    assert loss.item() == pytest.approx(5.0 + 250.0 * q_term, rel=1e-5)
    out.update({"aux1_position": position, "aux1_quaternion": label_q,
                "aux2_position": position + 1.0, "aux2_quaternion": label_q})
    with_aux, _ = posenet_loss(out, position, label_q, beta=250.0)
    assert with_aux.item() == pytest.approx(loss.item() + AUX_LOSS_WEIGHT * math.sqrt(3), rel=1e-5)
    l1, _ = posenet_loss({"position": out["position"], "quaternion": label_q}, position, label_q,
                         beta=1.0, norm="l1")
    assert l1.item() == pytest.approx(7.0)


def test_learned_weighting_loss_and_its_optimum():
    position = torch.zeros(4, 3)
    label_q = torch.tensor([[0.0, 0.0, 0.0, 1.0]] * 4)
    s = torch.tensor([0.5, -2.0], requires_grad=True)
    out = {"position": torch.full((4, 3), 2.0), "quaternion": label_q + 0.1,
           "log_variance_position": s[0].expand(4), "log_variance_orientation": s[1].expand(4)}
    loss, parts = posenet_loss(out, position, label_q, beta=1e6)  # beta is not used
    l_x, l_q = parts["position_error"], parts["orientation_error"]
    expected = l_x * math.exp(-0.5) + 0.5 + l_q * math.exp(2.0) - 2.0
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # the loss is stationary in s where exp(s) equals the mean error of the term
    s_opt = torch.tensor([math.log(l_x), math.log(l_q)], requires_grad=True)
    out.update({"log_variance_position": s_opt[0].expand(4),
                "log_variance_orientation": s_opt[1].expand(4)})
    posenet_loss(out, position, label_q, beta=0.0)[0].backward()
    assert torch.allclose(s_opt.grad, torch.zeros(2), atol=1e-5)


def test_pose_covariance_from_learned_weights():
    # exp(s_x) = mean position error 1.596 m <-> sigma 1 m per axis
    covariance = pose_covariance(math.log(2 * math.sqrt(2 / math.pi)), math.log(0.05))
    assert np.allclose(np.diag(covariance)[:3], 1.0)
    sigma_rotation = 2 * 0.05 / (2 * math.sqrt(2 / math.pi))
    assert np.allclose(np.diag(covariance)[3:], sigma_rotation ** 2)
    assert np.count_nonzero(covariance - np.diag(np.diag(covariance))) == 0


def test_scene_normalisation_survives_checkpoints(tmp_path):
    center, scale = scene_normalization(np.array([[10.0, -4.0, 1.0], [50.0, 16.0, 1.0]]))
    assert np.allclose(center, [30.0, 6.0, 1.0]) and scale == 20.0
    assert scene_normalization(np.ones((3, 3)))[1] == 1.0
    model = models.create("posenet", learned_weighting=True)
    model.set_scene(center, scale, "map")
    model.set_pixel_statistics([0.4, 0.5, 0.6], [0.2, 0.2, 0.3])
    model.eval()
    batch = _batch(model)
    with torch.inference_mode():
        raw, _ = model.head(torch.nn.functional.adaptive_avg_pool2d(
            _features(model, batch), 1).flatten(1))
        out = model(batch)
    assert torch.allclose(out["position"], torch.tensor(center).float() + scale * raw, atol=1e-4)
    path = str(tmp_path / "posenet.safetensors")
    model.save(path)
    loaded = models.load(path, expected="posenet")
    assert loaded.config.frame_id == "map" and loaded.config.scene_scale == 20.0
    with torch.inference_mode():
        again = loaded(batch)
    for key in ("position", "quaternion", "log_variance_orientation"):
        assert torch.allclose(out[key], again[key], atol=1e-6)
    with pytest.raises(CheckpointError, match="expected 'dronet'"):
        models.load(path, expected="dronet")


def _features(model, batch):
    x = model.stem((batch - model.pixel_mean) / model.pixel_std)
    for s, modules in enumerate(model.stages):
        for module in modules:
            x = module(x)
        if s < len(model.stage_pools):
            x = model.stage_pools[s](x)
    return x


@pytest.mark.parametrize("encoding,channels", [("rgb8", 3), ("bgr8", 3), ("mono8", 1),
                                               ("mono16", 1)])
def test_preprocess_any_encoding_centre_crop(encoding, channels):
    model = PoseNet(PoseNet.make_config())
    dtype = np.uint16 if encoding == "mono16" else np.uint8
    shape = (240, 320, channels) if channels > 1 else (240, 320)
    pixels = np.random.default_rng(0).integers(0, 200, shape).astype(dtype)
    tensor = model.preprocess(DecodedImage(pixels, encoding))
    assert tensor.shape == (1, 3, 112, 144) and 0.0 <= float(tensor.min()) <= float(tensor.max()) <= 1.0
    # resized to 160x120 then the centre 144x112
    resized = model.resize(np.zeros((240, 320, 3), np.uint8))
    assert resized.shape == (120, 160, 3)
