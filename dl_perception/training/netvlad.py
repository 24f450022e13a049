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

Clusters start from k-means on sampled local descriptors; PCA whitening is fitted at the end on
the training images' NetVLAD vectors. A photometric augmentation (gain, gamma, per-channel
colour) is applied to every training image by default: the light CPU backbone starts from
scratch, without the ImageNet pre-training the paper's VGG16 has.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import models
from ..datasets.places import read_place_folder
from ..models.netvlad import NetVLAD
from .common import TrainingDataError, refuse_evaluation_worlds, seed_everything


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
    seed: int = 0


def triplet_ranking_loss(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                         margin: float) -> torch.Tensor:
    """query, positive: B x D; negatives: B x M x D. Squared Euclidean distances, hinge summed
    over the negatives, averaged over the queries."""
    d_positive = (query - positive).pow(2).sum(-1)
    d_negative = (query[:, None] - negatives).pow(2).sum(-1)
    return F.relu(margin + d_positive[:, None] - d_negative).sum(1).mean()


def photometric_augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random gain, gamma and per-channel colour per image of a B x 3 x H x W batch in [0, 1]:
    lighting changes the way a dusk or an overcast preset makes them."""
    count = batch.shape[0]

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(count, *shape, generator=generator)
    gamma = uniform(0.6, 1.6, 1, 1, 1).to(batch)
    gain = uniform(0.5, 1.3, 1, 1, 1).to(batch)
    colour = uniform(0.8, 1.2, 3, 1, 1).to(batch)
    return (batch.clamp_min(1e-4).pow(gamma) * gain * colour).clamp(0.0, 1.0)


class PlaceTrainingData:
    """Training images at the model's input size (uint8, in memory) with positions, and per
    query its potential positives and definite negatives."""

    def __init__(self, folders: list[str], model: NetVLAD, cfg: NetVLADTrainConfig, log=print):
        import faiss

        pixels, positions, groups, routes = [], [], [], []
        group_ids: dict[str, int] = {}
        for route, folder in enumerate(folders):
            refuse_evaluation_worlds(folder)
            places = read_place_folder(folder)
            group = group_ids.setdefault(places.group, len(group_ids))
            for index in range(len(places)):
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
        self.positives: dict[int, np.ndarray] = {}
        self.negatives: dict[int, np.ndarray] = {}
        everything = np.arange(len(self.pixels))
        for group in np.unique(self.groups):
            members = np.flatnonzero((self.groups == group) & known)
            if len(members) == 0:
                continue
            index = faiss.IndexFlatL2(3)
            index.add(np.ascontiguousarray(self.positions[members], dtype=np.float32))
            queries = np.ascontiguousarray(self.positions[members], dtype=np.float32)
            several_routes = len(np.unique(self.routes[members])) > 1
            # faiss range search is strict (<): widen by 0.1 mm so both radii are inclusive
            lims, _, near = index.range_search(queries, (cfg.positive_radius + 1e-4) ** 2)
            lims_far, _, not_far = index.range_search(queries, (cfg.negative_radius + 1e-4) ** 2)
            outside_group = everything[(self.groups != group) & known]
            for row, query in enumerate(members):
                candidates = members[near[lims[row]:lims[row + 1]]]
                candidates = candidates[candidates != query]
                if several_routes:  # learn across routes (presets), not from the next frame
                    candidates = candidates[self.routes[candidates] != self.routes[query]]
                if len(candidates) == 0:
                    continue
                within = np.zeros(len(self.pixels), bool)
                within[members[not_far[lims_far[row]:lims_far[row + 1]]]] = True
                negatives = np.concatenate([np.setdiff1d(members, np.flatnonzero(within),
                                                         assume_unique=True), outside_group])
                if len(negatives) < cfg.num_negatives:
                    continue
                self.positives[int(query)] = candidates
                self.negatives[int(query)] = negatives
        self.queries = np.array(sorted(self.positives), dtype=np.int64)
        if len(self.queries) == 0:
            raise TrainingDataError(
                f"no training query has both a potential positive within {cfg.positive_radius} m "
                f"and {cfg.num_negatives} negatives beyond {cfg.negative_radius} m")

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
        negatives = self.data.negatives[query]
        pool = self.rng.choice(negatives, min(cfg.negative_pool, len(negatives)), replace=False)
        pool = np.union1d(pool, self.previous_hard.get(query, np.zeros(0, np.int64)))
        d_negative = (cache[pool] - cache[query]).pow(2).sum(1)
        hardest = pool[np.argsort(d_negative.numpy(), kind="stable")[:cfg.num_negatives]]
        self.previous_hard[query] = hardest
        return best, hardest


def train_netvlad(folders: list[str], out_path: str, cfg: NetVLADTrainConfig,
                  device: torch.device, preset: str = "cpu", init_weights: str | None = None,
                  validation: tuple[str, str] | None = None, model_overrides: dict | None = None,
                  log=print) -> NetVLAD:
    """Train on the image folders (sequence or places.csv layout); `validation` = (database
    folder, query folder) picks the best epoch by Recall@1 (5 m). `model_overrides` change the
    preset's model configuration (e.g. pca_dim)."""
    for folder in folders + list(validation or ()):
        refuse_evaluation_worlds(folder)
    seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    if init_weights:
        model = models.load(init_weights, expected="netvlad")
        if model_overrides:  # e.g. whitening to another dimension: keep everything else
            kept = {k: v for k, v in model.state_dict().items() if not k.startswith("whitening_")}
            model = NetVLAD(dataclasses.replace(model.config, **model_overrides))
            model.load_state_dict(kept, strict=False)
    else:
        model = models.create("netvlad", preset, **(model_overrides or {}))
    model.to(device)
    log(f"netvlad ({model.config.backbone}, K={model.config.num_clusters}, "
        f"{model.vlad_dim}-D, whitening {model.config.pca_dim or 'none'}) on {device}")
    data = PlaceTrainingData(folders, model, cfg, log)
    log(f"{len(data)} images, {len(data.queries)} queries with potential positives")
    if model.config.pca_dim and min(cfg.pca_images, len(data)) <= model.config.pca_dim:
        raise TrainingDataError(
            f"whitening to {model.config.pca_dim}-D needs more than {model.config.pca_dim} "
            f"images (have {len(data)}, --pca-images {cfg.pca_images}); lower --pca-dim")
    if not init_weights:
        alpha = init_clusters(model, data, cfg, device, rng)
        log(f"clusters from k-means, alpha {alpha:.1f}")
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate,
                                 weight_decay=cfg.weight_decay)
    miner = HardNegativeMiner(data, cfg, rng)
    history, best_recall, best_state = [], -1.0, None
    if validation:  # the initialisation itself is a candidate: training must beat it
        record = {"epoch": 0, **validation_recall(model, validation, device, whitened=False)}
        history.append(record)
        log(f"epoch 0 (k-means initialisation) recall_at_1 {record['recall_at_1']:.4f} "
            f"recall_at_5 {record['recall_at_5']:.4f}")
        best_recall, best_state = record["recall_at_1"], copy.deepcopy(model.state_dict())
    per_epoch = cfg.queries_per_epoch or len(data.queries)
    for epoch in range(cfg.epochs):
        started, losses, seen = time.time(), [], 0
        order = rng.permutation(data.queries)[:per_epoch]
        for start in range(0, len(order), cfg.batch_size):
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
                batch = photometric_augment(batch, generator)
            vlads = model(batch)["vlad"].view(len(queries), 2 + cfg.num_negatives, -1)
            loss = triplet_ranking_loss(vlads[:, 0], vlads[:, 1], vlads[:, 2:], cfg.margin)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            seen += len(queries)
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses))}
        if validation:
            record.update(validation_recall(model, validation, device, whitened=False))
        history.append(record)
        log(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in record.items()) + f" ({time.time() - started:.0f} s)")
        score = record.get("recall_at_1", -float(record["loss"]))
        if score >= best_recall:
            best_recall, best_state = score, copy.deepcopy(model.state_dict())
        miner.cache = None  # the next epoch starts from fresh descriptors
    if best_state is not None:
        model.load_state_dict(best_state)
    if model.config.pca_dim:
        images = rng.choice(len(data), min(cfg.pca_images, len(data)), replace=False)
        model.fit_whitening(compute_vlads(model, data, np.sort(images), device).to(device))
        log(f"PCA whitening to {model.config.pca_dim}-D fitted on {len(images)} images")
    info = {"trained_on": folders, "train_config": asdict(cfg), "history": history,
            "preset": preset}
    if validation:
        info["validation"] = validation_recall(model, validation, device, whitened=True)
        log("validation " + " ".join(f"{k} {v}" for k, v in info["validation"].items()))
    model.save(out_path, info=info)
    return models.load(out_path, expected="netvlad")


def validation_recall(model: NetVLAD, validation: tuple[str, str], device: torch.device,
                      whitened: bool, threshold: float = 5.0) -> dict:
    from ..evaluation.place import correct_by_position, recall_at_n
    from ..place.build import describe_pixels

    database, queries = (read_place_folder(f) for f in validation)
    if database.group != queries.group:
        raise TrainingDataError(f"validation database and queries lie in different place groups "
                                f"({database.group}, {queries.group})")
    def describe(places):
        pixels = np.stack([model.prepare_pixels(places.load_rgb(i)) for i in range(len(places))])
        return describe_pixels(model, pixels, device, output="descriptor" if whitened else "vlad")
    db_descriptors, query_descriptors = describe(database), describe(queries)
    similarity = query_descriptors @ db_descriptors.T
    ranked = np.argsort(-similarity, axis=1, kind="stable")[:, :20]
    correct = correct_by_position(queries.positions, database.positions, threshold)
    metrics = recall_at_n(ranked, correct, (1, 5))
    return {k: v for k, v in metrics.items() if k.startswith("recall")}

