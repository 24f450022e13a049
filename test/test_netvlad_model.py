"""NetVLAD: the layer against its definition, both presets, whitening, k-means initialisation,
the weakly supervised triplet ranking loss, hard-negative mining and a short training run."""
import dataclasses
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from place_fixtures import write_route

from dl_perception import models
from dl_perception.core.checkpoint import CheckpointError
from dl_perception.core.imaging import DecodedImage
from dl_perception.models.netvlad import NetVLADLayer
from dl_perception.training.common import TrainingDataError
from dl_perception.training.netvlad import (HardNegativeMiner, NetVLADTrainConfig,
                                            PlaceTrainingData, augment_views, info_nce_loss,
                                            init_clusters, triplet_ranking_loss, train_netvlad,
                                            validation_recall)

torch.set_num_threads(2)


def test_layer_matches_the_definition():
    torch.manual_seed(0)
    layer = NetVLADLayer(num_clusters=5, dim=7, normalize_input=True)
    features = torch.randn(2, 7, 3, 4)
    layer.assignment_scale.fill_(3.0)
    out = layer(features)
    # V(j, k) = sum_i a_k(x_i) (x_i(j) - c_k(j)) with x_i L2-normalised, then intra-norm and L2
    x = F.normalize(features, dim=1).flatten(2)  # B x D x N
    logits = 3.0 * (torch.einsum("kd,bdn->bkn", layer.assignment.weight[:, :, 0, 0], x)
                    + layer.assignment.bias[None, :, None])
    a = torch.softmax(logits, dim=1)
    expected = torch.zeros(2, 5, 7)
    for b in range(2):
        for k in range(5):
            for i in range(12):
                expected[b, k] += a[b, k, i] * (x[b, :, i] - layer.centroids[k])
    expected = F.normalize(F.normalize(expected, dim=2).flatten(1), dim=1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(out.norm(dim=1), torch.ones(2))
    # intra-normalisation: every cluster block has the same norm 1/sqrt(K)
    torch.testing.assert_close(out.view(2, 5, 7).norm(dim=2), torch.full((2, 5), 5 ** -0.5))


def test_cpu_preset_shapes_and_preprocessing():
    model = models.create("netvlad").eval()
    assert model.config.num_clusters == 64 and model.vlad_dim == 64 * 128
    rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    batch = model.preprocess(DecodedImage(rgb, "rgb8"))
    assert batch.shape == (1, 3, 96, 128) and batch.dtype == torch.float32
    assert model.local_descriptors(batch).shape == (1, 128, 12, 16)  # output stride 8
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    torch.testing.assert_close(model.preprocess(DecodedImage(bgr, "bgr8")), batch)
    with torch.inference_mode():
        out = model(torch.cat([batch, batch.flip(3)]))
    assert out["descriptor"].shape == (2, 8192)  # whitening not fitted yet: the VLAD vector
    assert torch.allclose(out["descriptor"].norm(dim=1), torch.ones(2))
    features = model.local_descriptors(torch.cat([batch, batch.flip(3)]))
    assert not torch.allclose(features[0], features[1].flip(2), atol=1e-3)  # not symmetric
    with pytest.raises(ValueError, match="zero size|empty"):
        model.preprocess(DecodedImage(np.zeros((0, 0, 3), np.uint8), "rgb8"))


def test_cpu_preset_sees_luma_standardised_per_image():
    """Grey input standardised per image: another gain and offset of the light, or another
    colour of the same luma, gives the same input to the backbone; another picture does not."""
    torch.manual_seed(0)
    model = models.create("netvlad").eval()
    image = torch.rand(1, 3, 96, 128) * 0.6 + 0.2
    luma = (image * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    reference = model.normalize_input(image)
    assert reference.shape == (1, 1, 96, 128)
    assert abs(reference.mean().item()) < 1e-5 and reference.std().item() == pytest.approx(1, 0.1)
    torch.testing.assert_close(model.normalize_input(luma.expand(1, 3, 96, 128)), reference)
    dimmer = model.normalize_input(0.5 * image + 0.05).flatten()
    assert torch.corrcoef(torch.stack([dimmer, reference.flatten()]))[0, 1] > 0.9999
    other = model.normalize_input(torch.rand(1, 3, 96, 128)).flatten()
    assert torch.corrcoef(torch.stack([other, reference.flatten()]))[0, 1] < 0.5
    assert model.backbone.layers[0].in_channels == 1
    with pytest.raises(ValueError, match="takes RGB"):
        models.create("netvlad", backbone="eigen_coarse")
    with pytest.raises(ValueError, match="input_normalization"):
        models.create("netvlad", input_normalization="none")


def test_paper_preset_vgg16_conv5_shapes_and_a_training_step():
    model = models.create("netvlad", "paper")
    convs = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13 and convs[-1].out_channels == 512  # VGG16 up to conv5_3
    assert not isinstance(list(model.backbone.layers)[-1], torch.nn.ReLU)  # cropped before ReLU
    assert model.vlad_dim == 64 * 512 and model.config.pca_dim == 4096
    assert model.whitening_projection.shape == (4096, 32768)
    assert model.config.resize_to == [640, 480]
    images = torch.rand(3, 3, 64, 96)
    out = model.train()(images)
    assert out["vlad"].shape == (3, 32768)
    assert model.local_descriptors(images).shape == (3, 512, 4, 6)  # output stride 16
    loss = triplet_ranking_loss(out["vlad"][:1], out["vlad"][1:2], out["vlad"][None, 2:], 0.1)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.backbone.layers[0].weight.grad.abs().sum() > 0


def test_whitening_decorrelates_and_travels_in_the_checkpoint(tmp_path):
    model = models.create("netvlad", pca_dim=16)
    vlads = F.normalize(torch.randn(200, model.vlad_dim) * torch.linspace(0.1, 2, model.vlad_dim),
                        dim=1)
    model.fit_whitening(vlads)
    projected = (vlads - model.whitening_mean) @ model.whitening_projection.T
    covariance = torch.cov(projected.T.double())
    torch.testing.assert_close(covariance, torch.eye(16, dtype=torch.float64), atol=1e-3, rtol=0)
    path = str(tmp_path / "n.safetensors")
    model.save(path)
    loaded = models.load(path, expected="netvlad")
    assert loaded.whitened and loaded.descriptor_dim == 16
    image = torch.rand(1, 3, 96, 128)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(image)["descriptor"], model.eval()(image)["descriptor"])
    with pytest.raises(ValueError, match="needs more than 16"):
        model.fit_whitening(vlads[:10])
    # power 0: the plain PCA projection, orthonormal directions, variances kept (decreasing)
    # (on data whose 16 leading variances fall 36-fold, so the ordering is not left to chance)
    generator = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(model.vlad_dim, 16, generator=generator))[0].T
    spread = (torch.randn(200, 16, generator=generator) * torch.linspace(3, 0.5, 16)) @ basis \
        + 0.01 * torch.randn(200, model.vlad_dim, generator=generator)
    plain = models.create("netvlad", pca_dim=16, whitening_power=0.0)
    plain.fit_whitening(spread)
    rows = plain.whitening_projection.double()
    torch.testing.assert_close(rows @ rows.T, torch.eye(16, dtype=torch.float64), atol=1e-4,
                               rtol=0)
    variances = torch.cov(((spread - plain.whitening_mean) @ plain.whitening_projection.T).T
                          .double()).diagonal()
    assert (variances[:-1] >= variances[1:] - 1e-9).all() and variances[0] > 2 * variances[-1]
    with pytest.raises(CheckpointError, match="expected 'dronet'"):
        models.load(path, expected="dronet")


def test_backbone_starts_from_the_depth_network(tmp_path):
    from dl_perception.training.netvlad import load_depth_backbone
    depth_path = str(tmp_path / "depth.safetensors")
    depth = models.create("depth")
    depth.save(depth_path)
    model = models.create("netvlad", "depth", resize_to=[64, 48])
    load_depth_backbone(model, depth_path)
    for name in ("coarse1", "coarse2", "coarse3", "coarse4"):
        torch.testing.assert_close(getattr(model.backbone, name).weight,
                                   getattr(depth, name).weight)
    # the network's first layers, applied as the depth network applies them
    x = torch.rand(1, 3, 48, 64)
    with torch.inference_mode():
        y = (x - depth.mean) / depth.std
        y = F.max_pool2d(F.relu(depth.coarse1(y)), 2)
        y = F.max_pool2d(F.relu(depth.coarse2(y)), 2)
        expected = depth.coarse4(F.relu(depth.coarse3(y)))
        torch.testing.assert_close(model.local_descriptors(x), expected)
    wider = models.create("netvlad", "depth", eigen_channels=[32, 64, 96, 128])
    with pytest.raises(ValueError, match="coarse4"):
        load_depth_backbone(wider, depth_path)
    with pytest.raises(ValueError, match="eigen_coarse backbone"):
        load_depth_backbone(models.create("netvlad", backbone="light"), depth_path)
    with pytest.raises(CheckpointError):
        load_depth_backbone(model, str(tmp_path / "missing.safetensors"))


def test_triplet_ranking_loss_values():
    q = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.8, 0.6]])  # d^2 = 0.04 + 0.36 = 0.4
    negatives = torch.tensor([[[0.0, 1.0], [0.6, 0.8], [1.0, 0.0]]])  # d^2 = 2.0, 0.8, 0.0
    # hinge(0.1 + 0.4 - d_n^2): 0, 0, 0.5
    assert triplet_ranking_loss(q, p, negatives, 0.1).item() == pytest.approx(0.5)
    assert triplet_ranking_loss(q, p, negatives, 0.5).item() == pytest.approx(0.9 + 0.1)


@pytest.fixture
def routes(tmp_path):
    return [write_route(tmp_path / f"w{seed}_{preset}", seed, preset, frames=30)
            for seed in (1, 2) for preset in ("day", "dusk")]


def test_training_data_positives_cross_routes_and_negatives_are_far(routes):
    model = models.create("netvlad", resize_to=[64, 48])
    cfg = NetVLADTrainConfig(num_negatives=5)
    data = PlaceTrainingData(routes, model, cfg, log=lambda *_: None)
    assert len(data) == 120 and len(data.queries) == 120
    for query in data.queries:
        positives, negatives = data.positives[query], data.negatives_of(query)
        assert (data.routes[positives] != data.routes[query]).all()
        assert (data.groups[positives] == data.groups[query]).all()
        distance = np.linalg.norm(data.positions[positives] - data.positions[query], axis=1)
        assert (distance <= 10.0).all()
        same = negatives[data.groups[negatives] == data.groups[query]]
        assert (np.linalg.norm(data.positions[same] - data.positions[query], axis=1) > 25).all()
        assert (data.groups[negatives] != data.groups[query]).any()  # the other world


def test_kmeans_initialisation_and_mining(routes):
    model = models.create("netvlad", resize_to=[64, 48])
    cfg = NetVLADTrainConfig(num_negatives=5, negative_pool=40, kmeans_images=20)
    data = PlaceTrainingData(routes, model, cfg, log=lambda *_: None)
    rng = np.random.default_rng(0)
    alpha = init_clusters(model, data, cfg, torch.device("cpu"), rng)
    assert alpha > 0
    # after initialisation the soft assignment picks each descriptor's nearest centre
    features = F.normalize(model.local_descriptors(data.batch([0, 50], "cpu")), dim=1)
    nearest = torch.cdist(features.flatten(2).transpose(1, 2), model.vlad.centroids[None]).argmin(2)
    assigned = model.vlad.assignment(features).flatten(2).argmax(1)  # alpha > 0: same argmax
    assert (nearest == assigned).float().mean() > 0.95
    miner = HardNegativeMiner(data, cfg, rng)
    miner.refresh(model, torch.device("cpu"))
    query = int(data.queries[3])
    best, hardest = miner.mine(query)
    cache = miner.cache
    distances = (cache[data.positives[query]] - cache[query]).pow(2).sum(1)
    assert best == data.positives[query][int(distances.argmin())]
    assert len(hardest) == 5 and set(hardest) <= set(data.negatives_of(query))
    # the previous hardest negatives stay in the next pool: they can only get harder or stay
    again = miner.mine(query)[1]
    d = lambda idx: (cache[idx] - cache[query]).pow(2).sum(1).max().item()  # noqa: E731
    assert d(again) <= d(hardest) + 1e-6


def test_short_training_run_improves_the_loss_and_saves_whitening(routes, tmp_path):
    out = str(tmp_path / "netvlad.safetensors")
    cfg = NetVLADTrainConfig(epochs=2, queries_per_epoch=24, batch_size=4, num_negatives=3,
                             negative_pool=30, kmeans_images=20, pca_images=120, cache_refresh=12)
    lines = []
    model = train_netvlad(routes, out, cfg, torch.device("cpu"),
                          model_overrides={"resize_to": [64, 48], "pca_dim": 32},
                          log=lines.append)
    assert model.whitened and model.descriptor_dim == 32
    info = model.checkpoint_info
    assert [h["epoch"] for h in info["history"]] == [1, 2]
    assert all(np.isfinite(h["loss"]) for h in info["history"])
    assert info["train_config"]["margin"] == 0.1
    assert any("k-means" in line for line in lines)
    # whitening refitted to another dimension on the trained network, nothing else changed
    again = train_netvlad(routes, str(tmp_path / "w8.safetensors"),
                          NetVLADTrainConfig(epochs=0, pca_images=120), torch.device("cpu"),
                          init_weights=out, model_overrides={"pca_dim": 8}, log=lines.append)
    assert again.descriptor_dim == 8 and again.config.resize_to == [64, 48]
    torch.testing.assert_close(again.vlad.centroids, model.vlad.centroids)


def test_training_refuses_evaluation_worlds_and_bad_data(tmp_path, routes):
    evaluation = write_route(tmp_path / "eval", 1005, "day", frames=10)
    with pytest.raises(TrainingDataError, match="evaluation world"):
        train_netvlad(routes + [evaluation], str(tmp_path / "x.safetensors"),
                      NetVLADTrainConfig(), torch.device("cpu"))
    with pytest.raises(TrainingDataError, match="evaluation world"):
        train_netvlad(routes, str(tmp_path / "x.safetensors"), NetVLADTrainConfig(),
                      torch.device("cpu"), validation=[(routes[0], evaluation)])
    lonely = write_route(tmp_path / "lonely", 9, "day", frames=3, spacing=20.0)
    with pytest.raises(TrainingDataError, match="no training query"):
        train_netvlad([lonely], str(tmp_path / "x.safetensors"), NetVLADTrainConfig(),
                      torch.device("cpu"))


def test_places_csv_layout(tmp_path):
    import cv2
    from dl_perception.datasets.places import read_place_folder
    (tmp_path / "img").mkdir()
    rows = ["image,x,y"]
    for i in range(3):
        cv2.imwrite(str(tmp_path / "img" / f"{i}.jpg"), np.full((20, 30, 3), 40 * i, np.uint8))
        rows.append(f"img/{i}.jpg,{i * 2.0},1.5")
    (tmp_path / "places.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "meta.json").write_text(json.dumps({"place_group": "campus"}))
    places = read_place_folder(str(tmp_path))
    assert places.group == "campus" and len(places) == 3
    np.testing.assert_array_equal(places.positions[2], [4.0, 1.5, 0.0])
    assert np.isnan(places.quaternions).all()
    assert places.load_rgb(1).shape == (20, 30, 3)
    os.remove(tmp_path / "places.csv")
    with pytest.raises(ValueError, match="neither a sequence"):
        read_place_folder(str(tmp_path))


def test_train_command(tmp_path, routes, capsys):
    from dl_perception.cli import main
    out = str(tmp_path / "cli.safetensors")
    code = main(["train", "netvlad", "--data", *routes[:2], "--out", out, "--epochs", "1",
                 "--queries-per-epoch", "4", "--num-negatives", "2", "--negative-pool", "10",
                 "--kmeans-images", "8", "--pca-dim", "8", "--pca-images", "40", "--no-augment",
                 "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().out
    model = models.load(out, expected="netvlad")
    assert model.descriptor_dim == 8 and model.checkpoint_info["train_config"]["augment"] is False
    assert main(["train", "netvlad", "--data", routes[0], "--out", out, "--val-db",
                 routes[0]]) == 1
    assert "go together" in capsys.readouterr().err


def test_shipped_weights_are_the_real_image_cpu_preset():
    from dl_perception.core.paths import resolve_weights, shipped_weights
    assert resolve_weights("netvlad", "") == shipped_weights("netvlad")  # the nodes' default
    model = models.load(shipped_weights("netvlad"), expected="netvlad").eval()
    assert model.config.backbone == "light" and model.config.grey and model.whitened
    assert model.descriptor_dim == 128 and model.config.resize_to == [128, 96]
    info = model.checkpoint_info
    assert not any(source.startswith("cohog") for source in info["trained_on"])
    assert info["backbone_from"] is None  # stands on its own: no depth network inside
    rgb = np.random.default_rng(1).integers(0, 255, (240, 320, 3), np.uint8)
    with torch.inference_mode():
        descriptor = model(model.preprocess(DecodedImage(rgb, "rgb8")))["descriptor"]
    assert torch.isfinite(descriptor).all() and descriptor.norm().item() == pytest.approx(1.0)


def test_augmentation_and_info_nce():
    torch.manual_seed(0)
    batch = torch.rand(6, 3, 48, 64)
    first, second = augment_views(batch), augment_views(batch)
    assert first.shape == batch.shape and 0.0 <= first.min() and first.max() <= 1.0
    assert (first - batch).abs().mean() > 0.02 and (first - second).abs().mean() > 0.02
    views = F.normalize(torch.randn(8, 32), dim=1)
    noisy = F.normalize(views + 0.1 * torch.randn(8, 32), dim=1)
    matched = info_nce_loss(views, noisy, 0.1)
    shuffled = info_nce_loss(views, noisy[torch.roll(torch.arange(8), 1)], 0.1)
    assert matched < 0.5 < shuffled


def test_selection_score_is_the_mean_recall_over_validation_pairs(routes):
    model = models.create("netvlad", resize_to=[64, 48]).eval()
    world_1, world_2 = (routes[0], routes[1]), (routes[2], routes[3])
    alone = [validation_recall(model, [pair], torch.device("cpu"), whitened=False)
             for pair in (world_1, world_2)]
    assert set(alone[0]) == {"recall_at_1", "recall_at_5"}
    both = validation_recall(model, [world_1, world_2], torch.device("cpu"), whitened=False)
    assert both["recall_at_1"] == pytest.approx((alone[0]["recall_at_1"] + alone[1]["recall_at_1"]) / 2)
    assert both["recall_at_5"] == pytest.approx((alone[0]["recall_at_5"] + alone[1]["recall_at_5"]) / 2)
    assert (both["val1_recall_at_1"], both["val2_recall_at_5"]) == \
        (alone[0]["recall_at_1"], alone[1]["recall_at_5"])
    with pytest.raises(TrainingDataError, match="different place groups"):
        validation_recall(model, [(routes[0], routes[3])], torch.device("cpu"), whitened=False)


def test_pretraining_then_triplets_and_resume(routes, tmp_path):
    out = str(tmp_path / "r.safetensors")
    cfg = NetVLADTrainConfig(pretrain_epochs=1, pretrain_steps=2, pretrain_batch=6, epochs=1,
                             queries_per_epoch=8, num_negatives=3, negative_pool=20,
                             kmeans_images=20, pca_images=120, cache_refresh=100)
    overrides = {"resize_to": [64, 48], "pca_dim": 16}
    first = train_netvlad(routes, out, cfg, torch.device("cpu"), model_overrides=overrides,
                          validation=[(routes[0], routes[1])], log=lambda *_: None)
    history = first.checkpoint_info["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert np.isfinite(history[1]["pretrain_loss"]) and np.isfinite(history[2]["loss"])
    assert os.path.isfile(out + ".loss.png") and os.path.isfile(out + ".resume.pt")
    lines = []
    longer = dataclasses.replace(cfg, epochs=2)
    again = train_netvlad(routes, out, longer, torch.device("cpu"), model_overrides=overrides,
                          validation=[(routes[0], routes[1])], resume=True, log=lines.append)
    assert any("resumed after epoch 2" in line for line in lines)
    assert [h["epoch"] for h in again.checkpoint_info["history"]] == [0, 1, 2, 3]
    assert again.whitened and again.descriptor_dim == 16
