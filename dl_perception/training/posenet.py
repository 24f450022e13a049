"""`dl-perception train posenet`: PoseNet's recipe (Kendall et al. 2015) on any posed images.

Loss per head: ||x_hat - x|| + beta * ||q_hat - q/|q| ||, Euclidean norms as in the paper, the two
auxiliary heads (when present) weighted 0.3. Or, with `learned_weighting`, the homoscedastic form
of Kendall and Cipolla (CVPR 2017): L_x exp(-s_x) + s_x + L_q exp(-s_q) + s_q with s_x, s_q
learned (initialised 0 and -3); the 2017 paper uses the L1 norm there (`norm: l1`).

q and -q are the same rotation: labels are put on the w >= 0 hemisphere, and the orientation term
measures the distance to the nearer of +-q, which equals the paper's term whenever the prediction
lies in the label's hemisphere and stays continuous where a trajectory crosses w = 0. The
prediction is normalised before the term is taken, so an unnormalised output cannot lower it by
shrinking.

Augmentation as the paper: random crops of the resized image while training, the centre crop at
test time. Optimisation departs from the paper's (SGD at 1e-5 fine-tuning Places weights): no
pretrained weights exist here, so the network trains from scratch with Adam and a cosine learning
rate decay.

Every epoch is recorded by `TrainingRun` (`<out>.history.csv`, `<out>.loss.png`, and
`<out>.resume.pt`, from which `resume=True` / `--resume` continues a killed run).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..datasets.poses import PoseData, PosedImages
from ..evaluation.posenet import pose_metrics, predict
from ..models.posenet import PoseNet, normalize_quaternion
from ..core.progress import progress
from .common import TrainingDataError, seed_everything, split_indices
from .run import TrainingRun

AUX_LOSS_WEIGHT = 0.3  # GoogLeNet's and PoseNet's weight of each auxiliary head


@dataclass
class PoseNetTrainConfig:
    preset: str = "cpu"
    aux_heads: bool = False
    learned_weighting: bool = False
    # paper: 120-750 indoors, 250-2000 outdoors (King's College 500 in the released prototxt)
    beta: float = 500.0
    norm: str = "l2"  # "l2" (PoseNet 2015) or "l1" (Kendall & Cipolla 2017)
    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.05
    seed: int = 0


# --- loss -------------------------------------------------------------------------------------
def orientation_error(quaternion: torch.Tensor, target: torch.Tensor, norm: str = "l2"
                      ) -> torch.Tensor:
    """Per-sample ||q_hat/|q_hat| - q/|q| ||, against whichever of +-q is nearer."""
    q_hat = normalize_quaternion(quaternion)
    q = normalize_quaternion(target)
    order = 2 if norm == "l2" else 1
    return torch.minimum(torch.linalg.vector_norm(q_hat - q, ord=order, dim=-1),
                         torch.linalg.vector_norm(q_hat + q, ord=order, dim=-1))


def position_error(position: torch.Tensor, target: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    return torch.linalg.vector_norm(position - target, ord=2 if norm == "l2" else 1, dim=-1)


def posenet_loss(outputs: dict, position: torch.Tensor, quaternion: torch.Tensor,
                 beta: float, norm: str = "l2") -> tuple[torch.Tensor, dict]:
    """The PoseNet loss over the final head and any auxiliary heads in `outputs`; with
    log-variances in `outputs`, the learned weighting replaces beta."""
    if norm not in ("l2", "l1"):
        raise ValueError(f"norm must be 'l2' or 'l1', got '{norm}'")
    learned = "log_variance_position" in outputs
    total, weights, parts = 0.0, 0.0, {}
    for prefix, weight in (("", 1.0), ("aux1_", AUX_LOSS_WEIGHT), ("aux2_", AUX_LOSS_WEIGHT)):
        if prefix + "position" not in outputs:
            continue
        l_x = position_error(outputs[prefix + "position"], position, norm).mean()
        l_q = orientation_error(outputs[prefix + "quaternion"], quaternion, norm).mean()
        if learned:
            s_x = outputs["log_variance_position"].mean()
            s_q = outputs["log_variance_orientation"].mean()
            head = l_x * torch.exp(-s_x) + s_x + l_q * torch.exp(-s_q) + s_q
        else:
            head = l_x + beta * l_q
        total = total + weight * head
        weights += weight
        parts[prefix + "position_error"] = l_x.detach().item()
        parts[prefix + "orientation_error"] = l_q.detach().item()
    if learned:
        total = total / weights  # so exp(s) settles on the (weighted) mean error of the heads
    return total, parts


def scene_normalization(positions: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre of the bounding box and its largest half-extent (1 when all positions coincide)."""
    low, high = positions.min(axis=0), positions.max(axis=0)
    half = float(np.max(high - low) / 2.0)
    return (low + high) / 2.0, half if half > 1e-6 else 1.0


def pixel_statistics(images: list[np.ndarray], sample: int = 500) -> tuple[np.ndarray, np.ndarray]:
    picks = images[:: max(1, len(images) // sample)]
    pixels = np.concatenate([i.reshape(-1, 3) for i in picks]).astype(np.float64) / 255.0
    return pixels.mean(axis=0), np.maximum(pixels.std(axis=0), 1e-3)


# --- training ---------------------------------------------------------------------------------
def frame_id_of(sources: list[PosedImages]) -> str:
    frames = sorted({s.frame_id for s in sources})
    if len(frames) > 1:
        raise TrainingDataError(
            f"the datasets give poses in different frames {frames}: a PoseNet learns one scene "
            "frame (set --frame-id when they are in fact the same)")
    return frames[0]


def describe_scene(paths: list[str]) -> str:
    """The scene a PoseNet is valid in, for its checkpoint and its node's log: the simulator world
    from the datasets' meta.json, else the dataset names."""
    scenes = []
    for path in paths:
        meta_path = os.path.join(path, "meta.json")
        meta = json.load(open(meta_path)) if os.path.isfile(meta_path) else {}
        if "world_seed" in meta:
            size = meta.get("world_size")
            scene = (f"simulator world {meta['world_seed']}"
                     + (f" ({size:g} m x {size:g} m)" if size else ""))
        else:
            scene = os.path.basename(os.path.normpath(path))
        if scene not in scenes:
            scenes.append(scene)
    return ", ".join(scenes)


def train_posenet(sources: list[PosedImages], out_path: str, cfg: PoseNetTrainConfig,
                  device: torch.device, val_sources: list[PosedImages] | None = None,
                  init_weights: str | None = None, model_overrides: dict | None = None,
                  log=print, resume: bool = False) -> PoseNet:

    seed_everything(cfg.seed)
    frame_id = frame_id_of(sources + (val_sources or []))
    if init_weights:
        model = PoseNet.from_checkpoint(init_weights)
        for key in ("aux_heads", "learned_weighting"):
            if getattr(cfg, key) != getattr(model.config, key):
                raise ValueError(f"{init_weights} has {key}={getattr(model.config, key)}, the "
                                 f"training configuration {key}={getattr(cfg, key)}")
    else:
        model = PoseNet(PoseNet.make_config(cfg.preset, aux_heads=cfg.aux_heads,
                                            learned_weighting=cfg.learned_weighting,
                                            **(model_overrides or {})))
    data = PoseData(model, sources, log)
    if len(data) < 2:
        raise TrainingDataError(f"only {len(data)} frames with a finite pose: nothing to train on")
    log(f"posenet: {len(data)} training frames, {data.skipped_no_pose} skipped without a finite "
        f"pose, frame '{frame_id}'")
    if val_sources:
        val_data, train_idx = PoseData(model, val_sources, log), np.arange(len(data))
        val_idx = np.arange(len(val_data))
    else:
        val_data = data
        train_idx, val_idx = split_indices(len(data), cfg.val_fraction, cfg.seed)
    if not init_weights:
        center, scale = scene_normalization(data.positions[train_idx])
        model.set_scene(center, scale, frame_id)
        model.set_pixel_statistics(*pixel_statistics([data.images[i] for i in train_idx]))
    log(f"scene centre {np.round(model.config.scene_center, 3).tolist()} m, scale "
        f"{model.config.scene_scale:.3f} m, {len(train_idx)} train / {len(val_idx)} validation "
        f"frames, preset {cfg.preset}, device {device}")
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate,
                                 weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / total_steps)))
    rng = np.random.default_rng(cfg.seed)
    run = TrainingRun(out_path, resume=resume)
    first_epoch = run.restore(model, optimizer, scheduler, rng)
    if first_epoch:
        log(f"posenet: resuming after epoch {first_epoch}")
    paths = [s.path for s in sources]
    info = {"trained_on": paths, "scene": describe_scene(paths), "train_config": asdict(cfg),
            "frames": len(train_idx), "skipped_no_pose": data.skipped_no_pose}
    if init_weights:  # keep the history of a resumed or fine-tuned model reproducible
        info["initialised_from"] = {"path": init_weights, "info": model.checkpoint_info}
    for epoch in range(first_epoch, cfg.epochs):
        model.train()
        started, losses = time.time(), []
        order = rng.permutation(train_idx)
        for start in progress(range(0, len(order), cfg.batch_size),
                              desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch"):
            batch_idx = order[start:start + cfg.batch_size]
            if len(batch_idx) < 2 and model.config.normalization == "batchnorm":
                continue  # batch norm cannot train on one sample
            images, positions, quaternions = data.batch(batch_idx, model.config.crop, rng)
            outputs = model(images.to(device))
            loss, _ = posenet_loss(outputs, positions.to(device), quaternions.to(device),
                                   cfg.beta, cfg.norm)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        metrics = {}
        if len(val_idx):
            positions, quaternions = predict(model, val_data, val_idx, device)
            metrics = pose_metrics(positions, quaternions, val_data.positions[val_idx],
                                   val_data.quaternions[val_idx])
        extra, recorded = "", {"loss": np.mean(losses) if losses else math.nan}
        if cfg.learned_weighting:
            s_x, s_q = model.log_variances.detach().cpu().tolist()
            extra = f" s_x {s_x:.2f} s_q {s_q:.2f}"
            recorded.update(s_x=s_x, s_q=s_q)
        log(f"epoch {epoch + 1}/{cfg.epochs} loss {recorded['loss']:.4f}"
            + (f" validation {metrics['median_position_error_m']:.3f} m "
               f"{metrics['median_rotation_error_deg']:.2f} deg" if metrics else "")
            + extra + f" ({time.time() - started:.0f} s)")
        # written every epoch, so an interrupted run keeps its latest model
        model.save(out_path, info={**info, "epoch": epoch + 1, "validation": metrics})
        recorded.update({k: v for k, v in metrics.items()
                         if k in ("median_position_error_m", "median_rotation_error_deg",
                                  "within_0.5m_5deg")})
        run.end_epoch(epoch + 1, recorded, model, optimizer, scheduler, rng)
    run.finish()
    return PoseNet.from_checkpoint(out_path)
