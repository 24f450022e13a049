"""`dl-perception eval place`: Recall@N, the place-recognition metric of Arandjelovic et al.
2016 (and of VPR-Bench): the fraction of queries with at least one correct database place among
the top N retrieved.

Correct places come either from positions (database places within `threshold` metres of the
query's position) or from a ground-truth file listing the correct database indices of each query
(VPR-Bench style: .npy object array or .json list of lists). Queries without any correct place
are left out of the recall, and counted.
"""
from __future__ import annotations

import importlib
import json
import os
import pickle

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


# what a ground-truth pickle may build: numpy arrays and their dtypes, nothing else (and byte
# strings, which Python 3 writes at protocol 2 as _codecs.encode(text, "latin1"))
_PICKLE_GLOBALS = {("numpy.core.multiarray", "_reconstruct"),
                   ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                   ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays (also Python 2 pickles, whose byte strings are read as latin-1)
    and refuses every other global: loading never executes code from the file."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing '{module}.{name}': a ground-truth file "
                                         "holds only numbers, lists and numpy arrays")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core"):]  # numpy 2 renamed the module
        return getattr(importlib.import_module(module), name)


def _load_array_file(path: str):
    """A .npy file (numeric, or an object array whose pickle is read by _ArrayUnpickler) or a
    plain pickle (.pkl, .pickle) of arrays and lists."""
    with open(path, "rb") as handle:
        if not path.endswith(".npy"):
            return _ArrayUnpickler(handle, encoding="latin1").load()
        version = np.lib.format.read_magic(handle)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        _, _, dtype = read_header(handle)
        if dtype.hasobject:  # np.save pickles object arrays whole after the header
            return _ArrayUnpickler(handle, encoding="latin1").load()
    return np.load(path, allow_pickle=False)


def _is_index_list(item) -> bool:
    return isinstance(item, (list, tuple)) or (isinstance(item, np.ndarray) and item.ndim == 1)


def read_ground_truth(path: str) -> list[np.ndarray]:
    """Correct database indices per query from a ground-truth file:

    - VPR-Bench's ground_truth_new.npy: rows [query index, [reference indices]] (an object
      array, np.save's pickle, also from Python 2), or the same rows in .json or a pickle;
    - one list of reference indices per query, in query order (.npy object or 2-D integer
      array, .json list of lists, pickle).
    """
    if not os.path.isfile(path):
        raise ValueError(f"ground-truth file not found: {path}")
    try:
        if path.endswith(".json"):
            with open(path) as handle:
                data = json.load(handle)
        elif path.endswith((".npy", ".pkl", ".pickle")):
            data = _load_array_file(path)
        else:
            raise ValueError("ground truth must be .npy, .json, .pkl or .pickle")
    except (pickle.UnpicklingError, EOFError, OSError, json.JSONDecodeError,
            UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable ground-truth file: {error}") from None
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    rows = list(data) if isinstance(data, (list, tuple, np.ndarray)) else None
    if not rows:
        raise ValueError(f"{path}: expected a non-empty list with one row per query")
    try:
        if all(_is_index_list(row) and len(row) == 2 and np.ndim(row[0]) == 0
               and _is_index_list(row[1]) for row in rows):  # VPR-Bench: [query, [refs]]
            queries = [int(row[0]) for row in rows]
            if min(queries) < 0 or len(set(queries)) != len(queries):
                raise ValueError("query indices must be distinct and non-negative")
            correct = [np.zeros(0, np.int64)] * max(len(rows), max(queries) + 1)
            for query, row in zip(queries, rows):
                correct[query] = np.asarray(row[1], dtype=np.int64).reshape(-1)
            return correct
        return [np.atleast_1d(np.asarray(row, dtype=np.int64)).reshape(-1) for row in rows]
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: expected one list of database indices per query, or "
                         f"VPR-Bench rows [query, [references]]: {error}") from None


def correct_by_place_id(query_ids: np.ndarray, db_ids: np.ndarray) -> list[np.ndarray]:
    """Per query, the database indices with the query's place id."""
    by_id: dict[int, list[int]] = {}
    for index, place in enumerate(db_ids):
        by_id.setdefault(int(place), []).append(index)
    return [np.asarray(by_id.get(int(place), []), dtype=np.int64) for place in query_ids]


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
    from ..datasets.place_sets import is_named_set
    from ..place.build import build_database
    from ..place.database import PlaceDatabase, model_fingerprint
    from ..place.sources import FolderSource

    if os.path.isdir(source) or is_named_set(source):
        folder = FolderSource(source)
        return build_database(model, folder, device, log=log), folder.places.group
    return PlaceDatabase.load(source, expected_model=model_fingerprint(model)), None


PIXEL_THUMBNAIL = (32, 24)  # (width, height) of the pixel baseline


def pixel_descriptors(images, size: tuple[int, int] = PIXEL_THUMBNAIL) -> np.ndarray:
    """The trivial baseline: each RGB image as a grey thumbnail (area-averaged to `size`),
    minus its mean, L2-normalised (so the inner product is the normalised cross-correlation)."""
    import cv2

    out = []
    for rgb in images:
        grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        thumb = cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
        thumb -= thumb.mean()
        out.append(thumb / max(float(np.linalg.norm(thumb)), 1e-6))
    return np.stack(out) if out else np.zeros((0, size[0] * size[1]), np.float32)


def rank_by_similarity(query: np.ndarray, database: np.ndarray, k: int):
    """Exact inner-product search: (scores, indices), Q x min(k, N), best first."""
    similarity = query @ database.T
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(similarity, order, axis=1), order


def precision_recall(top_scores: np.ndarray, top_correct: np.ndarray) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """The place-recognition precision-recall curve: a query's best match is accepted when its
    score reaches a threshold; precision = correct accepted / accepted, recall = correct
    accepted / queries, over every threshold (queries with ground truth only)."""
    order = np.argsort(-top_scores, kind="stable")
    hits = np.cumsum(top_correct[order])
    accepted = np.arange(1, len(order) + 1)
    return hits / accepted, hits / max(len(order), 1)


def plot_precision_recall(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str,
                          path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.5, 4.5))
    for label, (precision, recall) in curves.items():
        axes.plot(recall, precision, label=label)
    axes.set_xlabel("recall (queries whose accepted best match is correct)")
    axes.set_ylabel("precision")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def evaluate_place(weights: str, database_source: str, query_folder: str, device,
                   threshold: float | None = None, ground_truth: str | None = None,
                   baseline: str | None = None, plot: str | None = None) -> dict:
    """Recall@N of NetVLAD (and, with `baseline="pixels"`, of the pixel baseline on the same
    images and ground truth). Ground truth: the file, else the place ids both sets carry (when
    no threshold is given), else positions within `threshold` metres (5 by default)."""
    from .. import models
    from ..datasets.places import read_place_folder
    from ..place.build import describe_rgb

    model = models.load(weights, expected="netvlad").to(device)
    database, db_group = load_or_build_database(model, database_source, device)
    if len(database) == 0:  # nothing to recall: a clear error rather than a metric of nothing
        raise ValueError(f"{database_source}: the place database is empty (0 places)")
    queries = read_place_folder(query_folder)
    if db_group is not None and db_group != queries.group:
        raise ValueError(f"database ({db_group}) and queries ({queries.group}) lie in different "
                         "place groups: their positions do not compare")
    db_places = read_place_folder(database_source) if db_group is not None else None
    query_images = [queries.load_rgb(i) for i in range(len(queries))]
    descriptors = describe_rgb(model, query_images, device)
    scores, ranked = database.search(descriptors, max(RECALL_AT))
    if ground_truth:
        correct, source = read_ground_truth(ground_truth), ground_truth
    elif threshold is None and db_places is not None and db_places.place_ids is not None \
            and queries.place_ids is not None:
        correct, source = correct_by_place_id(queries.place_ids, db_places.place_ids), "place ids"
    else:
        threshold = 5.0 if threshold is None else threshold
        correct = correct_by_position(queries.positions, database.positions, threshold)
        source = f"positions within {threshold:g}"
    metrics = recall_at_n(ranked, correct)
    metrics["database_places"] = len(database)
    metrics["ground_truth"] = source
    curves = {"NetVLAD": _curve(scores, ranked, correct)}
    if baseline == "pixels":
        if db_places is None:
            raise ValueError("--baseline pixels needs the database images: give --database as "
                             "a folder or a named set, not a database file")
        db_pixels = pixel_descriptors(db_places.load_rgb(i) for i in range(len(db_places)))
        pixel_scores, pixel_ranked = rank_by_similarity(pixel_descriptors(query_images),
                                                        db_pixels, max(RECALL_AT))
        pixel_metrics = recall_at_n(pixel_ranked, correct)
        metrics["baseline_pixels"] = {k: v for k, v in pixel_metrics.items()
                                      if k.startswith("recall")}
        metrics["baseline"] = (f"grey {PIXEL_THUMBNAIL[0]}x{PIXEL_THUMBNAIL[1]} thumbnail, "
                               "zero mean, L2 (cosine)")
        curves[f"pixels {PIXEL_THUMBNAIL[0]}x{PIXEL_THUMBNAIL[1]}"] = _curve(
            pixel_scores, pixel_ranked, correct)
    elif baseline is not None:
        raise ValueError(f"unknown baseline '{baseline}' (pixels)")
    if plot:
        plot_precision_recall(curves, f"{query_folder} vs {database_source}", plot)
        metrics["plot"] = plot
    return metrics


def _curve(scores: np.ndarray, ranked: np.ndarray, correct: list[np.ndarray]):
    evaluable = [q for q, c in enumerate(correct) if len(c)]
    top_correct = np.array([ranked[q, 0] in correct[q] for q in evaluable], dtype=float)
    return precision_recall(scores[evaluable, 0], top_correct)
