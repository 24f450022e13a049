"""`dl-perception eval dronet`: steering EVA and RMSE, collision accuracy, F1 and ROC-AUC, the
metrics of Loquercio et al. 2018, for several checkpoints on several datasets in one run: one row
per (dataset, checkpoint), beside a trivial baseline on the same frames, with optional per-frame
outputs (CSV) and ROC curves (PNG)."""
from __future__ import annotations

import csv
import os

import numpy as np
import torch

from .metrics import binary_scores, explained_variance, rmse, roc_curve

# The trivial baseline every table shows: fly straight (steering 0), never predict a collision
# (probability 0: accuracy = share of free frames, ROC-AUC 0.5).
CONSTANT_BASELINE = "constant (steering 0, collision 0)"
TABLE_COLUMNS = ("steering_samples", "steering_eva", "steering_rmse", "collision_samples",
                 "collision_accuracy", "collision_f1", "collision_roc_auc")


def dronet_metrics(steering: np.ndarray, collision: np.ndarray, true_steering: np.ndarray,
                   true_collision: np.ndarray) -> dict:
    """Metrics over the samples that carry each label (NaN = unlabelled)."""
    out: dict = {}
    has_s, has_c = np.isfinite(true_steering), np.isfinite(true_collision)
    out["steering_samples"] = int(has_s.sum())
    if has_s.any():
        out["steering_eva"] = explained_variance(steering[has_s], true_steering[has_s])
        out["steering_rmse"] = rmse(steering[has_s], true_steering[has_s])
    out["collision_samples"] = int(has_c.sum())
    if has_c.any():
        p = np.clip(collision[has_c], 1e-7, 1 - 1e-7)
        y = true_collision[has_c]
        out["collision_bce"] = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        scores = binary_scores(collision[has_c], y)
        out.update({f"collision_{k}": v for k, v in scores.items()})
    return out


def dataset_name(spec: str) -> str:
    """A short row label: the folder names (and a fraction range) without their parents."""
    return ",".join(os.path.basename(os.path.normpath(part.split("@")[0])) +
                    (f"@{part.split('@')[1]}" if "@" in part else "") for part in spec.split(","))


def model_name(weights: str) -> str:
    return os.path.splitext(os.path.basename(weights))[0]


class _Frames:
    """One dataset's samples and grey frames, read once and cropped for each model."""

    def __init__(self, spec: str):
        import cv2

        from ..datasets.dronet import read_dronet_dataset
        # a comma joins several folders into one dataset row
        self.samples = [s for part in spec.split(",") for s in read_dronet_dataset(part)]
        self.grays = []
        for sample in self.samples:
            gray = cv2.imread(sample.image, cv2.IMREAD_GRAYSCALE)
            if gray is None:
                raise ValueError(f"cannot read image {sample.image}")
            self.grays.append(gray)
        self.steering = np.array([s.steering for s in self.samples], dtype=np.float32)
        self.collision = np.array([s.collision for s in self.samples], dtype=np.float32)


def predict_frames(model, frames: _Frames, device: torch.device,
                   batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    steering, collision = [], []
    with torch.inference_mode():
        for start in range(0, len(frames.grays), batch_size):
            crops = np.stack([model.crop_pixels(g) for g in frames.grays[start:start + batch_size]])
            out = model(torch.from_numpy(crops.astype(np.float32) / 255.0)[:, None].to(device))
            steering.append(out["steering"].cpu().numpy())
            collision.append(out["collision_probability"].cpu().numpy())
    return np.concatenate(steering), np.concatenate(collision)


def evaluate_table(weights: list[str], data_specs: list[str], device: torch.device,
                   per_frame_path: str | None = None, roc_path: str | None = None,
                   log=print) -> list[dict]:
    """Rows {dataset, model, metrics...}: the constant baseline, then each checkpoint, for each
    dataset. `per_frame_path`: CSV of every frame's labels and outputs; `roc_path`: PNG of the ROC
    curves on every dataset with collision labels."""
    from ..models.dronet import DroNet
    from ..core.progress import progress

    models = [(model_name(w), DroNet.from_checkpoint(w).to(device)) for w in weights]
    rows, per_frame, curves = [], [], {}
    for spec in progress(data_specs, desc="datasets", unit="dataset"):
        frames = _Frames(spec)
        name = dataset_name(spec)
        log(f"{name}: {len(frames.samples)} frames")
        outputs = [(CONSTANT_BASELINE, np.zeros(len(frames.samples), np.float32),
                    np.zeros(len(frames.samples), np.float32))]
        outputs += [(label, *predict_frames(model, frames, device)) for label, model in models]
        for label, steering, collision in outputs:
            rows.append({"dataset": name, "model": label,
                         **dronet_metrics(steering, collision, frames.steering, frames.collision)})
            has_c = np.isfinite(frames.collision)
            if has_c.any() and label != CONSTANT_BASELINE:
                curves.setdefault(name, []).append(
                    (label, *roc_curve(collision[has_c], frames.collision[has_c]),
                     rows[-1].get("collision_roc_auc", float("nan"))))
            if per_frame_path and label != CONSTANT_BASELINE:
                per_frame += [(label, name, s.image, s.steering, s.collision, float(st), float(co))
                              for s, st, co in zip(frames.samples, steering, collision)]
    if per_frame_path:
        write_per_frame(per_frame_path, per_frame)
    if roc_path and curves:
        plot_roc(roc_path, curves)
    return rows


def write_per_frame(path: str, records: list[tuple]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "dataset", "image", "steering_label", "collision_label",
                         "steering", "collision_probability"])
        for model, dataset, image, true_s, true_c, steering, collision in records:
            writer.writerow([model, dataset, image, _cell(true_s), _cell(true_c),
                             f"{steering:.6g}", f"{collision:.6g}"])


def _cell(value: float) -> str:
    return "" if not np.isfinite(value) else f"{value:.6g}"


def plot_roc(path: str, curves: dict[str, list]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4.6), squeeze=False)
    for axis, (dataset, entries) in zip(axes[0], curves.items()):
        for label, fpr, tpr, auc in entries:
            axis.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance (AUC 0.5)")
        axis.set_title(f"DroNet collision ROC, {dataset}", fontsize=9)
        axis.set_xlabel("false positive rate")
        axis.set_ylabel("true positive rate")
        axis.legend(fontsize=6, loc="lower right")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def format_table(rows: list[dict]) -> str:
    header = ["dataset", "model", "steer n", "EVA", "RMSE", "coll n", "accuracy", "F1", "ROC-AUC"]
    lines = [header]
    for row in rows:
        lines.append([row["dataset"], row["model"]] + [
            "-" if key not in row else str(row[key]) if isinstance(row[key], int)
            else f"{row[key]:.3f}" for key in TABLE_COLUMNS])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(line, widths))) for line in lines)
