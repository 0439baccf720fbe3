"""FAISS indexes and the kNN graph behind similarity, uniqueness and duplicates.

Metrics (the distances stored in the lake):

* ``cosine``: vectors are L2-normalised and searched with exact L2; the distance
  is ``1 − cos(a, b) = ‖â − b̂‖² / 2`` in [0, 2];
* ``l2``: the Euclidean distance ``‖a − b‖``.

The graph can be updated incrementally (:func:`update_knn_graph`): when only a few
vectors are new or changed, a row whose old neighbours are all unchanged keeps its
list merged with its nearest fresh vectors — its new k nearest are among
(old k nearest) ∪ (k nearest fresh), which is exact — and only fresh rows and rows
that lost a neighbour (removed or changed) are searched against the whole index.

A GPU index is used when ``faiss.get_num_gpus() > 0`` (a faiss GPU build on a
machine with GPUs), the CPU one otherwise; results are the same. Indexes travel
between processes as ``serialize``d byte arrays (always the CPU form).
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

log = logging.getLogger(__name__)

METRICS = ("cosine", "l2")


def prepare(vectors: np.ndarray, *, metric: str) -> np.ndarray:
    """Validated float32 C-contiguous vectors, normalised for ``cosine``."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"vectors must be a non-empty [N, D] array, got shape {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise ValueError(f"vectors hold NaN or infinite values (rows {bad[:5].tolist()})")
    if metric == "cosine":
        x = x.copy()
        faiss.normalize_L2(x)
    return x


def build_index(vectors: np.ndarray, *, metric: str = "cosine", gpu: bool = True) -> faiss.Index:
    """An exact index over ``vectors`` (prepared here); on GPU when one is present and ``gpu``."""
    x = prepare(vectors, metric=metric)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    return to_gpu_if_available(index) if gpu else index


def to_gpu_if_available(index: faiss.Index) -> faiss.Index:
    if faiss.get_num_gpus() > 0:
        log.info("moving the index to %d GPU(s)", faiss.get_num_gpus())
        return faiss.index_cpu_to_all_gpus(index)
    return index


def serialize(index: faiss.Index) -> np.ndarray:
    """The CPU form of ``index`` as bytes (uint8 array) to ship or save."""
    if faiss.get_num_gpus() > 0:
        index = faiss.index_gpu_to_cpu(index)
    return faiss.serialize_index(index)


def deserialize(blob: np.ndarray) -> faiss.Index:
    return to_gpu_if_available(faiss.deserialize_index(blob))


def search(index: faiss.Index, queries: np.ndarray, k: int, *, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``index`` for each query: (distances [Q, k], row ids [Q, k])."""
    k = min(k, index.ntotal)
    sq, ids = index.search(prepare(queries, metric=metric), k)
    sq = np.maximum(sq, 0.0)
    dist = sq / 2.0 if metric == "cosine" else np.sqrt(sq)
    return dist.astype(np.float32), ids


def knn_graph(index: faiss.Index, queries: np.ndarray, query_rows: np.ndarray, k: int, *,
              metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Each query's ``k`` nearest neighbours in ``index``, itself excluded.

    ``query_rows[i]`` is query i's own row in the index. One extra neighbour is
    searched; the query's own row is removed wherever it ranks (an exact
    duplicate may tie with it), else the farthest result is dropped.
    """
    if k >= index.ntotal:
        raise ValueError(f"k={k} needs more than {index.ntotal} indexed vectors (k must be < N)")
    dist, ids = search(index, queries, k + 1, metric=metric)
    is_self = ids == np.asarray(query_rows)[:, None]
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True  # drop the farthest where self was not returned
    keep = ~is_self
    return dist[keep].reshape(len(ids), k), ids[keep].reshape(len(ids), k)


def update_knn_graph(vectors: np.ndarray, fresh: np.ndarray, old_rows: np.ndarray, old_dist: np.ndarray,
                     k: int, *, metric: str) -> tuple[np.ndarray, np.ndarray, int]:
    """The exact kNN graph of ``vectors`` from an earlier graph, searching only what changed.

    ``fresh[i]``: row i's vector is new or changed. ``old_rows[i]`` / ``old_dist[i]``: row
    i's earlier neighbours as row numbers of ``vectors`` (-1 where the neighbour was removed
    or row i had no earlier list) and their distances. Returns (distances [N, k], neighbour
    rows [N, k], number of rows searched against the whole index).
    """
    n = len(vectors)
    fresh = np.asarray(fresh, bool)
    if fresh.shape != (n,) or old_rows.shape != (n, k) or old_dist.shape != (n, k):
        raise ValueError(f"fresh must have shape ({n},) and old_rows/old_dist ({n}, {k}); got {fresh.shape}, "
                         f"{old_rows.shape}, {old_dist.shape}")
    if k >= n:
        raise ValueError(f"k={k} needs more than {n} vectors (k must be < N)")
    lost = (old_rows < 0).any(axis=1) | fresh[np.where(old_rows < 0, 0, old_rows)].any(axis=1)
    full = fresh | lost
    dist = np.empty((n, k), np.float32)
    rows = np.empty((n, k), np.int64)
    searched = np.flatnonzero(full)
    if searched.size:
        everything = build_index(vectors, metric=metric)
        dist[searched], rows[searched] = knn_graph(everything, vectors[searched], searched, k, metric=metric)
    merged = np.flatnonzero(~full)
    fresh_rows = np.flatnonzero(fresh)
    if merged.size and fresh_rows.size:
        fd, fi = search(build_index(vectors[fresh_rows], metric=metric), vectors[merged], k, metric=metric)
        cand_d = np.concatenate([old_dist[merged], fd], axis=1)
        cand_r = np.concatenate([old_rows[merged], fresh_rows[fi]], axis=1)
        order = np.argsort(cand_d, axis=1, kind="stable")[:, :k]
        dist[merged] = np.take_along_axis(cand_d, order, axis=1)
        rows[merged] = np.take_along_axis(cand_r, order, axis=1)
    elif merged.size:
        dist[merged], rows[merged] = old_dist[merged], old_rows[merged]
    return dist, rows, int(searched.size)
