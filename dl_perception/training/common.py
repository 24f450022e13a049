"""Helpers every training command uses."""
from __future__ import annotations

import json
import os
import random

import numpy as np
import torch

# Simulator worlds kept for evaluation: no training command may learn from them.
EVALUATION_WORLD_SEEDS = range(1000, 1100)


class TrainingDataError(ValueError):
    pass


def dataset_world_seeds(dataset_dirs: list[str]) -> list[int]:
    """Simulator world seeds the datasets were recorded in (from their meta.json), sorted."""
    seeds = set()
    for directory in dataset_dirs:
        meta_path = os.path.join(directory, "meta.json")
        if os.path.isfile(meta_path):
            with open(meta_path) as handle:
                meta = json.load(handle)
            seeds.update(int(s) for s in meta.get(
                "world_seeds", [meta["world_seed"]] if "world_seed" in meta else []))
    return sorted(seeds)


def refuse_evaluation_worlds(dataset_dir: str) -> None:
    """Raise when a dataset was recorded in an evaluation world (its meta.json says which)."""
    seeds = dataset_world_seeds([dataset_dir])
    reserved = sorted(int(s) for s in seeds if int(s) in EVALUATION_WORLD_SEEDS)
    if reserved:
        raise TrainingDataError(
            f"{dataset_dir} was recorded in evaluation world(s) {reserved}; seeds "
            f"{EVALUATION_WORLD_SEEDS.start}-{EVALUATION_WORLD_SEEDS.stop - 1} are reserved "
            "for evaluation and never used for training")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def split_indices(count: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(count)
    n_val = int(round(count * val_fraction))
    return order[n_val:], order[:n_val]
