"""What every training command keeps beside its output checkpoint, so a long CPU run can be
followed, plotted and resumed:

- `<out>.history.csv`: one row per epoch (or stage step) with every logged metric,
- `<out>.loss.png`: those curves, redrawn at most every PLOT_INTERVAL_S and by `finish()`,
- `<out>.resume.pt`: model, optimiser, scheduler and random-generator state after the last
  finished epoch; `TrainingRun(out, resume=True).restore(...)` continues from it.

The resume file holds tensors and plain numbers only and is read with `weights_only=True`, so
it cannot execute code either."""
from __future__ import annotations

import csv
import math
import os
import random
import time

import numpy as np
import torch

# Drawing the figure costs ~0.5 s (measured: 25 s of a 66 s PoseNet test when drawn every epoch).
PLOT_INTERVAL_S = 30.0


class TrainingRun:
    def __init__(self, out_path: str, resume: bool = False):
        self.history_path = out_path + ".history.csv"
        self.plot_path = out_path + ".loss.png"
        self.state_path = out_path + ".resume.pt"
        self.resume = resume
        self.rows: list[dict] = []
        self._plotted_at = -float("inf")
        if resume and os.path.isfile(self.history_path):
            with open(self.history_path, newline="") as handle:
                self.rows = [{k: float(v) if v else math.nan for k, v in row.items()}
                             for row in csv.DictReader(handle)]
        elif not resume:
            for path in (self.history_path, self.plot_path, self.state_path):
                if os.path.exists(path):
                    os.remove(path)

    def restore(self, model: torch.nn.Module, optimizer=None, scheduler=None,
                rng: np.random.Generator | None = None) -> int:
        """Load the saved state into the given objects; returns the number of finished epochs
        (0 when not resuming or nothing was saved yet)."""
        if not self.resume or not os.path.isfile(self.state_path):
            return 0
        state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        if rng is not None:
            rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        random.setstate(_tuple_state(state["python_rng"]))
        self.rows = [row for row in self.rows if row.get("epoch", 0) <= state["epoch"]]
        return int(state["epoch"])

    def end_epoch(self, epoch: int, metrics: dict, model: torch.nn.Module, optimizer=None,
                  scheduler=None, rng: np.random.Generator | None = None) -> None:
        """Record epoch `epoch` (1-based, finished) and save the state to resume after it."""
        self.rows.append({"epoch": epoch, **{k: float(v) for k, v in metrics.items()}})
        self._write_history()
        if time.monotonic() - self._plotted_at >= PLOT_INTERVAL_S:
            self._plot()
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "numpy_rng": rng.bit_generator.state if rng is not None else None,
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
        }
        tmp = self.state_path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.state_path)  # a kill mid-write keeps the previous epoch's state

    def finish(self) -> None:
        """Draw the final curves (end_epoch redraws them only every PLOT_INTERVAL_S)."""
        self._plot()

    def _write_history(self) -> None:
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        tmp = self.history_path + ".tmp"
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.history_path)

    def _plot(self) -> None:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        columns = [k for k in dict.fromkeys(k for row in self.rows for k in row) if k != "epoch"]
        if not columns:
            return
        figure, axes = plt.subplots(len(columns), 1, figsize=(6, 1.8 * len(columns)), sharex=True,
                                    squeeze=False)
        for axis, column in zip(axes[:, 0], columns):
            points = [(row["epoch"], row[column]) for row in self.rows
                      if column in row and math.isfinite(row[column])]
            if points:
                axis.plot(*zip(*points), marker=".")
            axis.set_ylabel(column, fontsize=8)
            axis.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("epoch")
        figure.tight_layout()
        figure.savefig(self.plot_path + ".tmp.png", dpi=80)
        plt.close(figure)
        os.replace(self.plot_path + ".tmp.png", self.plot_path)
        self._plotted_at = time.monotonic()


def _tuple_state(state):
    """random.setstate wants tuples where torch.load may give lists."""
    return tuple(_tuple_state(s) for s in state) if isinstance(state, (list, tuple)) else state
