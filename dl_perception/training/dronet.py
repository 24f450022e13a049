"""`dl-perception train dronet`: DroNet's training recipe (rpg_public_dronet cnn.py, utils.py,
log_utils.py), re-implemented in PyTorch.

Loss = L_mse + beta(epoch) * L_bce + L2 on the residual convolutions, where both terms use hard
example mining: only the k largest per-sample losses of a batch count (sum / k). k starts at the
batch size and decays towards 10 (steering) and 5 (collision); beta ramps the collision term in
after the first epochs. Each sample may carry a steering label, a collision label, or both.

For real cameras (docs/dronet.md) the same loop adds: a camera-response augmentation (gain,
gamma, offset, blur, sensor noise) beside the official shift/rotation; collision distillation
(frames without a collision label learn a teacher checkpoint's probability, so fine-tuning the
steering head on driving video keeps the teacher's collision behaviour) and steering
distillation, both from the mean of several teachers (an ensemble of the real-trained releases
distilled into one network); frozen layers; a
held-out tail of each training sequence for choosing the epoch; and refusal of the real
validation sets (`REAL_VALIDATION`). Every epoch is recorded by `TrainingRun` (history CSV, loss
plot, resume state beside the output checkpoint).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
import torch

from ..datasets.dronet import DroNetSample, parse_dataset_spec, read_dronet_dataset
from ..models.dronet import DroNet
from ..core.paths import shared_data_dir
from ..core.progress import progress
from .common import (TrainingDataError, dataset_world_seeds, refuse_evaluation_worlds,
                     seed_everything, split_indices)
from .run import TrainingRun

# Real validation data (../shared/data): folder -> the fraction range no training may touch.
REAL_VALIDATION = {"himax_collision": (0.0, 1.0), "dronet_collision": (0.0, 1.0),
                   "udacity_hmb3": (0.75, 1.0)}


@dataclass
class DroNetTrainConfig:
    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 1e-3
    lr_decay: float = 1e-5  # Keras-style: lr / (1 + decay * iterations)
    collision_start_epoch: float = 10.0  # beta = max(0, 1 - exp(-(epoch - start) / ramp))
    collision_ramp_epochs: float = 10.0
    hard_mining_start_epoch: float = 30.0  # k decays from batch size after this epoch
    hard_mining_ramp_epochs: float = 30.0
    min_k_steering: int = 10
    min_k_collision: int = 5
    shift_fraction: float = 0.2  # random translation, as the official generator
    rotation_deg: float = 0.2
    flip_probability: float = 0.0  # mirror left-right and negate steering (not in the official generator)
    # camera-response augmentation strength (0 = off, 1 = gain x0.6-1.4, gamma x0.67-1.5,
    # offset +-0.2, blur sigma up to 1.5 px on a third of the frames, noise up to 3%)
    photometric: float = 0.0
    val_fraction: float = 0.1
    val_split: str = "random"  # "random" frames, or "tail": the last val_fraction of each dataset
    # knowledge distillation from teacher checkpoints (the mean of their outputs): frames without a
    # collision label learn the teachers' probability; the steering target becomes
    # distill_steering_weight x teachers' steering + the rest x the label (the teachers' alone
    # where a frame has no label)
    distill_collision: list = field(default_factory=list)
    distill_steering: list = field(default_factory=list)
    distill_steering_weight: float = 0.5
    freeze: list = field(default_factory=list)  # parameter-name prefixes kept fixed
    seed: int = 0


def collision_weight(epoch: int, cfg: DroNetTrainConfig) -> float:
    return max(0.0, 1.0 - math.exp(-(epoch - cfg.collision_start_epoch) / cfg.collision_ramp_epochs))


def hard_mining_k(epoch: int, cfg: DroNetTrainConfig, minimum: int) -> int:
    decay = max(0.0, 1.0 - math.exp(-(epoch - cfg.hard_mining_start_epoch) / cfg.hard_mining_ramp_epochs))
    return int(round(cfg.batch_size - (cfg.batch_size - minimum) * decay))


def hard_mining_mean(per_sample: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of the k largest losses among valid samples, divided by k (as the official code)."""
    n_valid = int(valid.sum())
    if n_valid == 0:
        return per_sample.sum() * 0.0
    losses = per_sample[valid]
    top = torch.topk(losses, min(k, n_valid)).values
    return top.sum() / k


def dronet_loss(outputs: dict, steering: torch.Tensor, collision: torch.Tensor, k_steering: int,
                k_collision: int, beta: float) -> tuple[torch.Tensor, dict]:
    """`collision` may be soft (a teacher's probability): its entropy is subtracted, so a frame's
    loss is its KL divergence, zero when matched, and hard mining ranks frames by disagreement
    rather than by the teacher's uncertainty (for 0/1 labels the entropy is 0)."""
    steer_valid = torch.isfinite(steering)
    coll_valid = torch.isfinite(collision)
    steer_err = (outputs["steering"] - torch.nan_to_num(steering)) ** 2
    target = torch.nan_to_num(collision).clamp(0.0, 1.0)
    entropy = -(torch.special.xlogy(target, target) + torch.special.xlogy(1 - target, 1 - target))
    coll_err = torch.nn.functional.binary_cross_entropy_with_logits(
        outputs["collision_logit"], target, reduction="none") - entropy
    l_steer = hard_mining_mean(steer_err, steer_valid, k_steering)
    l_coll = hard_mining_mean(coll_err, coll_valid, k_collision)
    return l_steer + beta * l_coll, {"steering_mse": l_steer.detach().item(),
                                    "collision_bce": l_coll.detach().item()}


class DroNetData:
    """All samples preprocessed once to uint8 crops (the authors' resize + crop), in memory."""

    def __init__(self, samples: list[DroNetSample], model: DroNet):
        crops = []
        for sample in samples:
            gray = cv2.imread(sample.image, cv2.IMREAD_GRAYSCALE)
            if gray is None:
                raise ValueError(f"cannot read image {sample.image}")
            crops.append(model.crop_pixels(gray))
        self.crops = np.stack(crops)
        self.steering = np.array([s.steering for s in samples], dtype=np.float32)
        self.collision = np.array([s.collision for s in samples], dtype=np.float32)

    def batch(self, indices: np.ndarray, rng: np.random.Generator | None,
              cfg: DroNetTrainConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        crops, steering = self.crops[indices], self.steering[indices]
        if rng is not None:
            if cfg.flip_probability > 0:
                flips = rng.random(len(indices)) < cfg.flip_probability
                crops = np.where(flips[:, None, None], crops[:, :, ::-1], crops)
                steering = np.where(flips, -steering, steering)
            images = np.stack([_augment(c, rng, cfg) for c in crops])
        else:
            images = crops.astype(np.float32) / 255.0
        return (torch.from_numpy(np.ascontiguousarray(images))[:, None], torch.from_numpy(steering),
                torch.from_numpy(self.collision[indices]))


def _augment(crop: np.ndarray, rng: np.random.Generator, cfg: DroNetTrainConfig) -> np.ndarray:
    """uint8 crop -> float32 in [0, 1]: the official random shift and rotation, then the
    camera-response augmentation."""
    size = crop.shape[0]
    angle = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
    matrix[:, 2] += rng.uniform(-cfg.shift_fraction, cfg.shift_fraction, size=2) * size
    warped = cv2.warpAffine(crop, matrix, (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    image = warped.astype(np.float32) / 255.0
    return photometric_augment(image, rng, cfg.photometric) if cfg.photometric > 0 else image


def photometric_augment(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """A random camera response on a [0, 1] grey image: gamma, gain about mid-grey, offset, optical
    blur and sensor noise, the ways real cameras (a GoPro, a car camera, a Himax sensor) differ."""
    gamma = math.exp(rng.uniform(-0.4, 0.4) * strength)
    gain = 1.0 + rng.uniform(-0.4, 0.4) * strength
    offset = rng.uniform(-0.2, 0.2) * strength
    image = (np.power(image, gamma) - 0.5) * gain + 0.5 + offset
    if rng.random() < strength / 3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.5))
    noise = rng.uniform(0.0, 0.03) * strength
    if noise > 0:
        image = image + rng.normal(0.0, noise, image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def predict(model: DroNet, data: DroNetData, indices: np.ndarray, batch_size: int = 64,
            device: torch.device = torch.device("cpu")) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    steering, collision = [], []
    with torch.inference_mode():
        for start in range(0, len(indices), batch_size):
            images, _, _ = data.batch(indices[start:start + batch_size], None, DroNetTrainConfig())
            out = model(images.to(device))
            steering.append(out["steering"].cpu().numpy())
            collision.append(out["collision_probability"].cpu().numpy())
    return np.concatenate(steering), np.concatenate(collision)


def refuse_real_validation(spec: str) -> None:
    """Raise when `spec` reaches into a real validation set (REAL_VALIDATION) of the shared data."""
    root, start, end = parse_dataset_spec(spec)
    for name, (lo, hi) in REAL_VALIDATION.items():
        reserved = os.path.join(shared_data_dir(), name)
        if os.path.isdir(reserved) and os.path.isdir(root) and os.path.samefile(root, reserved) \
                and start < hi and end > lo:
            raise TrainingDataError(
                f"{spec}: frames {lo:g}-{hi:g} of {name} are real validation data and never used "
                f"for training" + (f" (train on {name}@0:{lo:g})" if lo > 0 else ""))


def split_train_val(counts: list[int], cfg: DroNetTrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the concatenated datasets: random frames, or the tail of each dataset (for
    sequences, where neighbouring frames are near copies)."""
    if cfg.val_split == "random":
        return split_indices(sum(counts), cfg.val_fraction, cfg.seed)
    if cfg.val_split != "tail":
        raise ValueError(f"val_split must be 'random' or 'tail', got {cfg.val_split!r}")
    train, val, offset = [], [], 0
    for count in counts:
        cut = count - int(round(count * cfg.val_fraction))
        train.append(np.arange(offset, offset + cut))
        val.append(np.arange(offset + cut, offset + count))
        offset += count
    return np.concatenate(train), np.concatenate(val)


def teacher_outputs(samples: list[DroNetSample], teachers: list[str],
                    device: torch.device) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each teacher checkpoint's steering and collision probability on every sample, with its own
    preprocessing (a PULP-DroNet teacher crops differently)."""
    outputs = {}
    for path in dict.fromkeys(teachers):
        teacher = DroNet.from_checkpoint(path).to(device)
        outputs[path] = predict(teacher, DroNetData(samples, teacher), np.arange(len(samples)),
                                device=device)
    return outputs


def distill_labels(data: "DroNetData", samples: list[DroNetSample], cfg: DroNetTrainConfig,
                   device: torch.device, log=print) -> None:
    """Replace the targets by the teachers' mean outputs as DroNetTrainConfig describes."""
    if not cfg.distill_collision and not cfg.distill_steering:
        return
    outputs = teacher_outputs(samples, [*cfg.distill_collision, *cfg.distill_steering], device)
    if cfg.distill_collision:
        missing = ~np.isfinite(data.collision)
        probability = np.mean([outputs[t][1] for t in cfg.distill_collision], axis=0)
        data.collision[missing] = probability[missing]
        log(f"dronet: {int(missing.sum())} frames take their collision target from "
            f"{len(cfg.distill_collision)} teacher(s)")
    if cfg.distill_steering:
        steering = np.mean([outputs[t][0] for t in cfg.distill_steering], axis=0)
        weight = cfg.distill_steering_weight
        data.steering = np.where(np.isfinite(data.steering),
                                 weight * steering + (1 - weight) * data.steering,
                                 steering).astype(np.float32)
        log(f"dronet: steering targets = {weight:g} x the mean of {len(cfg.distill_steering)} "
            f"teacher(s) + {1 - weight:g} x the label")


def _frozen(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def train_dronet(dataset_dirs: list[str], out_path: str, cfg: DroNetTrainConfig,
                 device: torch.device, init_weights: str | None = None, resume: bool = False,
                 collision_only: list[str] = (), log=print) -> DroNet:
    """`collision_only`: more datasets whose steering labels are dropped (simulator recordings:
    their avoidance command is another quantity than a car's steering angle)."""
    collision_only = list(collision_only)
    dataset_dirs = list(dataset_dirs) + collision_only
    for spec in dataset_dirs:
        refuse_real_validation(spec)
        refuse_evaluation_worlds(parse_dataset_spec(spec)[0])
    per_dataset = [read_dronet_dataset(d) for d in dataset_dirs]
    for spec, part in zip(dataset_dirs, per_dataset):
        if spec in collision_only:
            for sample in part:
                sample.steering = math.nan
    samples = [s for part in per_dataset for s in part]
    seed_everything(cfg.seed)
    model = DroNet.from_checkpoint(init_weights) if init_weights else DroNet(DroNet.make_config())
    model.to(device)
    data = DroNetData(samples, model)
    train_idx, val_idx = split_train_val([len(p) for p in per_dataset], cfg)
    n_steer = int(np.isfinite(data.steering).sum())
    n_coll = int(np.isfinite(data.collision).sum())
    log(f"dronet: {len(samples)} samples ({n_steer} steering, {n_coll} collision labels), "
        f"{len(train_idx)} train / {len(val_idx)} held out ({cfg.val_split}), device {device}")
    distill_labels(data, samples, cfg, device, log)
    frozen_params = [p for n, p in model.named_parameters() if _frozen(n, cfg.freeze)]
    if cfg.freeze and not frozen_params:
        raise ValueError(f"--freeze {cfg.freeze}: no parameter has such a name prefix")
    for parameter in frozen_params:
        parameter.requires_grad_(False)
    frozen_norms = [m for n, m in model.named_modules()
                    if isinstance(m, torch.nn.BatchNorm2d) and _frozen(n, cfg.freeze)]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                 lr=cfg.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda iteration: 1.0 / (1.0 + cfg.lr_decay * iteration))
    rng = np.random.default_rng(cfg.seed)
    run = TrainingRun(out_path, resume=resume)
    first_epoch = run.restore(model, optimizer, scheduler, rng)
    if first_epoch:
        log(f"dronet: resuming after epoch {first_epoch}")
    best = min((row["val_loss"] for row in run.rows if math.isfinite(row.get("val_loss", math.nan))),
               default=math.inf)
    info = {"trained_on": dataset_dirs, "collision_only": collision_only,
            "world_seeds": dataset_world_seeds([parse_dataset_spec(d)[0] for d in dataset_dirs]),
            "train_config": asdict(cfg)}
    if init_weights:
        info["initialised_from"] = init_weights
        parent = model.checkpoint_info
        if parent.get("licence"):  # fine-tuned weights stay under their origin's licence
            info["licence"] = parent["licence"]
            info["derived_from"] = parent.get("source", init_weights)
    for epoch in range(first_epoch, cfg.epochs):
        model.train()
        for module in frozen_norms:  # frozen layers keep their running statistics too
            module.eval()
        beta = collision_weight(epoch, cfg)
        k_steer = hard_mining_k(epoch, cfg, cfg.min_k_steering)
        k_coll = hard_mining_k(epoch, cfg, cfg.min_k_collision)
        started, losses = time.time(), []
        order = rng.permutation(train_idx)
        starts = range(0, len(order), cfg.batch_size)
        for start in progress(starts, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch"):
            images, steering, collision = data.batch(order[start:start + cfg.batch_size], rng, cfg)
            outputs = model(images.to(device))
            loss, _ = dronet_loss(outputs, steering.to(device), collision.to(device),
                                  k_steer, k_coll, beta)
            loss = loss + model.regularization_loss()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        metrics = evaluate_split(model, data, val_idx, device) if len(val_idx) else {}
        val_loss = metrics.get("steering_rmse", 0.0) ** 2 + metrics.get("collision_bce", 0.0)
        log(f"epoch {epoch + 1}/{cfg.epochs} loss {np.mean(losses):.4f} beta {beta:.2f} "
            f"k {k_steer}/{k_coll} " + " ".join(f"{k} {v:.3f}" for k, v in metrics.items())
            + f" ({time.time() - started:.0f} s)")
        if val_loss <= best:  # keep the best held-out epoch, as the official ModelCheckpoint
            best = val_loss
            model.save(out_path, info={**info, "epoch": epoch + 1, "validation": metrics})
        run.end_epoch(epoch + 1, {"loss": float(np.mean(losses)), "val_loss": val_loss,
                                  "beta": beta, **metrics}, model, optimizer, scheduler, rng)
    return DroNet.from_checkpoint(out_path)


def evaluate_split(model: DroNet, data: DroNetData, indices: np.ndarray,
                   device: torch.device) -> dict:
    from ..evaluation.dronet import dronet_metrics

    steering, collision = predict(model, data, indices, device=device)
    return dronet_metrics(steering, collision, data.steering[indices], data.collision[indices])
