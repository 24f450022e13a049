"""`dl-perception train netvlad`: weakly supervised training of NetVLAD (Arandjelovic et al. 2016).

Supervision is only where each image was taken. For a query q, its potential positives are the
images within `positive_radius` metres (taken on another route of the same place group when
there is one: another lighting or appearance preset), its definite negatives the images farther
than `negative_radius` (or of another place group). The loss is the paper's weakly supervised
triplet ranking loss

    L = sum_j max(0, min_i d(q, p_i)^2 + m - d(q, n_j)^2),   m = 0.1,

where the best potential positive and the hardest negatives are mined with the current model:
descriptors of every training image are cached and refreshed every `cache_refresh` queries; per
query, `negative_pool` random negatives are ranked by cached distance and the `num_negatives`
hardest are kept, together with the query's hardest negatives from its previous visit.

The paper's VGG16 starts from ImageNet training; here no pre-trained weights can be fetched, so
the backbone is first pre-trained on the training images (`pretrain_epochs`) with the InfoNCE
loss (temperature `pretrain_temperature`) on a cluster-free descriptor (the mean of the
L2-normalised local descriptors): a training image and one of its potential positives, each
independently augmented, are a positive pair, the other images of the batch negatives. After
each pre-training epoch the clusters are initialised again by k-means on the new features. The
eigen_coarse backbone may instead start from the project's depth network (`backbone_weights`).
Clusters start from k-means on sampled local descriptors; PCA whitening is fitted at the end on
the training images' NetVLAD vectors. Every training image is augmented by default
(`augment_views`): a random zoom, shift and small rotation, and gamma, gain, a smooth
illumination field, blur, noise and night-like darkening: the appearance changes of seasons and
day/night that place recognition must see through.

Each epoch is recorded by `TrainingRun` (history CSV, loss plot, resume state beside the output);
the output checkpoint always holds the best epoch so far (whitening is fitted after the last
one), so `--resume` continues a killed run.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import models
from ..datasets.place_sets import expand_specs, refuse_validation_sets
from ..datasets.places import read_place_folder
from ..models.netvlad import NetVLAD
from ..core.progress import progress
from .common import TrainingDataError, refuse_evaluation_worlds, seed_everything
from .run import TrainingRun


@dataclass
class NetVLADTrainConfig:
    epochs: int = 5
    queries_per_epoch: int = 0  # 0 = every query once per epoch
    batch_size: int = 4  # queries per step (paper: 4)
    num_negatives: int = 10  # per query (paper: 10)
    negative_pool: int = 1000  # random negatives ranked per query (paper: 1000)
    positive_radius: float = 10.0  # metres (paper: 10)
    negative_radius: float = 25.0  # metres (paper: 25)
    margin: float = 0.1
    learning_rate: float = 5e-4
    # Adam adds L2 to the gradient; the paper's 1e-3 (with SGD) shrinks the last convolution,
    # whose output is L2-normalised and so gets almost no gradient, to nothing: off by default
    weight_decay: float = 0.0
    cache_refresh: int = 1000  # queries between refreshes of the cached descriptors
    kmeans_images: int = 500
    kmeans_descriptors_per_image: int = 50
    pca_images: int = 2000  # images the whitening is fitted on (all when fewer)
    augment: bool = True
    # self-supervised pre-training: epochs of `pretrain_steps` steps, `pretrain_batch` images
    # (two views each) per step
    pretrain_epochs: int = 0
    pretrain_steps: int = 100
    pretrain_batch: int = 32
    pretrain_temperature: float = 0.1
    seed: int = 0


def triplet_ranking_loss(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                         margin: float) -> torch.Tensor:
    """query, positive: B x D; negatives: B x M x D. Squared Euclidean distances, hinge summed
    over the negatives, averaged over the queries."""
    d_positive = (query - positive).pow(2).sum(-1)
    d_negative = (query[:, None] - negatives).pow(2).sum(-1)
    return F.relu(margin + d_positive[:, None] - d_negative).sum(1).mean()


def info_nce_loss(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """first, second: B x D L2-normalised descriptors of two views of the same B images. Each
    view's positive is the other view of its image, its negatives the 2B - 2 other views
    (NT-Xent, Chen et al. 2020)."""
    views = torch.cat([first, second])
    logits = views @ views.T / temperature
    logits.fill_diagonal_(-math.inf)
    count = first.shape[0]
    targets = torch.cat([torch.arange(count, 2 * count), torch.arange(count)]).to(views.device)
    return F.cross_entropy(logits, targets)


def augment_views(batch: torch.Tensor) -> torch.Tensor:
    """A B x 3 x H x W batch in [0, 1], each image changed at random (torch's global generator,
    so a resumed run continues its sequence):
    - geometry: zoom in 0-20 %, shift within what the zoom leaves, rotate up to 4 degrees;
    - light: gamma 0.5-2, gain 0.5-1.4, a smooth multiplicative illumination field
      (a bilinear 3x3 grid of factors 0.6-1.4: shadows, headlights, overcast), one in five
      darkened to 15-40 % as at night, per-channel colour 0.8-1.2;
    - optics: one in three blurred (3x3 box), Gaussian noise up to 4 %."""
    count, _, height, width = batch.shape
    device = batch.device

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(count, *shape, device=device)
    scale = uniform(0.8, 1.0)
    angle = uniform(-4.0, 4.0) * math.pi / 180.0
    shift = (1.0 - scale)[:, None] * uniform(-1.0, 1.0, 2)
    theta = torch.stack([torch.stack([scale * torch.cos(angle), -scale * torch.sin(angle),
                                      shift[:, 0]], 1),
                         torch.stack([scale * torch.sin(angle), scale * torch.cos(angle),
                                      shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    batch = F.grid_sample(batch, grid, mode="bilinear", padding_mode="reflection",
                          align_corners=False)
    field = F.interpolate(uniform(0.6, 1.4, 1, 3, 3), size=(height, width), mode="bilinear",
                          align_corners=True)
    night = torch.where(torch.rand(count, 1, 1, 1, device=device) < 0.2,
                        uniform(0.15, 0.4, 1, 1, 1), torch.ones(count, 1, 1, 1, device=device))
    batch = batch.clamp_min(1e-4).pow(uniform(0.5, 2.0, 1, 1, 1))
    batch = batch * uniform(0.5, 1.4, 1, 1, 1) * field * night * uniform(0.8, 1.2, 3, 1, 1)
    blurred = F.avg_pool2d(F.pad(batch, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    batch = torch.where(torch.rand(count, 1, 1, 1, device=device) < 1 / 3, blurred, batch)
    batch = batch + uniform(0.0, 0.04, 1, 1, 1) * torch.randn_like(batch)
    return batch.clamp(0.0, 1.0)


class PlaceTrainingData:
    """Training images at the model's input size (uint8, in memory) with positions, and per
    query its potential positives and definite negatives. A folder's meta may set its own
    `positive_radius` / `negative_radius` (in its position unit, e.g. Nordland frames); the
    first folder of a place group sets them for the group."""

    def __init__(self, folders: list[str], model: NetVLAD, cfg: NetVLADTrainConfig, log=print):
        import faiss

        pixels, positions, groups, routes = [], [], [], []
        group_ids: dict[str, int] = {}
        radii: dict[int, tuple[float, float]] = {}
        for route, folder in enumerate(folders):
            refuse_evaluation_worlds(folder)
            places = read_place_folder(folder)
            refuse_validation_sets(folder)
            group = group_ids.setdefault(places.group, len(group_ids))
            radii.setdefault(group, (float(places.meta.get("positive_radius",
                                                           cfg.positive_radius)),
                                     float(places.meta.get("negative_radius",
                                                           cfg.negative_radius))))
            for index in progress(range(len(places)), desc=f"reading {folder}", unit="img"):
                pixels.append(model.prepare_pixels(places.load_rgb(index)))
            positions.append(places.positions)
            groups += [group] * len(places)
            routes += [route] * len(places)
            log(f"  {folder}: {len(places)} images, place group '{places.group}'")
        self.pixels = np.stack(pixels)
        self.positions = np.concatenate(positions)
        self.groups = np.asarray(groups)
        self.routes = np.asarray(routes)
        known = np.isfinite(self.positions).all(axis=1)
        self.known = np.flatnonzero(known)
        self.positives: dict[int, np.ndarray] = {}
        # per query, the images of its group within the negative radius: neither positive nor
        # negative (all other known images are its definite negatives, see negatives_of)
        self.not_negative: dict[int, np.ndarray] = {}
        for group in np.unique(self.groups):
            members = np.flatnonzero((self.groups == group) & known)
            if len(members) == 0:
                continue
            positive_radius, negative_radius = radii[int(group)]
            index = faiss.IndexFlatL2(3)
            index.add(np.ascontiguousarray(self.positions[members], dtype=np.float32))
            queries = np.ascontiguousarray(self.positions[members], dtype=np.float32)
            several_routes = len(np.unique(self.routes[members])) > 1
            # faiss range search is strict (<): widen by 0.1 mm so both radii are inclusive
            lims, _, near = index.range_search(queries, (positive_radius + 1e-4) ** 2)
            lims_far, _, not_far = index.range_search(queries, (negative_radius + 1e-4) ** 2)
            for row, query in enumerate(members):
                candidates = members[near[lims[row]:lims[row + 1]]]
                candidates = candidates[candidates != query]
                if several_routes:  # learn across routes (presets), not from the next frame
                    candidates = candidates[self.routes[candidates] != self.routes[query]]
                if len(candidates) == 0:
                    continue
                excluded = np.sort(members[not_far[lims_far[row]:lims_far[row + 1]]])
                if len(self.known) - len(excluded) < cfg.num_negatives:
                    continue
                self.positives[int(query)] = candidates
                self.not_negative[int(query)] = excluded
        self.queries = np.array(sorted(self.positives), dtype=np.int64)
        if len(self.queries) == 0:
            raise TrainingDataError(
                f"no training query has both a potential positive within {cfg.positive_radius} m "
                f"and {cfg.num_negatives} negatives beyond {cfg.negative_radius} m")

    def negatives_of(self, query: int) -> np.ndarray:
        """The definite negatives of a query: known images of other place groups, and of its
        own group beyond the negative radius."""
        return np.setdiff1d(self.known, self.not_negative[query], assume_unique=True)

    def __len__(self) -> int:
        return len(self.pixels)

    def batch(self, indices, device: torch.device) -> torch.Tensor:
        return NetVLAD.to_tensor(self.pixels[np.asarray(indices)]).to(device)


def compute_vlads(model: NetVLAD, data: PlaceTrainingData, indices: np.ndarray,
                  device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """NetVLAD vectors (before whitening) of the given images, eval mode, on the CPU."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(indices), batch_size):
            out.append(model(data.batch(indices[start:start + batch_size], device))["vlad"].cpu())
    return torch.cat(out) if out else torch.zeros(0, model.vlad_dim)


def init_clusters(model: NetVLAD, data: PlaceTrainingData, cfg: NetVLADTrainConfig,
                  device: torch.device, rng: np.random.Generator) -> float:
    """k-means (faiss) on local descriptors sampled from training images -> the NetVLAD layer's
    initial centres and assignment. Returns the alpha used."""
    import faiss

    images = rng.choice(len(data), min(cfg.kmeans_images, len(data)), replace=False)
    samples = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(images), 32):
            features = model.local_descriptors(data.batch(images[start:start + 32], device))
            features = F.normalize(features, dim=1).flatten(2).transpose(1, 2).cpu()
            for per_image in features:
                take = rng.choice(len(per_image), min(cfg.kmeans_descriptors_per_image,
                                                      len(per_image)), replace=False)
                samples.append(per_image[take])
    descriptors = torch.cat(samples).numpy().astype(np.float32)
    clusters = model.config.num_clusters
    if len(descriptors) < clusters:
        raise TrainingDataError(f"k-means needs at least {clusters} local descriptors, "
                                f"sampled {len(descriptors)}")
    kmeans = faiss.Kmeans(descriptors.shape[1], clusters, niter=50, seed=cfg.seed, verbose=False)
    kmeans.train(descriptors)
    centroids = torch.from_numpy(kmeans.centroids).to(device)
    if model.config.normalize_input:
        centroids = F.normalize(centroids, dim=1)
    return model.vlad.init_from_clusters(centroids, torch.from_numpy(descriptors).to(device))


class HardNegativeMiner:
    """Best positive and hardest negatives per query from cached descriptors."""

    def __init__(self, data: PlaceTrainingData, cfg: NetVLADTrainConfig,
                 rng: np.random.Generator):
        self.data, self.cfg, self.rng = data, cfg, rng
        self.cache: torch.Tensor | None = None
        self.previous_hard: dict[int, np.ndarray] = {}

    def refresh(self, model: NetVLAD, device: torch.device) -> None:
        self.cache = compute_vlads(model, self.data, np.arange(len(self.data)), device)

    def mine(self, query: int) -> tuple[int, np.ndarray]:
        cfg, cache = self.cfg, self.cache
        positives = self.data.positives[query]
        d_positive = (cache[positives] - cache[query]).pow(2).sum(1)
        best = int(positives[int(d_positive.argmin())])
        negatives = self.data.negatives_of(query)
        pool = self.rng.choice(negatives, min(cfg.negative_pool, len(negatives)), replace=False)
        pool = np.union1d(pool, self.previous_hard.get(query, np.zeros(0, np.int64)))
        d_negative = (cache[pool] - cache[query]).pow(2).sum(1)
        hardest = pool[np.argsort(d_negative.numpy(), kind="stable")[:cfg.num_negatives]]
        self.previous_hard[query] = hardest
        return best, hardest


def pooled_descriptor(model: NetVLAD, batch: torch.Tensor) -> torch.Tensor:
    """The mean of the L2-normalised local descriptors, L2-normalised: a global descriptor that
    needs no clusters, for pre-training the backbone before k-means has anything to cluster."""
    local = F.normalize(model.local_descriptors(batch), dim=1)
    return F.normalize(local.mean(dim=(2, 3)), dim=1)


def pretrain_epoch(model: NetVLAD, data: PlaceTrainingData, cfg: NetVLADTrainConfig,
                   optimizer: torch.optim.Optimizer, device: torch.device,
                   rng: np.random.Generator, desc: str) -> float:
    """`pretrain_steps` steps of InfoNCE on the backbone's pooled descriptors: each training
    query and one of its potential positives (the other season, a nearby frame, another view
    of the scene), both augmented, are a positive pair; the rest of the batch negatives."""
    losses = []
    model.train()
    for _ in progress(range(cfg.pretrain_steps), desc=desc, unit="step"):
        queries = rng.choice(data.queries, min(cfg.pretrain_batch, len(data.queries)),
                             replace=False)
        partners = [int(rng.choice(data.positives[int(q)])) for q in queries]
        batch = augment_views(data.batch(np.concatenate([queries, partners]), device))
        pooled = pooled_descriptor(model, batch)
        loss = info_nce_loss(pooled[:len(queries)], pooled[len(queries):],
                             cfg.pretrain_temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def triplet_epoch(model: NetVLAD, data: PlaceTrainingData, cfg: NetVLADTrainConfig,
                  optimizer: torch.optim.Optimizer, miner: HardNegativeMiner,
                  device: torch.device, rng: np.random.Generator, desc: str) -> float:
    """One epoch of the weakly supervised triplet ranking loss with hard-negative mining."""
    losses, seen = [], 0
    order = rng.permutation(data.queries)[:cfg.queries_per_epoch or len(data.queries)]
    miner.cache = None  # every epoch starts from fresh descriptors
    for start in progress(range(0, len(order), cfg.batch_size), desc=desc, unit="step"):
        if miner.cache is None or seen >= cfg.cache_refresh:
            miner.refresh(model, device)
            seen = 0
        queries = order[start:start + cfg.batch_size]
        mined = [miner.mine(int(q)) for q in queries]
        images = np.concatenate([[q, positive, *negatives]
                                 for q, (positive, negatives) in zip(queries, mined)])
        model.train()
        batch = data.batch(images, device)
        if cfg.augment:
            batch = augment_views(batch)
        vlads = model(batch)["vlad"].view(len(queries), 2 + cfg.num_negatives, -1)
        loss = triplet_ranking_loss(vlads[:, 0], vlads[:, 1], vlads[:, 2:], cfg.margin)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        seen += len(queries)
    return float(np.mean(losses))


def train_netvlad(folders: list[str], out_path: str, cfg: NetVLADTrainConfig,
                  device: torch.device, preset: str = "cpu", init_weights: str | None = None,
                  validation: list[tuple[str, str]] | None = None,
                  model_overrides: dict | None = None,
                  backbone_weights: str | None = None, resume: bool = False,
                  log=print) -> NetVLAD:
    """Train on the image folders or named real sets (datasets/place_sets.py): first
    `pretrain_epochs` self-supervised, then `epochs` of triplet ranking. `validation`: one or
    more (database, queries) pairs; the mean of their Recall@1 (each within its database set's
    positive radius, else 5 m) picks the best epoch. `model_overrides` change the preset's
    model configuration (e.g. pca_dim).
    `backbone_weights`: a depth checkpoint the eigen_coarse backbone starts from. `resume`
    continues a killed run from its last finished epoch."""
    folders = expand_specs(folders)
    validation = list(validation or ())
    for folder in folders + [f for pair in validation for f in pair]:
        refuse_evaluation_worlds(folder)
        refuse_validation_sets(folder)  # neither trained nor selected on
    seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    init_info = None
    if init_weights:
        model = models.load(init_weights, expected="netvlad")
        init_info = {"path": init_weights, "info": getattr(model, "checkpoint_info", None)}
        if model_overrides:  # e.g. whitening to another dimension: keep everything else
            kept = {k: v for k, v in model.state_dict().items() if not k.startswith("whitening_")}
            model = NetVLAD(dataclasses.replace(model.config, **model_overrides))
            model.load_state_dict(kept, strict=False)
    else:
        model = models.create("netvlad", preset, **(model_overrides or {}))
    if backbone_weights:
        if init_weights:
            raise ValueError("give either --init (a NetVLAD checkpoint) or --init-backbone")
        load_depth_backbone(model, backbone_weights)
        log(f"backbone from the depth network {backbone_weights}")
    model.to(device)
    log(f"netvlad ({model.config.backbone}, K={model.config.num_clusters}, "
        f"{model.vlad_dim}-D, whitening {model.config.pca_dim or 'none'}) on {device}")
    data = PlaceTrainingData(folders, model, cfg, log)
    log(f"{len(data)} images, {len(data.queries)} queries with potential positives")
    if model.config.pca_dim and min(cfg.pca_images, len(data)) <= model.config.pca_dim:
        raise TrainingDataError(
            f"whitening to {model.config.pca_dim}-D needs more than {model.config.pca_dim} "
            f"images (have {len(data)}, --pca-images {cfg.pca_images}); lower --pca-dim")
    run = TrainingRun(out_path, resume=resume)
    if not init_weights:
        alpha = init_clusters(model, data, cfg, device, rng)
        log(f"clusters from k-means, alpha {alpha:.1f}")
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate,
                                 weight_decay=cfg.weight_decay)
    done = run.restore(model, optimizer, rng=rng)
    info = {"trained_on": folders, "train_config": asdict(cfg), "preset": preset,
            "backbone_from": backbone_weights, "validation_sets": [list(pair) for pair in validation],
            "initialised_from": init_info}
    scored = [row for row in run.rows if math.isfinite(row.get("recall_at_1", math.nan))]
    best_recall = max((row["recall_at_1"] for row in scored), default=-math.inf)
    if done:
        log(f"resumed after epoch {done} (best Recall@1 so far {best_recall:.4f})")
    elif validation:  # the initialisation itself is a candidate: training must beat it
        record = validation_recall(model, validation, device, whitened=False)
        log(f"epoch 0 (initialisation) recall_at_1 {record['recall_at_1']:.4f} "
            f"recall_at_5 {record['recall_at_5']:.4f}")
        run.rows.append({"epoch": 0, **record})
        best_recall = record["recall_at_1"]
        model.save(out_path, info={**info, "history": run.rows})
    miner = HardNegativeMiner(data, cfg, rng)
    total = cfg.pretrain_epochs + cfg.epochs
    for epoch in range(done + 1, total + 1):
        started = time.time()
        if epoch <= cfg.pretrain_epochs:
            record = {"pretrain_loss": pretrain_epoch(
                model, data, cfg, optimizer, device, rng,
                f"pre-training {epoch}/{cfg.pretrain_epochs}")}
            # the clusters follow the features they cluster (k-means on the new backbone; its
            # alpha too: the first one was fitted to a random network's descriptors)
            init_clusters(model, data, cfg, device, rng)
        else:
            record = {"loss": triplet_epoch(model, data, cfg, optimizer, miner, device, rng,
                                            f"epoch {epoch}/{total}")}
        if validation:
            record.update(validation_recall(model, validation, device, whitened=False))
        log(f"epoch {epoch} " + " ".join(f"{k} {v:.4f}" for k, v in record.items())
            + f" ({time.time() - started:.0f} s)")
        run.end_epoch(epoch, record, model, optimizer, rng=rng)
        # the checkpoint holds the best epoch so far (by validation Recall@1, else the latest)
        score = record.get("recall_at_1", math.inf)
        if score >= best_recall:
            best_recall = score
            model.save(out_path, info={**info, "history": run.rows})
    run.finish()
    model = models.load(out_path, expected="netvlad").to(device) \
        if os.path.isfile(out_path) else model
    if model.config.pca_dim:
        images = rng.choice(len(data), min(cfg.pca_images, len(data)), replace=False)
        model.fit_whitening(compute_vlads(model, data, np.sort(images), device).to(device))
        log(f"PCA whitening to {model.config.pca_dim}-D fitted on {len(images)} images")
    info["history"] = run.rows
    if validation:
        info["validation"] = validation_recall(model, validation, device, whitened=True)
        log("validation " + " ".join(f"{k} {v}" for k, v in info["validation"].items()))
    model.save(out_path, info=info)
    return models.load(out_path, expected="netvlad")


def load_depth_backbone(model: NetVLAD, path: str) -> None:
    """Coarse 1-4 of an EigenDepth checkpoint into the eigen_coarse backbone; the depth network's
    input normalisation must be the NetVLAD model's."""
    if model.config.backbone != "eigen_coarse" or model.config.input_normalization != "fixed":
        raise ValueError(f"netvlad: --init-backbone needs the eigen_coarse backbone with fixed "
                         f"input normalisation (--preset depth), this model has "
                         f"'{model.config.backbone}', '{model.config.input_normalization}'")
    depth = models.load(path, expected="depth")
    for field_name in ("input_mean", "input_std"):
        if list(getattr(depth.config, field_name)) != list(getattr(model.config, field_name)):
            raise ValueError(f"netvlad: the depth network's {field_name} "
                             f"{getattr(depth.config, field_name)} differs from the model's "
                             f"{getattr(model.config, field_name)}")
    model.backbone.load_depth_network(depth.state_dict())


def validation_recall(model: NetVLAD, validation: list[tuple[str, str]], device: torch.device,
                      whitened: bool) -> dict:
    """Recall@1 and @5 of every (database, queries) pair and their means (`recall_at_1`, the
    selection score): one set alone would let the epochs specialise to its kind of place."""
    per_set = [_pair_recall(model, pair, device, whitened) for pair in validation]
    metrics = {key: float(np.mean([row[key] for row in per_set]))
               for key in ("recall_at_1", "recall_at_5")}
    if len(per_set) > 1:
        for index, row in enumerate(per_set, start=1):
            metrics.update({f"val{index}_{key}": value for key, value in row.items()})
    return metrics


def _pair_recall(model: NetVLAD, pair: tuple[str, str], device: torch.device,
                 whitened: bool) -> dict:
    from ..evaluation.place import correct_by_position, recall_at_n
    from ..place.build import describe_pixels

    database, queries = (read_place_folder(f) for f in pair)
    if database.group != queries.group:
        raise TrainingDataError(f"validation database and queries lie in different place groups "
                                f"({database.group}, {queries.group})")

    def describe(places):
        pixels = np.stack([model.prepare_pixels(places.load_rgb(i)) for i in range(len(places))])
        return describe_pixels(model, pixels, device, output="descriptor" if whitened else "vlad")
    db_descriptors, query_descriptors = describe(database), describe(queries)
    similarity = query_descriptors @ db_descriptors.T
    ranked = np.argsort(-similarity, axis=1, kind="stable")[:, :20]
    threshold = float(database.meta.get("positive_radius", 5.0))
    correct = correct_by_position(queries.positions, database.positions, threshold)
    metrics = recall_at_n(ranked, correct, (1, 5))
    return {k: v for k, v in metrics.items() if k.startswith("recall")}

