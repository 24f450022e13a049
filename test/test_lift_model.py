"""LIFT: architecture as in the papers (both presets), spatial transformer geometry, run-time
detection, flat frames, checkpoints, one training step of each stage for the paper preset."""
import dataclasses
import math
import sys

import numpy as np
import pytest
import torch

from dl_perception import models
from dl_perception.core.checkpoint import CheckpointError
from dl_perception.core.imaging import DecodedImage
from dl_perception.models.lift import (GHH, LIFT, _is_peak, gaussian_blur, image_pyramid,
                                       sample_patches, soft_argmax)

sys.path.insert(0, __import__("os").path.dirname(__file__))
from scenes import texture  # noqa: E402


def _image(height=120, width=160, seed=0):
    return torch.from_numpy(texture(seed, 256)[:height, :width].astype(np.float32) / 255)[None, None]


@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_architecture_and_outputs(preset):
    model = models.create("lift", preset).eval()
    config = model.config
    assert model.detector.conv.kernel_size == (config.detector_filter,) * 2
    assert model.detector.conv.out_channels == 16  # GHH 4 x 4, as TILDE and LIFT
    assert [model.descriptor.conv1.kernel_size[0], model.descriptor.conv2.kernel_size[0],
            model.descriptor.conv3.kernel_size[0]] == [7, 6, 5]
    assert model.descriptor.conv3.out_channels == 128
    if preset == "paper":
        assert config.detector_filter == 25
        assert [model.descriptor.conv1.out_channels, model.descriptor.conv2.out_channels] == [32, 64]
        assert [model.orientation.conv1.out_channels, model.orientation.conv2.out_channels,
                model.orientation.conv3.out_channels] == [10, 20, 50]
    patches = torch.rand(5, 1, 64, 64)
    descriptors = model.descriptor(patches)
    assert descriptors.shape == (5, 128)
    np.testing.assert_allclose(descriptors.norm(dim=1).detach().numpy(), 1.0, atol=1e-5)
    vectors = model.orientation(patches)
    np.testing.assert_allclose(vectors.norm(dim=1).detach().numpy(), 1.0, atol=1e-5)
    with torch.inference_mode():
        out = model(_image())
    assert set(out) == {"keypoints", "scales", "orientations", "scores", "descriptors"}
    n = len(out["keypoints"])
    assert 0 < n <= config.max_keypoints
    assert out["descriptors"].shape == (n, 128)
    assert torch.all(out["scores"][:-1] >= out["scores"][1:])  # strongest first
    assert torch.all(out["orientations"].abs() <= math.pi + 1e-6)
    levels = np.log2([config.detector_sigma * f for f in config.scales])
    # interpolated between scale neighbours: within half a level step (a quarter octave) of a level
    distance = np.abs(np.log2(out["scales"].numpy())[:, None] - levels[None]).min(axis=1)
    assert distance.max() <= 0.25 + 1e-5 and len(np.unique(out["scales"].numpy())) > len(levels)
    with pytest.raises(ValueError, match="one grayscale image"):
        model(torch.zeros(2, 1, 64, 64))


def test_ghh_is_a_signed_sum_of_maxima():
    ghh = GHH(2, 3)
    x = torch.tensor([[1.0, 5.0, 2.0, -1.0, 0.5, 4.0]])
    assert ghh(x).item() == pytest.approx(5.0 - 4.0)


def test_spatial_transformer_crops_rotates_and_uses_the_pyramid():
    image = torch.rand(2, 1, 64, 96)
    pyramid = image_pyramid(image, 3)
    # one sample per pixel, axis aligned, centre between pixels -> exactly the image pixels
    centre = torch.tensor([[40.5, 20.5]])
    patch = sample_patches(pyramid, centre, torch.tensor([1.0]), torch.tensor([0.0]), 8, 8.0,
                           torch.tensor([1]))
    np.testing.assert_allclose(patch[0, 0].numpy(), image[1, 0, 17:25, 37:45].numpy(), atol=1e-6)
    # one image: the bilinear path gives what the volume path gives for that image
    alone = sample_patches(image_pyramid(image[1:], 3), centre, torch.tensor([1.0]),
                           torch.tensor([0.3]), 8, 8.0)
    in_volume = sample_patches(pyramid, centre, torch.tensor([1.0]), torch.tensor([0.3]), 8, 8.0,
                               torch.tensor([1]))
    np.testing.assert_allclose(alone.numpy(), in_volume.numpy(), atol=1e-6)
    # a quarter turn turns the patch
    turned = sample_patches(pyramid, centre, torch.tensor([1.0]), torch.tensor([math.pi / 2]), 8,
                            8.0, torch.tensor([1]))
    np.testing.assert_allclose(torch.rot90(patch[0, 0], 1, (0, 1)).numpy(), turned[0, 0].numpy(),
                               atol=1e-6)
    # four input pixels per sample: read from pyramid level 2 (2x2 averages of 2x2 averages)
    big = sample_patches(pyramid, torch.tensor([[47.5, 31.5]]), torch.tensor([4.0]),
                         torch.tensor([0.0]), 8, 8.0, torch.tensor([0]))
    np.testing.assert_allclose(big[0, 0].numpy(), pyramid[2][0, 0, 4:12, 8:16].numpy(), atol=1e-6)
    # differentiable in the keypoint geometry
    centre = torch.tensor([[40.0, 20.0]], requires_grad=True)
    angle = torch.tensor([0.3], requires_grad=True)
    sample_patches(pyramid, centre, torch.tensor([2.0]), angle, 16, 8.0).sum().backward()
    assert centre.grad.abs().sum() > 0 and angle.grad.abs().sum() > 0


def test_soft_argmax_finds_the_peak():
    scores = torch.zeros(1, 1, 9, 11)
    scores[0, 0, 6, 3] = 5.0
    position, score = soft_argmax(scores, 10.0)
    assert position[0].tolist() == pytest.approx([3.0, 6.0], abs=1e-3)
    assert score.item() == pytest.approx(5.0, abs=1e-3)


def _anisotropic_peak(sigma_x: float, sigma_y: float, angle: float = 0.3) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij")
    u = (xs - 20) * math.cos(angle) + (ys - 20) * math.sin(angle)
    v = -(xs - 20) * math.sin(angle) + (ys - 20) * math.cos(angle)
    return torch.exp(-u ** 2 / (2 * sigma_x ** 2) - v ** 2 / (2 * sigma_y ** 2))


def test_ridge_maxima_are_not_peaks():
    """The edge test keeps a round maximum and drops one on a ridge (curvature ratio 16 > 10),
    also when the ridge is not along a pixel axis."""
    centre = torch.tensor([20]), torch.tensor([20])
    assert _is_peak(_anisotropic_peak(3, 3), *centre, 10.0).item()
    assert _is_peak(_anisotropic_peak(4, 3), *centre, 10.0).item()
    assert not _is_peak(_anisotropic_peak(12, 3), *centre, 10.0).item()
    saddle = _anisotropic_peak(3, 3) - 2 * _anisotropic_peak(1.5, 20)
    assert not _is_peak(saddle, *centre, 10.0).item()
    masked = _anisotropic_peak(12, 3)
    masked[20, 21] = float("-inf")  # next to a masked (flat) pixel: kept
    assert _is_peak(masked, *centre, 10.0).item()


def test_gaussian_blur_keeps_levels_and_moves_no_peak():
    flat = torch.full((1, 1, 20, 30), 2.5)
    assert torch.allclose(gaussian_blur(flat, 0.7), flat)
    spike = torch.zeros(1, 1, 21, 21)
    spike[0, 0, 10, 12] = 1.0
    blurred = gaussian_blur(spike, 1.0)
    assert blurred.shape == spike.shape and blurred.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert divmod(int(blurred.argmax()), 21) == (10, 12)
    assert blurred[0, 0, 10, 13].item() == pytest.approx(blurred[0, 0, 10, 11].item())


@pytest.mark.parametrize("pixels", [0, 255, 128])
def test_flat_frames_give_no_keypoints(pixels):
    model = models.create("lift").eval()
    frame = DecodedImage(np.full((120, 160, 3), pixels, np.uint8), "rgb8")
    with torch.inference_mode():
        out = model(model.preprocess(frame))
    assert len(out["keypoints"]) == 0 and out["descriptors"].shape == (0, 128)


def test_detection_settings_take_effect():
    """Settings are per call (a frozen argument), never state of the model: one model serves
    callers with different settings, and a call without them uses the config's."""
    model = models.create("lift").eval()
    image = _image(160, 200)
    with torch.inference_mode():
        many = model.detect(image)[0]
        assert len(model.detect(image, model.default_settings(max_keypoints=7))[0]) == 7
        assert len(model(image, settings=model.default_settings(max_keypoints=7))["keypoints"]) == 7
        assert torch.equal(model.detect(image)[0], many)  # the 7 did not stick
        single = model.detect(image, model.default_settings(max_keypoints=10000, scales=(1.0,)))
        assert torch.all(single[1] == model.config.detector_sigma)
        wider = model.default_settings(max_keypoints=10000, scales=(1.0,), nms_radius=6)
        assert len(model.detect(image, wider)[0]) < len(single[0])
        edge_test = model.default_settings(max_keypoints=10000, scales=(1.0,), edge_ratio=10.0)
        assert len(model.detect(image, edge_test)[0]) < len(single[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.default_settings().max_keypoints = 3
    assert len(many) > 7
    # keypoints are in input-pixel coordinates, away from the border
    assert many[:, 0].min() >= model.config.border - 1 and many[:, 0].max() <= 200 - model.config.border


def test_execution_choices_change_speed_not_results():
    model = models.create("lift").eval()
    image = _image(160, 200)
    with torch.inference_mode():
        reference = model(image)
        assert len(reference["keypoints"]) > 64  # several patch batches below
        batched = model(image, patch_batch=32)
        reduced = model(image, patch_batch=32, patch_precision="reduced")
    for out in (batched, reduced):  # the detector stays fp32: the same keypoints
        torch.testing.assert_close(out["keypoints"], reference["keypoints"], rtol=0, atol=0)
    torch.testing.assert_close(batched["descriptors"], reference["descriptors"], rtol=0, atol=1e-5)
    assert reduced["descriptors"].dtype == torch.float32
    assert 0 < (reduced["descriptors"] - reference["descriptors"]).abs().max() < 0.05
    with pytest.raises(ValueError, match="no execution choice"):
        model(image, patch_batch=7)
    assert model.default_execution() == {"patch_batch": 0, "patch_precision": "fp32"}


def test_checkpoint_round_trip(tmp_path):
    model = models.create("lift", "paper").eval()
    path = str(tmp_path / "lift.safetensors")
    model.save(path, info={"note": "test"})
    loaded = models.load(path, expected="lift")
    assert loaded.config == model.config
    image = _image()
    with torch.inference_mode():
        a, b = model(image), loaded(image)
    torch.testing.assert_close(a["descriptors"], b["descriptors"])
    with pytest.raises(CheckpointError, match="expected 'dronet'"):
        models.load(path, expected="dronet")


def test_paper_preset_trains_one_step_per_stage(tmp_path):
    """Each stage's loss gives finite gradients to its own network only (paper configuration)."""
    from dl_perception.training.lift import (LIFTTrainConfig, PairBank, PairSource,
                                             descriptor_step, detector_step, orientation_step)
    import cv2
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "t.png"), texture(3, 512))
    cfg = LIFTTrainConfig(preset="paper", batch_size=6, image_size=[160, 120],
                          keypoints_per_pair=40, max_sigma=6.0)
    rng = np.random.default_rng(0)
    bank = PairBank(PairSource([str(folder)], [], cfg, rng), 2, cfg, rng, torch.device("cpu"), 3)
    model = LIFT(LIFT.make_config("paper"))
    for step, module in ((descriptor_step, model.descriptor), (orientation_step, model.orientation),
                         (detector_step, model.detector)):
        model.zero_grad()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for parameter in module.parameters():
            parameter.requires_grad_(True)
        loss, terms = step(model, bank, bank.sample(cfg.batch_size), cfg)
        loss.backward()
        grads = [p.grad for p in module.parameters()]
        assert torch.isfinite(loss) and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0, step.__name__
