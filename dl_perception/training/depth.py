"""`dl-perception train depth`: the training recipe of Eigen et al. 2014, in PyTorch.

- Loss (Eqn. 4): per image, (1/n) sum d_i^2 - (lambda/n^2) (sum d_i)^2 with d_i = log y_i - log y*_i
  over the n pixels that have a target (0, inf, NaN targets are masked), lambda = 0.5.
- Schedule: the coarse stack is trained first against the targets; then it is held fixed
  (evaluation mode, no gradients) and the fine stack is trained on its output.
- Optimiser: SGD with momentum 0.9, batch 32, the paper's per-layer rates (0.001 convolutions,
  0.1 fully connected, 0.01 for the middle fine layer), all multiplied by `lr_scale`; or Adam with
  one rate (`optimizer adam`), which trains a network without ImageNet pretraining faster.
- Augmentation (Sec. 3.4): scale s in [1, max_scale] with depths divided by s, rotation within
  +-rotation_deg, random crop (translation), a global RGB factor in [0.8, 1.2]^3, horizontal flips.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch

from ..datasets.depth import (DepthSample, load_rgb, load_sample_depth, read_depth_dataset,
                              sequence_folders)
from ..models.depth import EigenDepth, resize_image
from .common import TrainingDataError, refuse_evaluation_worlds, seed_everything


@dataclass
class DepthTrainConfig:
    preset: str = "cpu"
    coarse_epochs: int = 30
    fine_epochs: int = 20
    batch_size: int = 32
    optimizer: str = "sgd"  # sgd (the paper's) or adam
    lr_scale: float = 1.0  # multiplies the paper's per-layer SGD rates
    adam_lr: float = 1e-4
    lr_schedule: str = "constant"  # or cosine: every stage's rates decay to 0 by its last step
    momentum: float = 0.9
    loss_lambda: float = 0.5
    max_scale: float = 1.5  # NYU: [1, 1.5]; KITTI: [1, 1.2]
    rotation_deg: float = 5.0  # NYU: 5; KITTI: 0
    color_range: float = 0.2  # RGB multiplied by c in [1 - r, 1 + r]^3
    flip: bool = True
    val_fraction: float = 0.1  # the last frames of every dataset folder
    frame_stride: int = 1  # use every n-th frame
    seed: int = 0
    grey_probability: float = 0.0  # supervised images turned grey (real grey cameras)
    # self-supervision on real images (training/depth_selfsup.py), mixed into every step
    real_batch: int = 8  # targets per step from each real source
    video_weight: float = 1.0  # reprojection loss on video with a learnt pose
    video_offset: int = 2  # source frames t - offset and t + offset
    video_focal_ratio: float = 0.8  # assumed focal length / image width of the video camera
    posed_weight: float = 1.0  # reprojection loss on multi-view images with known cameras
    posed_val_scenes: str = "entry-P10"  # comma-separated scenes held out for validation
    pose_lr: float = 1e-4  # Adam rate of the pose network
    sparse_weight: float = 1.0  # scale-invariant loss on real images with sparse metric depth
    select_on: str = "combined"  # checkpoint choice: combined, simulator or relative (below)


def scale_invariant_loss(log_prediction: torch.Tensor, target: torch.Tensor,
                         loss_lambda: float = 0.5) -> torch.Tensor:
    """Eqn. 4 of the paper, averaged over the images of the batch that have any valid target.
    `target` is metric depth; pixels that are not finite and positive do not count."""
    valid = torch.isfinite(target) & (target > 0)
    safe = torch.where(valid, target, torch.ones_like(target))
    diff = torch.where(valid, log_prediction - torch.log(safe), torch.zeros_like(target))
    dims = tuple(range(1, diff.dim()))
    count = valid.sum(dim=dims).to(diff.dtype)
    has_any = count > 0
    count = count.clamp(min=1.0)
    per_image = (diff ** 2).sum(dim=dims) / count - loss_lambda * (diff.sum(dim=dims) / count) ** 2
    if not bool(has_any.any()):
        return log_prediction.sum() * 0.0
    return per_image[has_any].mean()


def resize_depth(depth: np.ndarray, width: int, height: int) -> np.ndarray:
    """Depth (NaN = no measurement) at another size: the nearest measurement, so no depth is
    invented across object boundaries; holes that sparse depth (laser) leaves take the mean of
    the valid depths the output pixel covers."""
    nearest = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
    holes = ~np.isfinite(nearest)
    if holes.any() and width * height < depth.shape[0] * depth.shape[1]:
        valid = np.isfinite(depth)
        total = cv2.resize(np.where(valid, depth, 0.0).astype(np.float32), (width, height),
                           interpolation=cv2.INTER_AREA)
        weight = cv2.resize(valid.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
        with np.errstate(invalid="ignore", divide="ignore"):
            filled = total / weight
        nearest[holes] = np.where(weight[holes] > 0, filled[holes], np.nan)
    return nearest


class DepthData:
    """Frames at the network's view resolution (what `preprocess` resizes to), in memory:
    RGB uint8 and depth float16 (NaN = none); batches are cut out with augmentation."""

    def __init__(self, samples: list[DepthSample], model: EigenDepth, log=print):
        self.model = model
        self.images, self.depths = [], []
        started = time.time()
        for index, sample in enumerate(samples):
            rgb = load_rgb(sample.image)
            depth = load_sample_depth(sample)
            if depth.shape != rgb.shape[:2]:
                depth = resize_depth(depth, rgb.shape[1], rgb.shape[0])
            view = model.view(rgb.shape[1], rgb.shape[0])
            self.images.append(resize_image(rgb, view.resized_width, view.resized_height))
            self.depths.append(resize_depth(depth, view.resized_width, view.resized_height)
                               .astype(np.float16))
            if (index + 1) % 2000 == 0:
                log(f"  loaded {index + 1}/{len(samples)} frames ({time.time() - started:.0f} s)")
        xs, ys = model.output_grid()
        self.grid_x, self.grid_y = np.round(xs).astype(int), np.round(ys).astype(int)

    def __len__(self) -> int:
        return len(self.images)

    def _affine(self, index: int, rng: np.random.Generator | None,
                cfg: DepthTrainConfig | None) -> tuple[np.ndarray, float, bool]:
        """2x3 matrix mapping stored-frame pixels to network-input pixels, the scale, the flip."""
        height_b, width_b = self.images[index].shape[:2]
        width, height = self.model.config.input_size
        if rng is None:  # the centre crop at scale 1, as at test time
            return np.array([[1.0, 0.0, -((width_b - width) // 2)],
                             [0.0, 1.0, -((height_b - height) // 2)]]), 1.0, False
        scale = rng.uniform(1.0, cfg.max_scale)
        angle = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
        # centre of the crop in the stored frame: anywhere the (1/scale) window fits
        span_x = max(width_b - width / scale, 0.0) / 2
        span_y = max(height_b - height / scale, 0.0) / 2
        centre = (width_b / 2 + rng.uniform(-span_x, span_x),
                  height_b / 2 + rng.uniform(-span_y, span_y))
        matrix = cv2.getRotationMatrix2D(centre, angle, scale)
        matrix[0, 2] += width / 2 - centre[0]
        matrix[1, 2] += height / 2 - centre[1]
        return matrix, scale, bool(cfg.flip and rng.random() < 0.5)

    def sample(self, index: int, rng: np.random.Generator | None,
               cfg: DepthTrainConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(network-input RGB uint8 HxWx3, target depth at the output grid float32); without
        `rng` the centre crop at scale 1 that inference sees, else augmented as `cfg` says."""
        width, height = self.model.config.input_size
        matrix, scale, flip = self._affine(index, rng, cfg)
        rgb = cv2.warpAffine(self.images[index], matrix, (width, height), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101)
        depth = cv2.warpAffine(self.depths[index].astype(np.float32), matrix, (width, height),
                               flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=float("nan"))
        if flip:
            rgb, depth = rgb[:, ::-1], depth[:, ::-1]
        if rng is not None and cfg.color_range > 0:
            factor = rng.uniform(1 - cfg.color_range, 1 + cfg.color_range, size=3)
            rgb = np.clip(rgb * factor, 0, 255).astype(np.uint8)
        if rng is not None and cfg.grey_probability > 0 and rng.random() < cfg.grey_probability:
            rgb = np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        target = depth[np.ix_(self.grid_y, self.grid_x)] / np.float32(scale)
        return np.ascontiguousarray(rgb), target

    def batch(self, indices, rng, cfg=None) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.sample(int(i), rng, cfg) for i in indices]
        images = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2)
        targets = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]
        return images.float().div_(255.0), targets


def collect_samples(dataset_dirs: list[str], fmt: str, stride: int = 1
                    ) -> tuple[list[DepthSample], list[str]]:
    """Samples of every folder (sequence parents expanded), refusing evaluation worlds."""
    samples, sources = [], []
    for directory in dataset_dirs:
        for folder in sequence_folders(directory) or [directory]:
            refuse_evaluation_worlds(folder)
        found = read_depth_dataset(directory, fmt)
        samples.extend(found[::stride])
        sources.extend(sorted({s.source for s in found}))
    return samples, sources


def split_by_source(samples: list[DepthSample], val_fraction: float) -> tuple[list[int], list[int]]:
    """Validation = the last frames of each source folder, so neighbouring frames of a
    continuous recording do not straddle the split."""
    by_source: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        by_source.setdefault(sample.source, []).append(index)
    train, val = [], []
    for indices in by_source.values():
        n_val = int(round(len(indices) * val_fraction))
        train.extend(indices[:len(indices) - n_val])
        val.extend(indices[len(indices) - n_val:])
    return train, val


def _optimizer(model: EigenDepth, stack: str, cfg: DepthTrainConfig) -> torch.optim.Optimizer:
    layers = model.layer_learning_rates(stack)
    if cfg.optimizer == "sgd":
        groups = [{"params": list(layer.parameters()), "lr": rate * cfg.lr_scale}
                  for layer, rate in layers]
        return torch.optim.SGD(groups, lr=cfg.lr_scale * 1e-3, momentum=cfg.momentum)
    if cfg.optimizer == "adam":
        return torch.optim.Adam([p for layer, _ in layers for p in layer.parameters()],
                                lr=cfg.adam_lr)
    raise ValueError(f"unknown optimizer '{cfg.optimizer}' (sgd or adam)")


def _schedule(optimizer: torch.optim.Optimizer, name: str, total_steps: int):
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, total_steps))
    raise ValueError(f"unknown lr schedule '{name}' (constant or cosine)")


def validation_errors(model: EigenDepth, data: DepthData, indices: list[int], output: str,
                      device: torch.device, batch_size: int = 64,
                      median_scaled: bool = False) -> dict:
    """Errors at the output grid on centre crops (no augmentation), averaged over images; raw
    or after per-image median scaling."""
    from ..evaluation.metrics import DepthErrorMeans

    model.eval()
    means = DepthErrorMeans()
    with torch.inference_mode():
        for start in range(0, len(indices), batch_size):
            images, targets = data.batch(indices[start:start + batch_size], None)
            log_depth = model(images.to(device), fine=output == "log_depth")[output].float().cpu()
            for prediction, target in zip(torch.exp(log_depth).numpy(), targets.numpy()):
                means.add(prediction[0], target[0])
    summary = means.summary()["median_scaled" if median_scaled else "raw"]
    return {k: summary[k] for k in ("abs_rel", "delta_1", "rmse", "si_rmse_log")} \
        if summary else {}


def _mean_log_depth(data: DepthData, indices: list[int]) -> float:
    logs = []
    for index in indices[:: max(1, len(indices) // 200)]:
        _, target = data.sample(index, None)
        valid = np.isfinite(target) & (target > 0)
        logs.append(np.log(target[valid]))
    values = np.concatenate(logs) if logs else np.zeros(1)
    return float(values.mean()) if values.size else 0.0


class SparseDepthData(DepthData):
    """Real images with sparse metric depth (`--sparse`, e.g. scripts/make_strecha_depth.py):
    too few to matter among thousands of simulator frames, so every step draws its own batch of
    them; the last `val_fraction` of each folder is held out."""

    def __init__(self, folders: list[str], model: EigenDepth, val_fraction: float, log=print):
        samples, _ = collect_samples(folders, "auto")
        super().__init__(samples, model, log=log)
        self.train, self.val = split_by_source(samples, val_fraction)
        log(f"sparse real depth: {len(samples)} images from {len(folders)} folder(s), "
            f"{len(self.train)} train / {len(self.val)} validation")


class RealSupervision:
    """The real-image part of a training step: reprojection losses on real video (learnt pose)
    and on multi-view images with known cameras, and the scale-invariant loss on real images
    with sparse metric depth, each weighted as the config says."""

    def __init__(self, model: EigenDepth, cfg: DepthTrainConfig, video_dirs, posed_dirs,
                 device: torch.device, log=print, sparse_dirs=()):
        from .depth_selfsup import PosedData, PoseNetwork, VideoData
        self.model, self.cfg, self.device = model, cfg, device
        self.sparse = SparseDepthData(list(sparse_dirs), model, cfg.val_fraction, log=log) \
            if sparse_dirs else None
        self.video = VideoData(video_dirs, model, cfg.video_offset, cfg.video_focal_ratio,
                               log=log) if video_dirs else None
        self.posed = PosedData(posed_dirs, model, tuple(
            s for s in cfg.posed_val_scenes.split(",") if s), log=log) if posed_dirs else None
        self.pose_network = PoseNetwork().to(device) if self.video else None

    def __bool__(self) -> bool:
        return bool(self.video or self.posed or self.sparse)

    def _depth(self, images: torch.Tensor, output: str) -> torch.Tensor:
        from .depth_selfsup import upsample_depth
        log_depth = self.model(images.to(self.device), fine=output == "log_depth")[output]
        return upsample_depth(log_depth, self.model, self.model.config.input_size)

    def _video_loss(self, targets, rng, output: str) -> dict:
        from .depth_selfsup import pyramid_reprojection_loss
        target, sources, K = self.video.batch(targets, rng, self.cfg.color_range)
        target, sources, K = target.to(self.device), [s.to(self.device) for s in sources], \
            K.to(self.device)
        poses = [self.pose_network(target, source) for source in sources]
        return pyramid_reprojection_loss(target, sources, self._depth(target, output), poses, K)

    def _posed_loss(self, targets, rng, output: str) -> dict:
        from .depth_selfsup import pyramid_reprojection_loss
        target, sources, poses, K = self.posed.batch(targets, rng, self.cfg.color_range)
        return pyramid_reprojection_loss(
            target.to(self.device), [s.to(self.device) for s in sources],
            self._depth(target, output), [p.to(self.device) for p in poses], K.to(self.device))

    def _sparse_loss(self, targets, rng, output: str) -> torch.Tensor:
        images, depths = self.sparse.batch(targets, rng, self.cfg)
        log_depth = self.model(images.to(self.device), fine=output == "log_depth")[output]
        return scale_invariant_loss(log_depth, depths.to(self.device), self.cfg.loss_lambda)

    def loss(self, rng: np.random.Generator, output: str) -> tuple[torch.Tensor, dict]:
        total, parts = 0.0, {}
        if self.sparse is not None and self.cfg.sparse_weight > 0 and self.sparse.train:
            targets = rng.choice(self.sparse.train, replace=False,
                                 size=min(self.cfg.real_batch, len(self.sparse.train)))
            sparse = self._sparse_loss(targets, rng, output)
            total = total + self.cfg.sparse_weight * sparse
            parts["sparse_scale_invariant"] = float(sparse.detach())
        for name, data, weight, compute in (
                ("video", self.video, self.cfg.video_weight, self._video_loss),
                ("posed", self.posed, self.cfg.posed_weight, self._posed_loss)):
            if data is None or weight <= 0 or not data.train:
                continue
            targets = rng.choice(data.train, size=min(self.cfg.real_batch, len(data.train)),
                                 replace=False)
            result = compute(targets, rng, output)
            total = total + weight * result["loss"]
            parts[f"{name}_photometric"] = float(result["photometric"].detach())
        return total, parts

    def validation(self, output: str, limit: int = 64) -> dict:
        """Mean photometric error on the held-out real frames and the median-scaled abs rel of
        the held-out sparse-depth images (lower is better)."""
        metrics = {}
        if self.sparse is not None and self.sparse.val:
            errors = validation_errors(self.model, self.sparse, self.sparse.val, output,
                                       self.device, median_scaled=True)
            if errors:  # none when no held-out image has a target inside the crop
                metrics["val_sparse_abs_rel"] = errors["abs_rel"]
        with torch.inference_mode():
            for name, data, compute in (("video", self.video, self._video_loss),
                                        ("posed", self.posed, self._posed_loss)):
                if data is None or not data.val:
                    continue
                indices = data.val[:: max(1, len(data.val) // limit)][:limit]
                values = [float(compute(indices[i:i + 16], None, output)["photometric"])
                          for i in range(0, len(indices), 16)]
                metrics[f"val_{name}_photometric"] = float(np.mean(values))
        return metrics


SELECTIONS = ("combined", "simulator", "relative")


def selection_score(metrics: dict, select_on: str = "combined") -> float:
    """What the checkpoint keeps the best of: the simulator validation frames' abs rel plus
    (`combined`) the held-out real frames' photometric error with known poses and the held-out
    sparse-depth images' median-scaled abs rel (all lower is better); (`simulator`) the abs rel
    alone; (`relative`) as combined with the simulator frames' scale-invariant log RMSE in place
    of their abs rel, for training data whose cameras are randomised (field of view, height), where
    the metric scale of a frame is ambiguous and its raw abs rel mostly measures that."""
    if select_on not in SELECTIONS:
        raise ValueError(f"unknown selection '{select_on}' ({', '.join(SELECTIONS)})")
    real = metrics.get("val_posed_photometric", 0.0) + metrics.get("val_sparse_abs_rel", 0.0) \
        if select_on != "simulator" else 0.0
    return metrics.get("si_rmse_log" if select_on == "relative" else "abs_rel", 0.0) + real


def train_depth(dataset_dirs: list[str], out_path: str, cfg: DepthTrainConfig, device: torch.device,
                fmt: str = "auto", init_weights: str | None = None,
                stages: tuple[str, ...] = ("coarse", "fine"), log=print,
                video_dirs: list[str] | None = None, posed_dirs: list[str] | None = None,
                resume: bool = False, sparse_dirs: list[str] | None = None) -> EigenDepth:
    from torch import nn

    from ..core.progress import progress
    from .run import TrainingRun

    samples, sources = collect_samples(dataset_dirs, fmt, cfg.frame_stride)
    seed_everything(cfg.seed)
    if init_weights:
        model = EigenDepth.from_checkpoint(init_weights)
    else:
        model = EigenDepth(EigenDepth.make_config(cfg.preset))
    model.to(device)
    train_idx, val_idx = split_by_source(samples, cfg.val_fraction)
    if not train_idx:
        raise TrainingDataError("no training frames left after the validation split")
    log(f"depth: {len(samples)} frames from {len(sources)} folder(s), {len(train_idx)} train / "
        f"{len(val_idx)} validation, input {model.config.input_size[0]}x"
        f"{model.config.input_size[1]}, output {model.output_width}x{model.output_height}, "
        f"device {device}")
    data = DepthData(samples, model, log=log)
    real = RealSupervision(model, cfg, video_dirs or [], posed_dirs or [], device, log=log,
                           sparse_dirs=sparse_dirs or [])
    if not init_weights:  # start the coarse output at the data's mean log depth
        mean_log = _mean_log_depth(data, train_idx)
        with torch.no_grad():
            model.coarse7.bias.fill_(mean_log)
    rng = np.random.default_rng(cfg.seed)
    run = TrainingRun(out_path, resume=resume)
    saved_epoch = 0
    if resume and os.path.isfile(run.state_path):
        saved_epoch = int(torch.load(run.state_path, map_location="cpu",
                                     weights_only=True)["epoch"])
    # what the resume state holds: the depth network and, with video, the pose network
    trained_modules = nn.ModuleDict({"depth": model, **(
        {"pose": real.pose_network} if real.pose_network is not None else {})})
    info_base = {"trained_on": sources, "frames": len(samples), "train_config": asdict(cfg),
                 "video": list(video_dirs or []), "posed": list(posed_dirs or []),
                 "sparse": list(sparse_dirs or [])}
    history: list[dict] = []  # the checkpoint's: {"stack": name, "epoch": stage epoch, ...}

    def history_of(rows) -> list[dict]:
        return [{"stack": STACKS[int(row["stack"])], "epoch": int(row["stage_epoch"]),
                 **{k: v for k, v in row.items() if k not in ("stack", "stage_epoch", "epoch")}}
                for row in rows]
    first_epoch = 0  # global epoch numbering over the stages, as the history and resume state
    for stack in stages:
        epochs = cfg.coarse_epochs if stack == "coarse" else cfg.fine_epochs
        stage_start, first_epoch = first_epoch, first_epoch + epochs
        output = "coarse_log_depth" if stack == "coarse" else "log_depth"
        trained = [p for layer, _ in model.layer_learning_rates(stack) for p in layer.parameters()]
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for parameter in trained:
            parameter.requires_grad_(True)
        if saved_epoch >= stage_start + epochs and epochs:
            continue  # finished before the resume; its weights come with the later restore
        restored = resume and saved_epoch >= stage_start and os.path.isfile(run.state_path)
        mid_stage = restored and saved_epoch > stage_start
        if restored and not mid_stage:  # the previous stage's end (its best epoch)
            run.restore(trained_modules, None, None, rng)
            history = history_of(run.rows)
        if stack == "fine" and "coarse" in stages and not mid_stage:
            model.init_fine_passthrough()  # a fine stack fitted to an older coarse one is stale
        optimizer = _optimizer(model, stack, cfg)
        if real.pose_network is not None:
            optimizer.add_param_group({"params": list(real.pose_network.parameters()),
                                       "lr": cfg.pose_lr})
        steps_per_epoch = max(1, len(train_idx) // cfg.batch_size)
        schedule = _schedule(optimizer, cfg.lr_schedule, epochs * steps_per_epoch)
        done = 0
        if mid_stage:
            done = run.restore(trained_modules, optimizer, schedule, rng) - stage_start
            history = history_of(run.rows)
            log(f"{stack}: resumed after epoch {done} of {epochs}")
        scores = [row["score"] for row in history if row["stack"] == stack and "score" in row]
        best = min(scores) if scores else math.inf

        def validate(epoch: int, loss: float | None) -> dict:
            metrics = validation_errors(model, data, val_idx or train_idx[:64], output, device)
            metrics.update(real.validation(output))
            return {"stack": STACKS.index(stack), "stage_epoch": epoch,
                    **({"loss": loss} if loss is not None else {}), **metrics,
                    "score": selection_score(metrics, cfg.select_on)}

        def keep_if_best(row: dict, epoch: int) -> float:
            nonlocal best
            if row["score"] <= best:  # keep the best validation epoch of each stack
                best = row["score"]
                model.save(out_path, info={**info_base, "stack": stack, "epoch": epoch,
                                           "validation": {k: v for k, v in row.items()
                                                          if k not in ("stack", "stage_epoch")},
                                           "history": history})
            return best

        if epochs and done == 0 and (init_weights or stack == "fine"):
            # the stack's starting point is epoch 0: training never leaves it worse
            row = validate(0, None)
            log(f"{stack} epoch 0/{epochs} " + _format_metrics(row))
            history.extend(history_of([row]))
            keep_if_best(row, 0)
        for epoch in range(done, epochs):
            model.train()
            if real.pose_network is not None:
                real.pose_network.train()
            if stack == "fine":  # the coarse stack is fixed: its dropout is off
                for layer in [*model.coarse_layers(), model.dropout]:
                    layer.eval()
            started, losses, real_parts = time.time(), [], {}
            order = rng.permutation(train_idx)
            for step in progress(range(steps_per_epoch), desc=f"{stack} {epoch + 1}/{epochs}",
                                 unit="step"):  # full batches only
                batch = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
                images, targets = data.batch(batch, rng, cfg)
                log_depth = model(images.to(device), fine=stack == "fine")[output]
                loss = scale_invariant_loss(log_depth, targets.to(device), cfg.loss_lambda)
                if real:
                    real_loss, parts = real.loss(rng, output)
                    loss = loss + real_loss
                    for key, value in parts.items():
                        real_parts.setdefault(key, []).append(value)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
            if not np.all(np.isfinite(losses)):
                raise FloatingPointError(f"{stack} training diverged (loss {losses[-1]}); "
                                         "lower --lr-scale or --adam-lr")
            row = validate(epoch + 1, float(np.mean(losses)))
            row.update({key: float(np.mean(values)) for key, values in real_parts.items()})
            history.extend(history_of([row]))
            log(f"{stack} epoch {epoch + 1}/{epochs} " + _format_metrics(row)
                + f" ({time.time() - started:.0f} s)")
            keep_if_best(row, epoch + 1)
            if epoch + 1 == epochs:  # the stage ends at its best epoch (what resume restarts at)
                model.load_state_dict(EigenDepth.from_checkpoint(out_path).state_dict())
            run.end_epoch(stage_start + epoch + 1, row, trained_modules, optimizer, schedule, rng)
    run.finish()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return EigenDepth.from_checkpoint(out_path)


STACKS = ("coarse", "fine")


def _format_metrics(row: dict) -> str:
    """Training values as they are, the simulator validation errors as val_<name>."""
    simulator_validation = ("abs_rel", "delta_1", "rmse", "si_rmse_log")
    return " ".join(f"{'val_' if k in simulator_validation else ''}{k} {v:.4f}"
                    for k, v in row.items() if k not in ("stack", "stage_epoch"))


def heldout_scores(weights: str, dataset_dirs: list[str], posed_dirs: list[str],
                   device: torch.device, cfg: DepthTrainConfig | None = None,
                   output: str = "log_depth", log=print) -> dict:
    """A checkpoint's errors on the held-out part of training-side data, for choosing between
    runs trained on different data: per dataset folder given, the abs rel (raw and median-
    scaled) of its folders' validation frames (the last `val_fraction`), and the photometric
    error on the posed images' validation scenes (true poses: real images, metric)."""
    from ..evaluation.metrics import DepthErrorMeans

    cfg = cfg or DepthTrainConfig()
    model = EigenDepth.from_checkpoint(weights).to(device).eval()
    scores = {}
    for directory in dataset_dirs:
        samples, _ = collect_samples([directory], "auto", cfg.frame_stride)
        _, val_idx = split_by_source(samples, cfg.val_fraction)
        data = DepthData([samples[i] for i in val_idx], model, log=log)
        means = DepthErrorMeans()
        with torch.inference_mode():
            for start in range(0, len(data), 64):
                images, targets = data.batch(range(start, min(len(data), start + 64)), None)
                depth = torch.exp(model(images.to(device))[output]).cpu().numpy()
                for prediction, target in zip(depth, targets.numpy()):
                    means.add(prediction[0], target[0])
        summary = means.summary()
        name = os.path.basename(os.path.normpath(directory))
        scores[f"{name}_abs_rel"] = summary["raw"]["abs_rel"]
        scores[f"{name}_median_scaled_abs_rel"] = summary["median_scaled"]["abs_rel"]
    if posed_dirs:
        real = RealSupervision(model, cfg, [], posed_dirs, device, log=log)
        scores.update(real.validation(output))
    return scores
