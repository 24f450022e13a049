"""A place database: global descriptors of known places with their poses, saved to disk, searched
with faiss (exact inner product for small databases, HNSW for large ones).

File format (safetensors, so loading never executes code from the file): tensors `descriptors`
(N x D float32, L2-normalised), `positions` (N x 3), `quaternions` (N x 4, x y z w), `stamps`
(N), NaN where unknown, optionally `faiss_index` (the serialised HNSW graph); metadata `format`,
`model` (name, config and weights fingerprints of the network that made the descriptors),
`frame_id`, `names` (per-place source), `index`. A database made by another network, another
configuration or other weights is refused: its descriptors do not compare with this model's.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

FORMAT = "dl_perception.place_db/1"
INDEX_KINDS = ("auto", "flat", "hnsw")
# above this many places `auto` switches from exact search to HNSW
EXACT_SEARCH_LIMIT = 50_000
HNSW_NEIGHBOURS = 32
HNSW_EF_SEARCH = 128
HNSW_EF_CONSTRUCTION = 200
# searches of fewer queries run on one thread (faiss parallelises over queries)
FEW_QUERIES = 20


class PlaceDatabaseError(ValueError):
    """A database file that is missing, unreadable, or made by another model."""


def model_fingerprint(model) -> dict:
    """What makes descriptors comparable: network name, configuration and weights."""
    config = json.dumps(model.to_checkpoint().config, sort_keys=True)
    weights = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return {"name": model.name, "config_hash": hashlib.sha256(config.encode()).hexdigest()[:16],
            "weights_hash": weights.hexdigest()[:16]}


def _float_rows(values, count: int, width: int) -> np.ndarray:
    if values is None:
        return np.full((count, width), np.nan)
    array = np.asarray(values, dtype=np.float64).reshape(count, width)
    return array


@dataclass
class PlaceDatabase:
    dim: int
    model: dict  # model_fingerprint of the network that made the descriptors
    frame_id: str = "map"
    index_kind: str = "auto"
    descriptors: np.ndarray = None  # N x dim float32
    positions: np.ndarray = None  # N x 3
    quaternions: np.ndarray = None  # N x 4
    stamps: np.ndarray = None  # N
    names: list = field(default_factory=list)

    def __post_init__(self):
        if self.index_kind not in INDEX_KINDS:
            raise PlaceDatabaseError(f"index must be one of {INDEX_KINDS}, got '{self.index_kind}'")
        if self.descriptors is None:
            self.descriptors = np.zeros((0, self.dim), np.float32)
            self.positions = np.zeros((0, 3))
            self.quaternions = np.zeros((0, 4))
            self.stamps = np.zeros(0)
        self._index = None

    def __len__(self) -> int:
        return len(self.descriptors)

    @property
    def has_poses(self) -> bool:
        return bool(np.isfinite(self.positions).all(axis=1).any())

    # --- building -----------------------------------------------------------------------------
    def add(self, descriptors, positions=None, quaternions=None, stamps=None,
            names=None) -> np.ndarray:
        """Append places; returns their indices."""
        descriptors = np.ascontiguousarray(np.asarray(descriptors, dtype=np.float32))
        if descriptors.ndim != 2 or descriptors.shape[1] != self.dim:
            raise PlaceDatabaseError(
                f"descriptors of shape {descriptors.shape} do not fit a {self.dim}-D database")
        count = len(descriptors)
        first = len(self)
        self.descriptors = np.concatenate([self.descriptors, descriptors])
        self.positions = np.concatenate([self.positions, _float_rows(positions, count, 3)])
        self.quaternions = np.concatenate([self.quaternions, _float_rows(quaternions, count, 4)])
        self.stamps = np.concatenate([self.stamps, _float_rows(stamps, count, 1)[:, 0]])
        self.names += list(names) if names is not None else [""] * count
        if self._index is not None and self._kind_for(len(self)) == self._built_kind:
            self._index.add(descriptors)
        else:
            self._index = None  # built (or rebuilt as another kind) at the next search
        return np.arange(first, first + count)

    def _kind_for(self, count: int) -> str:
        if self.index_kind != "auto":
            return self.index_kind
        return "flat" if count <= EXACT_SEARCH_LIMIT else "hnsw"

    def _build_index(self):
        import faiss

        kind = self._kind_for(len(self))
        if kind == "flat":
            index = faiss.IndexFlatIP(self.dim)
        else:
            index = faiss.IndexHNSWFlat(self.dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index.hnsw.efSearch = HNSW_EF_SEARCH
        if len(self):
            index.add(self.descriptors)
        self._index, self._built_kind = index, kind
        return index

    @property
    def index(self):
        return self._index if self._index is not None else self._build_index()

    # --- searching ----------------------------------------------------------------------------
    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k places per query: (scores Q x k = cosine similarity, indices Q x k), best first.
        Fewer than k places: the missing columns hold score NaN and index -1."""
        queries = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
        if queries.ndim == 1:
            queries = queries[None]
        if queries.shape[1] != self.dim:
            raise PlaceDatabaseError(f"query descriptors are {queries.shape[1]}-D, the database "
                                     f"holds {self.dim}-D ones")
        if len(self) == 0 or k <= 0:
            return (np.full((len(queries), max(k, 0)), np.nan, np.float32),
                    np.full((len(queries), max(k, 0)), -1, np.int64))
        import faiss

        index = self.index
        threads = faiss.omp_get_max_threads()
        if len(queries) < FEW_QUERIES:  # one query: an OpenMP team only adds wake-up latency
            faiss.omp_set_num_threads(1)
        try:
            scores, indices = index.search(queries, k)
        finally:
            faiss.omp_set_num_threads(threads)
        scores[indices < 0] = np.nan
        return scores, indices

    # --- files ----------------------------------------------------------------------------------
    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tensors = {
            "descriptors": torch.from_numpy(self.descriptors),
            "positions": torch.from_numpy(self.positions.astype(np.float64)),
            "quaternions": torch.from_numpy(self.quaternions.astype(np.float64)),
            "stamps": torch.from_numpy(self.stamps.astype(np.float64)),
        }
        if self._kind_for(len(self)) == "hnsw" and len(self):
            import faiss
            tensors["faiss_index"] = torch.from_numpy(faiss.serialize_index(self.index))
        metadata = {"format": FORMAT, "model": json.dumps(self.model, sort_keys=True),
                    "frame_id": self.frame_id, "index": self.index_kind,
                    "names": json.dumps(self.names)}
        tmp = path + ".tmp"
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str, expected_model: dict | None = None) -> "PlaceDatabase":
        """Read a database file; with `expected_model` (a model_fingerprint), refuse one whose
        descriptors another network, configuration or set of weights made."""
        if not os.path.isfile(path):
            raise PlaceDatabaseError(f"place database not found: {path}")
        try:
            with safe_open(path, framework="pt") as handle:
                metadata = handle.metadata() or {}
                if metadata.get("format") != FORMAT:
                    raise PlaceDatabaseError(
                        f"{path} is not a place database (format '{metadata.get('format')}'); "
                        "build one with `dl-perception place build-db`")
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            model = json.loads(metadata["model"])
            names = json.loads(metadata.get("names", "[]"))
            database = cls(dim=int(tensors["descriptors"].shape[1]), model=model,
                           frame_id=metadata.get("frame_id", "map"),
                           index_kind=metadata.get("index", "auto"),
                           descriptors=tensors["descriptors"].numpy().astype(np.float32),
                           positions=tensors["positions"].numpy(),
                           quaternions=tensors["quaternions"].numpy(),
                           stamps=tensors["stamps"].numpy(), names=names)
        except PlaceDatabaseError:
            raise
        except (SafetensorError, OSError, ValueError, KeyError, IndexError, TypeError) as error:
            raise PlaceDatabaseError(
                f"{path} is not a readable place database (corrupt or truncated): {error}") from None
        count = len(database.descriptors)
        if (database.positions.shape != (count, 3) or database.quaternions.shape != (count, 4)
                or database.stamps.shape != (count,) or len(names) != count):
            raise PlaceDatabaseError(f"{path} is corrupt: its arrays disagree on the place count")
        if "faiss_index" in tensors:
            import faiss
            try:
                index = faiss.deserialize_index(tensors["faiss_index"].numpy())
            except RuntimeError as error:
                raise PlaceDatabaseError(f"{path} is corrupt: its faiss index: {error}") from None
            if index.ntotal != count or index.d != database.dim:
                raise PlaceDatabaseError(f"{path} is corrupt: its faiss index does not match "
                                         "its descriptors")
            database._index, database._built_kind = index, "hnsw"
        if expected_model is not None:
            database.require_model(expected_model, path)
        return database

    def require_model(self, expected: dict, path: str = "the place database") -> None:
        built = self.model
        rebuild = "; rebuild it with `dl-perception place build-db` and these weights"
        if built.get("name") != expected["name"]:
            raise PlaceDatabaseError(f"{path} was built with model '{built.get('name')}', "
                                     f"not '{expected['name']}'{rebuild}")
        if built.get("config_hash") != expected["config_hash"]:
            raise PlaceDatabaseError(
                f"{path} was built with another {expected['name']} configuration (config "
                f"{built.get('config_hash')}, these weights have {expected['config_hash']}){rebuild}")
        if built.get("weights_hash") != expected["weights_hash"]:
            raise PlaceDatabaseError(
                f"{path} was built with other {expected['name']} weights (weights "
                f"{built.get('weights_hash')}, loaded {expected['weights_hash']}){rebuild}")
