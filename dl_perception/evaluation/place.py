"""`dl-perception eval place`: Recall@N, the place-recognition metric of Arandjelovic et al.
2016 (and of VPR-Bench): the fraction of queries with at least one correct database place among
the top N retrieved.

Correct places come either from positions (database places within `threshold` metres of the
query's position) or from a ground-truth file listing the correct database indices of each query
(VPR-Bench style: .npy object array or .json list of lists). Queries without any correct place
are left out of the recall, and counted.
"""
from __future__ import annotations

import json
import os

import numpy as np

RECALL_AT = (1, 5, 10, 20)


def correct_by_position(query_positions: np.ndarray, db_positions: np.ndarray,
                        threshold: float) -> list[np.ndarray]:
    """Per query, the database indices within `threshold` metres (Euclidean, NaN = unknown)."""
    import faiss

    known = np.isfinite(db_positions).all(axis=1)
    if not known.any():
        return [np.zeros(0, np.int64) for _ in query_positions]
    index = faiss.IndexFlatL2(3)
    known_indices = np.flatnonzero(known)
    index.add(np.ascontiguousarray(db_positions[known], dtype=np.float32))
    out = []
    valid = np.isfinite(query_positions).all(axis=1)
    queries = np.ascontiguousarray(np.nan_to_num(query_positions), dtype=np.float32)
    lims, _, found = index.range_search(queries, (float(threshold) + 1e-4) ** 2)  # inclusive
    for q in range(len(queries)):
        hits = known_indices[found[lims[q]:lims[q + 1]]] if valid[q] else np.zeros(0, np.int64)
        out.append(np.sort(hits))
    return out


def read_ground_truth(path: str) -> list[np.ndarray]:
    """Correct database indices per query from .npy (object array or 2-D) or .json."""
    if not os.path.isfile(path):
        raise ValueError(f"ground-truth file not found: {path}")
    if path.endswith(".npy"):
        data = np.load(path, allow_pickle=True)  # VPR-Bench stores ragged object arrays
    elif path.endswith(".json"):
        with open(path) as handle:
            data = json.load(handle)
    else:
        raise ValueError(f"{path}: ground truth must be .npy or .json")
    try:
        return [np.atleast_1d(np.asarray(item, dtype=np.int64)) for item in data]
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: expected one list of database indices per query: {error}") \
            from None


def recall_at_n(ranked: np.ndarray, correct: list[np.ndarray],
                ns: tuple[int, ...] = RECALL_AT) -> dict:
    """ranked: Q x K database indices, best first (-1 = none). Returns recall_at_N for each N
    (over queries that have a correct place) and the query counts."""
    if len(ranked) != len(correct):
        raise ValueError(f"{len(ranked)} queries but ground truth for {len(correct)}")
    evaluable = [q for q, c in enumerate(correct) if len(c)]
    metrics: dict = {"queries": len(ranked), "queries_with_ground_truth": len(evaluable)}
    if not evaluable:
        raise ValueError("no query has a correct database place: check the threshold, the "
                         "ground truth, or that queries and database share one frame")
    first_hit = np.full(len(evaluable), np.inf)
    for row, q in enumerate(evaluable):
        hits = np.flatnonzero(np.isin(ranked[q], correct[q]))
        if len(hits):
            first_hit[row] = hits[0]
    for n in ns:
        metrics[f"recall_at_{n}"] = float(np.mean(first_hit < n))
    return metrics


def load_or_build_database(model, source: str, device, log=None):
    """A database file (refused when another model made it) or a folder to build one from."""
    from ..place.build import build_database
    from ..place.database import PlaceDatabase, model_fingerprint
    from ..place.sources import FolderSource

    if os.path.isdir(source):
        folder = FolderSource(source)
        return build_database(model, folder, device, log=log), folder.places.group
    return PlaceDatabase.load(source, expected_model=model_fingerprint(model)), None


def evaluate_place(weights: str, database_source: str, query_folder: str, device,
                   threshold: float = 5.0, ground_truth: str | None = None) -> dict:
    from .. import models
    from ..datasets.places import read_place_folder
    from ..place.build import describe_rgb

    model = models.load(weights, expected="netvlad").to(device)
    database, db_group = load_or_build_database(model, database_source, device)
    queries = read_place_folder(query_folder)
    if db_group is not None and db_group != queries.group:
        raise ValueError(f"database ({db_group}) and queries ({queries.group}) lie in different "
                         "place groups: their positions do not compare")
    descriptors = describe_rgb(model, (queries.load_rgb(i) for i in range(len(queries))), device)
    _, ranked = database.search(descriptors, max(RECALL_AT))
    if ground_truth:
        correct = read_ground_truth(ground_truth)
    else:
        correct = correct_by_position(queries.positions, database.positions, threshold)
    metrics = recall_at_n(ranked, correct)
    metrics["database_places"] = len(database)
    metrics["ground_truth"] = ground_truth or f"positions within {threshold:g} m"
    return metrics
