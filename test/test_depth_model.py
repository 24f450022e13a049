"""The Eigen et al. 2014 network: layer sizes of the paper's configurations, the training step of
each stack, the scale-invariant loss, and images of any size and aspect in and out."""
import os

import numpy as np
import pytest
import torch

from dl_perception import models
from dl_perception.core.imaging import DecodedImage
from dl_perception.models.depth import (OUTPUT_OFFSET, OUTPUT_STEP, EigenDepth,
                                        coarse_feature_size)
from dl_perception.training.depth import DepthTrainConfig, _optimizer, scale_invariant_loss


def test_paper_configurations_have_the_sizes_of_fig_1():
    # Fig. 1: Coarse 5 at 8x6 (NYU) / 17x4 (KITTI); outputs 74x55 and 142x27
    assert coarse_feature_size(304, 228) == (8, 6)
    assert coarse_feature_size(576, 172) == (17, 4)
    nyu = models.create("depth", "paper")
    assert (nyu.output_width, nyu.output_height) == (74, 55)
    assert [nyu.coarse1.out_channels, nyu.coarse2.out_channels, nyu.coarse3.out_channels,
            nyu.coarse4.out_channels, nyu.coarse5.out_channels] == [96, 256, 384, 384, 256]
    assert nyu.coarse6.out_features == 4096 and nyu.coarse7.out_features == 74 * 55
    assert nyu.coarse1.kernel_size == (11, 11) and nyu.coarse1.stride == (4, 4)
    assert nyu.fine1.kernel_size == (9, 9) and nyu.fine1.stride == (2, 2)
    assert nyu.fine1.out_channels == 63 and nyu.fine3.in_channels == 64  # + the coarse map
    assert nyu.fine3.kernel_size == (5, 5) and nyu.fine4.out_channels == 1
    kitti = models.create("depth", "paper_kitti")
    assert (kitti.output_width, kitti.output_height) == (142, 27)
    with torch.inference_mode():
        out = kitti.eval()(torch.rand(1, 3, 172, 576))
    assert out["log_depth"].shape == (1, 1, 27, 142)


@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_one_training_step_per_stack(preset):
    """Coarse stage: only the coarse stack learns. Fine stage: the coarse stack stays fixed (no
    gradient reaches it), as the paper trains it. Each step lowers the loss on its batch."""
    torch.manual_seed(0)
    model = models.create("depth", preset).eval()  # no dropout: losses before/after compare
    width, height = model.config.input_size
    images = torch.rand(2, 3, height, width)
    targets = torch.rand(2, 1, model.output_height, model.output_width) * 5 + 1
    targets[0, 0, :3] = 0.0  # no measurement
    for stack, output in (("coarse", "coarse_log_depth"), ("fine", "log_depth")):
        trained = {id(p) for layer, _ in model.layer_learning_rates(stack)
                   for p in layer.parameters()}
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        optimizer = _optimizer(model, stack, DepthTrainConfig(lr_scale=0.01))  # paper ratios
        model.zero_grad(set_to_none=True)
        loss = scale_invariant_loss(model(images)[output], targets)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            after = scale_invariant_loss(model(images)[output], targets)
        assert np.isfinite(loss.item()) and after.item() < loss.item(), stack
        for name, p in model.named_parameters():
            assert (not torch.equal(before[name], p.detach())) == (id(p) in trained), (stack, name)
        if stack == "fine":
            assert all(p.grad is None for layer in model.coarse_layers()
                       for p in layer.parameters())


def test_paper_learning_rates():
    model = models.create("depth", "paper")
    optimizer = _optimizer(model, "coarse", DepthTrainConfig())
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3] * 5 + [0.1, 0.1]
    assert optimizer.defaults["momentum"] == 0.9
    optimizer = _optimizer(model, "fine", DepthTrainConfig(lr_scale=2.0))
    assert [g["lr"] for g in optimizer.param_groups] == [2e-3, 2e-2, 2e-3]


def test_scale_invariant_loss():
    torch.manual_seed(1)
    target = torch.rand(3, 1, 6, 8) * 10 + 0.5
    log_pred = torch.log(target) + 0.3 * torch.randn_like(target)
    d = log_pred - torch.log(target)
    n = d[0].numel()
    # lambda = 0: the mean squared log difference; lambda = 1: the scale-invariant error (Eqn. 1)
    l2 = scale_invariant_loss(log_pred, target, 0.0)
    assert l2.item() == pytest.approx((d ** 2).mean().item(), rel=1e-5)
    per_image = (d ** 2).flatten(1).sum(1) / n - 0.5 * (d.flatten(1).sum(1) / n) ** 2
    assert scale_invariant_loss(log_pred, target).item() == pytest.approx(per_image.mean().item(),
                                                                          rel=1e-5)
    si = scale_invariant_loss(log_pred, target, 1.0)
    assert scale_invariant_loss(log_pred + 0.7, target, 1.0).item() == pytest.approx(si.item(),
                                                                                     rel=1e-4)
    # 0, inf and NaN targets are masked: the loss equals the loss over the valid pixels only
    corrupted = target.clone()
    corrupted[0, 0, 0, :] = 0.0
    corrupted[0, 0, 1, :] = float("inf")
    corrupted[0, 0, 2, :] = float("nan")
    valid = torch.isfinite(corrupted[0]) & (corrupted[0] > 0)
    d0 = d[0][valid]
    expected0 = (d0 ** 2).mean() - 0.5 * d0.mean() ** 2
    loss = scale_invariant_loss(log_pred[:1].clone().requires_grad_(True), corrupted[:1])
    assert loss.item() == pytest.approx(expected0.item(), rel=1e-5)
    # an image with no valid pixel does not count and yields no NaN gradient
    pred = log_pred.clone().requires_grad_(True)
    empty = target.clone()
    empty[1] = 0.0
    loss = scale_invariant_loss(pred, empty)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and not pred.grad[1].any()
    assert loss.item() == pytest.approx(per_image[[0, 2]].mean().item(), rel=1e-5)


def test_output_cells_land_where_they_look():
    """Cell j of the output covers network-input pixel 5 + 4j (the centre of its two pooled 9x9/2
    windows); on a 320x240 image (network input 160x120) that is image x = 2 * (5 + 4j) + 0.5."""
    model = models.create("depth", "cpu")
    assert (OUTPUT_OFFSET, OUTPUT_STEP) == (5.0, 4)
    ramp = np.tile(np.arange(model.output_width, dtype=np.float32), (model.output_height, 1))
    depth = model.depth_on_image(np.log1p(ramp), 320, 240)  # log depth such that depth = 1 + j
    assert np.isfinite(depth).all()
    u = np.arange(320)
    expected = np.clip(((u + 0.5) * 0.5 - 0.5 - 5.0) / 4.0, 0, model.output_width - 1)
    # bilinear in log depth: compare the cell index recovered from the log
    recovered = np.interp(np.log(depth[120]), np.log1p(np.arange(model.output_width)),
                          np.arange(model.output_width))
    assert np.abs(recovered - expected).max() < 1e-3


@pytest.mark.parametrize("width,height,encoding", [
    (320, 240, "rgb8"), (640, 480, "bgr8"), (1242, 375, "rgb8"), (90, 300, "mono8"),
    (31, 23, "rgba8"), (4000, 30, "mono16")])
def test_any_image_size_and_aspect(width, height, encoding):
    """Images are scaled keeping their aspect and centre-cropped to the network input; depth comes
    back on the image's grid, finite exactly over the part the network saw."""
    model = models.create("depth", "cpu").eval()
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "mono8": 1, "mono16": 1}[encoding]
    dtype = np.uint16 if encoding == "mono16" else np.uint8
    rng = np.random.default_rng(0)
    shape = (height, width, channels) if channels > 1 else (height, width)
    pixels = rng.integers(0, 255, size=shape).astype(dtype)
    image = DecodedImage(pixels, encoding)
    batch = model.preprocess(image)
    assert batch.shape == (1, 3, 120, 160) and batch.dtype == torch.float32
    depth = model.predict_image(image, torch.device("cpu"))
    assert depth.shape == (height, width) and depth.dtype == np.float32
    seen = np.isfinite(depth)
    assert (depth[seen] > 0).all()
    view = model.view(width, height)
    seen_fraction_x = 160 / view.resized_width
    seen_fraction_y = 120 / view.resized_height
    assert seen.mean() == pytest.approx(seen_fraction_x * seen_fraction_y, abs=2.5 / min(
        width, height) + 0.02)
    # what is seen is one centred rectangle
    rows, cols = np.flatnonzero(seen.any(1)), np.flatnonzero(seen.any(0))
    assert seen[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
    # centred up to the integer crop offset: half a resized pixel
    assert abs((cols[0] + cols[-1]) / 2 - (width - 1) / 2) <= 0.5 / view.scale_x + 1.0
    assert abs((rows[0] + rows[-1]) / 2 - (height - 1) / 2) <= 0.5 / view.scale_y + 1.0
    if abs(width / height - 4 / 3) < 1e-6:
        assert seen.all()


def test_paper_preset_sees_the_centre_crop():
    """The NYU configuration feeds the 304x228 centre of a 320x240 frame, as the paper does."""
    model = models.create("depth", "paper")
    view = model.view(320, 240)
    assert (view.resized_width, view.resized_height) == (320, 240)
    assert (view.offset_x, view.offset_y) == (8, 6)
    depth = model.depth_on_image(np.zeros((55, 74), np.float32), 640, 480)
    # the 16-pixel (12-row) border of the 640x480 frame around its 608x456 centre is not seen
    expected = np.zeros((480, 640), bool)
    expected[12:468, 16:624] = True
    assert np.array_equal(np.isfinite(depth), expected)


def test_zero_size_image_is_refused():
    model = models.create("depth", "cpu")
    with pytest.raises(ValueError, match="zero size"):
        model.preprocess(DecodedImage(np.zeros((0, 10, 3), np.uint8), "rgb8"))


def test_checkpoint_round_trip(tmp_path):
    model = models.create("depth", "cpu").eval()
    path = str(tmp_path / "depth.safetensors")
    model.save(path)
    loaded = models.load(path, expected="depth")
    assert isinstance(loaded, EigenDepth) and not loaded.training
    x = torch.rand(1, 3, 120, 160)
    with torch.inference_mode():
        assert torch.allclose(model(x)["depth"], loaded(x)["depth"])
    with pytest.raises(Exception, match="expected 'dronet'"):
        models.load(path, expected="dronet")


def test_fine_stack_starts_as_the_coarse_prediction():
    """The fine stage starts where the coarse stage ended (its identity initialisation), so it
    can only refine; small random output weights would start it at a constant instead."""
    torch.manual_seed(0)
    model = EigenDepth(EigenDepth.make_config("cpu")).eval()
    with torch.no_grad():
        model.coarse7.bias.fill_(1.5)  # depths around 4.5 m, some below 1 m (negative log)
        model.coarse7.bias[:10] = -0.5
        out = model(torch.rand(2, 3, 120, 160))
    difference = (out["log_depth"] - out["coarse_log_depth"]).abs()
    assert float(difference.max()) < 0.02
    assert float(out["coarse_log_depth"].std()) > 0.1  # not trivially constant


def test_shipped_weights_load_and_predict():
    """The two shipped checkpoints (docs/depth.md): the default `depth_node` loads for real
    cameras and `shipped:sim` for the built-in simulator; both the cpu preset, trained on real
    sparse depth of the four Strecha training scenes (never fountain-P11, LIFT's held-out scene,
    nor entry-P10, the held-out real selection scene), metric depth in range on a frame of the
    simulator camera's size."""
    from dl_perception.core.paths import resolve_weights, shipped_weights

    assert resolve_weights("depth", "shipped:sim") == shipped_weights("depth", "sim")
    real = EigenDepth.from_checkpoint(resolve_weights("depth", "")).eval()
    sim = EigenDepth.from_checkpoint(resolve_weights("depth", "shipped:sim")).eval()
    assert "real cameras" in real.checkpoint_info["purpose"]
    assert "simulator" in sim.checkpoint_info["purpose"]
    # the simulator's: kept by the simulator frames' abs rel; the real cameras': by the
    # scale-invariant error of randomised rooms (whose metric scale is ambiguous) and real depth
    assert sim.checkpoint_info["validation"]["abs_rel"] < 0.2
    assert real.checkpoint_info["validation"]["si_rmse_log"] < 0.4
    assert real.checkpoint_info["validation"]["val_sparse_abs_rel"] < 0.1
    assert any("closeups" in path for path in real.checkpoint_info["trained_on"])
    rgb = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    for model in (real, sim):
        assert model.config.input_size == [160, 120]
        sparse = [os.path.basename(path) for path in model.checkpoint_info["sparse"]]
        assert sorted(sparse) == ["Herz-Jesus-P25", "Herz-Jesus-P8", "castle-P19", "castle-P30"]
        depth = model.predict_image(DecodedImage(rgb, "rgb8"), torch.device("cpu"))
        assert depth.shape == (240, 320) and np.isfinite(depth).all()
        assert 0.05 <= depth.min() and depth.max() <= 200.0
