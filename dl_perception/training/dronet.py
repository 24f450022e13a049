"""`dl-perception train dronet`: DroNet's training recipe (rpg_public_dronet cnn.py, utils.py,
log_utils.py), re-implemented in PyTorch.

Loss = L_mse + beta(epoch) * L_bce + L2 on the residual convolutions, where both terms use hard
example mining: only the k largest per-sample losses of a batch count (sum / k). k starts at the
batch size and decays towards 10 (steering) and 5 (collision); beta ramps the collision term in
after the first epochs. Each sample may carry a steering label, a collision label, or both.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch

from ..datasets.dronet import DroNetSample, read_dronet_dataset
from ..models.dronet import DroNet
from .common import dataset_world_seeds, refuse_evaluation_worlds, seed_everything, split_indices


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
    val_fraction: float = 0.1
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
    steer_valid = torch.isfinite(steering)
    coll_valid = torch.isfinite(collision)
    steer_err = (outputs["steering"] - torch.nan_to_num(steering)) ** 2
    coll_err = torch.nn.functional.binary_cross_entropy_with_logits(
        outputs["collision_logit"], torch.nan_to_num(collision), reduction="none")
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
            crops = np.stack([_augment(c, rng, cfg) for c in crops])
        images = torch.from_numpy(crops.astype(np.float32) / 255.0)[:, None]
        return (images, torch.from_numpy(steering), torch.from_numpy(self.collision[indices]))


def _augment(crop: np.ndarray, rng: np.random.Generator, cfg: DroNetTrainConfig) -> np.ndarray:
    size = crop.shape[0]
    angle = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
    matrix[:, 2] += rng.uniform(-cfg.shift_fraction, cfg.shift_fraction, size=2) * size
    return cv2.warpAffine(crop, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


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


def train_dronet(dataset_dirs: list[str], out_path: str, cfg: DroNetTrainConfig,
                 device: torch.device, init_weights: str | None = None,
                 log=print) -> DroNet:
    for directory in dataset_dirs:
        refuse_evaluation_worlds(directory)
    samples = [s for d in dataset_dirs for s in read_dronet_dataset(d)]
    seed_everything(cfg.seed)
    model = DroNet.from_checkpoint(init_weights) if init_weights else DroNet(DroNet.make_config())
    model.to(device)
    data = DroNetData(samples, model)
    train_idx, val_idx = split_indices(len(samples), cfg.val_fraction, cfg.seed)
    n_steer = int(np.isfinite(data.steering).sum())
    n_coll = int(np.isfinite(data.collision).sum())
    log(f"dronet: {len(samples)} samples ({n_steer} steering, {n_coll} collision labels), "
        f"{len(train_idx)} train / {len(val_idx)} validation, device {device}")
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda iteration: 1.0 / (1.0 + cfg.lr_decay * iteration))
    rng = np.random.default_rng(cfg.seed)
    best = math.inf
    for epoch in range(cfg.epochs):
        model.train()
        beta = collision_weight(epoch, cfg)
        k_steer = hard_mining_k(epoch, cfg, cfg.min_k_steering)
        k_coll = hard_mining_k(epoch, cfg, cfg.min_k_collision)
        started, losses = time.time(), []
        order = rng.permutation(train_idx)
        for start in range(0, len(order), cfg.batch_size):
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
        if val_loss <= best:  # keep the best validation epoch, as the official ModelCheckpoint
            best = val_loss
            model.save(out_path, info={"trained_on": dataset_dirs, "epoch": epoch + 1,
                                       "world_seeds": dataset_world_seeds(dataset_dirs),
                                       "train_config": asdict(cfg), "validation": metrics})
    return DroNet.from_checkpoint(out_path)


def evaluate_split(model: DroNet, data: DroNetData, indices: np.ndarray,
                   device: torch.device) -> dict:
    from ..evaluation.dronet import dronet_metrics

    steering, collision = predict(model, data, indices, device=device)
    return dronet_metrics(steering, collision, data.steering[indices], data.collision[indices])
