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

Index types (``choose_spec``): an exact ``flat`` index below ``flat_threshold``
vectors; above it an inverted file, ``ivf_flat`` (raw vectors in ``nlist`` k-means
lists, ``nlist = 4·√N`` by default, the ``nprobe`` nearest lists scanned per
query), or ``ivf_pq`` above ``pq_threshold`` (vectors compressed by product
quantisation, ``pq_m`` bytes each, for memory, plus a ``refine_m``-byte product
code of the residual left by the first: FAISS's ``IndexIVFPQR`` takes the
``4·k`` nearest by the coarse code and re-ranks them by the finer reconstruction:
recall@10 0.70 → 0.96 in ``tests/unit/test_duplicates.py``, at 24 instead of 128
bytes a 32-d vector). The coarse quantiser is trained
once on a random sample (``train_size`` rows); shards are copies of the trained
empty index, each filled with its slice of the vectors under their global row ids
(``build_shard``), so shards can be built in parallel anywhere. A query searches
every shard and the per-shard top-k lists are merged (``search``). Approximate
results are checked against exact search with ``recall_at_k``:

    recall@k = mean over queries q of |approx_k(q) ∩ exact_k(q)| / k

A GPU index is used when ``faiss.get_num_gpus() > 0`` (a faiss GPU build on a
machine with GPUs), the CPU one otherwise; results are the same. Indexes travel
between processes as ``serialize``d byte arrays (always the CPU form).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

# OpenMP threads that spin while waiting slow FAISS down several-fold on a shared
# machine; sleep instead (only effective before OpenMP starts; an explicit setting wins).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

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
        # each row divided by its largest |value| first: the float32 squares in normalize_L2 then stay
        # below D, where a vector of magnitude 1e20 would overflow to inf and normalise to zeros
        peak = np.abs(x).max(axis=1, keepdims=True)
        x = x / np.where(peak > 0, peak, 1).astype(np.float32)
        faiss.normalize_L2(x)
    return x


KINDS = ("flat", "ivf_flat", "ivf_pq")


@dataclass(frozen=True)
class IndexSpec:
    """What index to build; ``asdict`` goes to the run catalog."""

    kind: str = "flat"
    metric: str = "cosine"
    nlist: int = 0  # inverted lists (ivf_*)
    nprobe: int = 0  # lists scanned per query (ivf_*)
    pq_m: int = 0  # bytes per vector (ivf_pq)
    refine_m: int = 0  # bytes per vector of the re-ranking code (ivf_pq; 0: no re-ranking)
    train_size: int = 0  # vectors the quantiser is trained on

    def as_dict(self) -> dict:
        return asdict(self)


def choose_spec(n: int, d: int, *, metric: str = "cosine", kind: str = "auto", flat_threshold: int = 50_000,
                pq_threshold: int = 20_000_000, nlist: int | None = None, nprobe: int = 8,
                pq_m: int | None = None, refine_m: int | None = None, train_size: int | None = None) -> IndexSpec:
    """The index for ``n`` vectors of dimension ``d``: flat below ``flat_threshold``, IVF above.

    ``kind="auto"``: ``flat`` if n < flat_threshold, ``ivf_pq`` if n ≥ pq_threshold,
    else ``ivf_flat``. Defaults: nlist = 4·√n (at most n/39, so every list gets
    training points), train_size = min(n, 40·nlist), pq_m = the largest divisor
    of d that is ≤ d/4, refine_m = the largest divisor of d that is ≤ d/2 (0: no re-ranking).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if kind == "auto":
        kind = "flat" if n < flat_threshold else "ivf_pq" if n >= pq_threshold else "ivf_flat"
    if kind not in KINDS:
        raise ValueError(f"index kind must be 'auto' or one of {KINDS}, got {kind!r}")
    if kind == "flat":
        return IndexSpec("flat", metric)
    nlist = int(nlist or max(1, min(round(4 * np.sqrt(n)), n // 39)))
    if not 1 <= nlist <= n:
        raise ValueError(f"nlist={nlist} must be in [1, {n}] for {n} vectors")
    if kind == "ivf_pq":
        pq_m = _largest_divisor(d, d // 4) if pq_m is None else pq_m
        refine_m = _largest_divisor(d, d // 2) if refine_m is None else refine_m
        for name, m in (("pq_m", pq_m), ("refine_m", refine_m)):
            if m and d % m:
                raise ValueError(f"{name}={m} must divide the dimension {d}")
        if not pq_m:
            raise ValueError("pq_m must be at least 1 for an ivf_pq index")
    else:
        pq_m = refine_m = 0
    return IndexSpec(kind, metric, nlist, max(1, min(nprobe, nlist)), pq_m, refine_m,
                     int(min(n, train_size or 40 * nlist)))


def _largest_divisor(d: int, at_most: int) -> int:
    return max(m for m in range(1, max(1, at_most) + 1) if d % m == 0)


def train_empty_index(sample: np.ndarray, spec: IndexSpec) -> faiss.Index:
    """An empty index of ``spec`` (ids are the caller's), its quantiser trained on ``sample`` (prepared here)."""
    x = prepare(sample, metric=spec.metric)
    d = x.shape[1]
    if spec.kind == "flat":
        return faiss.IndexIDMap(faiss.IndexFlatL2(d))
    quantizer = faiss.IndexFlatL2(d)
    if spec.kind == "ivf_flat":
        index = faiss.IndexIVFFlat(quantizer, d, spec.nlist, faiss.METRIC_L2)
    elif spec.refine_m:
        # IndexIVFPQR finds its re-ranking codes by the ids it stores, so it must hold ids 0..n−1:
        # the id map in front keeps the caller's (global row) ids.
        index = faiss.IndexIDMap(faiss.IndexIVFPQR(quantizer, d, spec.nlist, spec.pq_m, 8, spec.refine_m, 8))
    else:
        index = faiss.IndexIVFPQ(quantizer, d, spec.nlist, spec.pq_m, 8)
    if x.shape[0] < spec.nlist:
        raise ValueError(f"{x.shape[0]} training vectors for nlist={spec.nlist} lists: need at least nlist")
    index.train(x)
    faiss.extract_index_ivf(index).nprobe = spec.nprobe
    return index


def build_shard(empty_index_blob: np.ndarray, vectors: np.ndarray, row_ids: np.ndarray, *,
                metric: str) -> np.ndarray:
    """A copy of a trained empty index filled with ``vectors`` under ids ``row_ids``; serialized."""
    index = faiss.deserialize_index(empty_index_blob)
    index.add_with_ids(prepare(vectors, metric=metric), np.ascontiguousarray(row_ids, dtype=np.int64))
    return faiss.serialize_index(index)


def build_index(vectors: np.ndarray, *, metric: str = "cosine", gpu: bool = True, spec: IndexSpec | None = None,
                seed: int = 0) -> faiss.Index:
    """One index over ``vectors`` (rows are ids 0..N−1); exact unless ``spec`` says otherwise.

    An IVF quantiser is trained on ``spec.train_size`` rows drawn with ``seed``.
    On GPU when one is present and ``gpu``.
    """
    spec = spec or IndexSpec("flat", metric)
    if spec.metric != metric:
        raise ValueError(f"spec metric {spec.metric!r} differs from metric {metric!r}")
    x = prepare(vectors, metric=metric)
    if spec.kind == "flat":
        index = faiss.IndexFlatL2(x.shape[1])
        index.add(x)
    else:
        sample = x[np.sort(np.random.default_rng(seed).choice(len(x), spec.train_size, replace=False))]
        index = train_empty_index(sample, IndexSpec(**{**spec.as_dict(), "metric": "l2"}))
        index.add_with_ids(x, np.arange(len(x), dtype=np.int64))
    return to_gpu_if_available(index) if gpu else index


def to_gpu_if_available(index: faiss.Index) -> faiss.Index:
    if faiss.get_num_gpus() > 0:
        if _is_ivf(index) and isinstance(faiss.extract_index_ivf(index), faiss.IndexIVFPQR):
            # FAISS's GPU cloner would copy it as a plain IVF-PQ and drop the re-ranking code.
            log.info("an IVF-PQ index with re-ranking has no GPU form: searching it on the CPU")
            return index
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


def search(index: faiss.Index | Sequence[faiss.Index], queries: np.ndarray, k: int, *,
           metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows for each query: (distances [Q, k], row ids [Q, k]).

    ``index`` may be a list of shards holding disjoint rows: each is searched and
    the per-shard lists merged by distance. Missing results (an IVF probe that
    found fewer than k rows) have id −1 and distance inf.
    """
    shards = [index] if isinstance(index, faiss.Index) else list(index)
    k = min(k, sum(s.ntotal for s in shards))
    x = prepare(queries, metric=metric)
    found = [s.search(x, k) for s in shards]
    sq = np.concatenate([f[0] for f in found], axis=1) if len(found) > 1 else found[0][0]
    ids = np.concatenate([f[1] for f in found], axis=1) if len(found) > 1 else found[0][1]
    if len(found) > 1:
        order = np.argsort(np.where(ids < 0, np.inf, sq), axis=1, kind="stable")[:, :k]
        sq, ids = np.take_along_axis(sq, order, 1), np.take_along_axis(ids, order, 1)
    sq = np.where(ids < 0, np.inf, np.maximum(sq, 0.0))
    dist = sq / 2.0 if metric == "cosine" else np.sqrt(sq)
    return dist.astype(np.float32), ids


def knn_graph(index: faiss.Index | Sequence[faiss.Index], queries: np.ndarray, query_rows: np.ndarray, k: int, *,
              metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Each query's ``k`` nearest neighbours in ``index`` (one index or its shards), itself excluded.

    ``query_rows[i]`` is query i's own row id in the index. One extra neighbour is
    searched; the query's own row is removed wherever it ranks (an exact
    duplicate may tie with it), else the farthest result is dropped. Queries an
    IVF probe left short of k+1 results are searched again over every list.
    """
    shards = [index] if isinstance(index, faiss.Index) else list(index)
    total = sum(s.ntotal for s in shards)
    if k >= total:
        raise ValueError(f"k={k} needs more than {total} indexed vectors (k must be < N)")
    dist, ids = search(shards, queries, k + 1, metric=metric)
    short = np.flatnonzero((ids < 0).any(axis=1))
    if short.size:
        with _probing_all(shards):
            dist[short], ids[short] = search(shards, np.asarray(queries)[short], k + 1, metric=metric)
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


@contextlib.contextmanager
def _probing_all(shards: list[faiss.Index]):
    """IVF shards scan every list inside the block (exact within the shard)."""
    ivfs = [faiss.extract_index_ivf(s) for s in shards if _is_ivf(s)]
    saved = [ivf.nprobe for ivf in ivfs]
    try:
        for ivf in ivfs:
            ivf.nprobe = ivf.nlist
        yield
    finally:
        for ivf, nprobe in zip(ivfs, saved):
            ivf.nprobe = nprobe


def _is_ivf(index: faiss.Index) -> bool:
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        return False
    return True


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |found_k ∩ exact_k| / k for id arrays [Q, k]."""
    found, exact = np.asarray(found), np.asarray(exact)
    if found.shape != exact.shape or found.ndim != 2 or found.size == 0:
        raise ValueError(f"found {found.shape} and exact {exact.shape} must be the same non-empty [Q, k] shape")
    hits = sum(len(np.intersect1d(f, e)) for f, e in zip(found, exact))
    return hits / exact.size


def self_knn(vectors: np.ndarray, k: int, *, metric: str = "cosine", spec: IndexSpec | None = None,
             batch_size: int = 65_536, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The kNN graph of ``vectors`` in one process: every row's k nearest other rows (dist, ids [N, k]).

    The index follows ``spec`` (default: ``choose_spec`` for the size); queries go
    in batches of ``batch_size`` so memory stays ~ the index plus one batch.
    """
    spec = spec or choose_spec(len(vectors), np.shape(vectors)[1], metric=metric)
    index = build_index(vectors, metric=metric, gpu=True, spec=spec, seed=seed)
    n = len(vectors)
    dist, ids = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
    for a in range(0, n, batch_size):
        b = min(n, a + batch_size)
        dist[a:b], ids[a:b] = knn_graph(index, vectors[a:b], np.arange(a, b), k, metric=metric)
    return dist, ids


def exact_distances(query: np.ndarray, vectors: np.ndarray, *, metric: str) -> np.ndarray:
    """Distances [N] from one query vector [D] to every row of ``vectors`` [N, D], in the metric's units."""
    q, x = prepare(np.reshape(query, (1, -1)), metric=metric)[0], prepare(vectors, metric=metric)
    if q.shape[0] != x.shape[1]:
        raise ValueError(f"query has dimension {q.shape[0]}, the vectors {x.shape[1]}")
    sq = np.maximum(np.einsum("ij,ij->i", x, x) - 2.0 * (x @ q) + q @ q, 0.0)
    return (sq / 2.0 if metric == "cosine" else np.sqrt(sq)).astype(np.float32)
