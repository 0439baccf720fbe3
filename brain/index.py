"""FAISS indexes and the kNN graph behind similarity, uniqueness and duplicates.

Metrics (the distances stored in the lake):

* ``cosine``: vectors are L2-normalised and searched with exact L2; the distance
  is ``1 − cos(a, b) = ‖â − b̂‖² / 2`` in [0, 2];
* ``l2``: the Euclidean distance ``‖a − b‖``.

The graph can be updated incrementally: when only a few vectors are new or changed,
a row whose old neighbours are all unchanged keeps its list merged with its nearest
fresh vectors (:func:`merge_with_fresh`) — its new k nearest are among (old k nearest)
∪ (k nearest fresh) — and only the :func:`affected_rows` (fresh rows and rows that lost
a neighbour, removed or changed) are searched against the whole index. The nearest fresh
vectors of the other rows are found from the fresh side (:func:`nearest_fresh`: each fresh
vector probes its ``nprobe`` nearest lists), so an update costs O(F·N/nlist·nprobe·D) for
F fresh vectors, not O(F·N·D).

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
every shard (``search_partial``) and the per-shard top-k lists are merged
(``merge_partials``, a FAISS ``ResultHeap``). Shards share one quantiser, so a query's
``nprobe`` nearest lists are found once (``coarse_assign``, nlist·D flops a query) and
handed to every shard (FAISS ``search_preassigned``) instead of each shard finding them
again: with nlist = 4·√N that search costs as much as the list scans it selects. Approximate
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


def coarse_assign(index: faiss.Index, queries: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``nprobe`` nearest IVF lists of each query, (distances [Q, p], list ids [Q, p]), for every
    shard cut from the same trained index; None when ``index`` takes no pre-assigned lists (flat,
    IVF-PQ with re-ranking, a GPU index): its shards then find the lists themselves."""
    if not _is_ivf(index) or not isinstance(index, faiss.IndexIVF) or not nprobe:
        return None
    return index.quantizer.search(np.ascontiguousarray(queries, np.float32), int(min(nprobe, index.nlist)))


def search_partial(index: faiss.Index, queries: np.ndarray, k: int, *, nprobe: int | None = None,
                   k_factor: int | None = None,
                   assigned: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One shard's ``k`` nearest for ``prepare``d queries: (squared L2 [Q, k], row ids [Q, k]), to merge.

    ``nprobe`` / ``k_factor`` (IVF lists scanned; IVF-PQ re-rank depth, candidates = k_factor·k)
    apply to this search only; ``assigned``: the queries' lists from :func:`coarse_assign` (its
    width is then the nprobe). Queries the probe left short of min(k, shard size) results
    are searched again over every list of the shard, so the shards' lists merged always
    hold min(k, N) results. Missing results have id −1 and distance inf.
    """
    k = min(k, index.ntotal)
    if k == 0 or len(queries) == 0:
        return np.full((len(queries), 0), np.inf, np.float32), np.full((len(queries), 0), -1, np.int64)
    if assigned is not None:
        list_dist, lists = assigned
        # FAISS reads nprobe list ids per query from ``lists``: the index's nprobe must be its width.
        with _ivf_settings(index, nprobe=lists.shape[1], k_factor=k_factor):
            sq, ids = index.search_preassigned(queries, k, lists, list_dist)
    else:
        with _ivf_settings(index, nprobe=nprobe, k_factor=k_factor):
            sq, ids = index.search(queries, k)
    short = np.flatnonzero((ids < 0).any(axis=1))
    if short.size:
        with _ivf_settings(index, nprobe=_nlist(index)):
            sq[short], ids[short] = index.search(np.ascontiguousarray(queries[short]), k)
    return np.where(ids < 0, np.inf, sq).astype(np.float32), ids


def merge_partials(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest of several shards' (squared L2, ids) lists per query (FAISS's ``ResultHeap``).

    The merge state is [Q, k]: memory is O(Q·k) whatever the number of shards.
    """
    heap = faiss.ResultHeap(len(parts[0][0]), k)
    for sq, ids in (p for p in parts if p[0].size):
        heap.add_result(np.ascontiguousarray(sq, np.float32), np.ascontiguousarray(ids, np.int64))
    heap.finalize()
    return heap.D, heap.I


def to_distance(sq: np.ndarray, ids: np.ndarray, *, metric: str) -> np.ndarray:
    """Squared L2 of ``prepare``d vectors in the metric's units (inf where the id is −1)."""
    sq = np.where(ids < 0, np.inf, np.maximum(sq, 0.0))
    return (sq / 2.0 if metric == "cosine" else np.sqrt(sq)).astype(np.float32)


def drop_self(dist: np.ndarray, ids: np.ndarray, query_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """k+1 neighbours → k: the query's own row removed wherever it ranks (an exact duplicate may tie
    with it), else the farthest result."""
    is_self = ids == np.asarray(query_rows)[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    k = ids.shape[1] - 1
    return dist[keep].reshape(len(ids), k), ids[keep].reshape(len(ids), k)


def search(index: faiss.Index | Sequence[faiss.Index], queries: np.ndarray, k: int, *,
           metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows for each query: (distances [Q, k], row ids [Q, k]).

    ``index`` may be a list of shards holding disjoint rows: each is searched and
    the per-shard lists merged by distance (:func:`merge_partials`).
    """
    shards = [index] if isinstance(index, faiss.Index) else list(index)
    k = min(k, sum(s.ntotal for s in shards))
    x = prepare(queries, metric=metric)
    sq, ids = merge_partials([search_partial(s, x, k) for s in shards], k)
    return to_distance(sq, ids, metric=metric), ids


def knn_graph(index: faiss.Index | Sequence[faiss.Index], queries: np.ndarray, query_rows: np.ndarray, k: int, *,
              metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Each query's ``k`` nearest neighbours in ``index`` (one index or its shards), itself excluded.

    ``query_rows[i]`` is query i's own row id in the index; k+1 are searched and
    :func:`drop_self` keeps k.
    """
    shards = [index] if isinstance(index, faiss.Index) else list(index)
    total = sum(s.ntotal for s in shards)
    if k >= total:
        raise ValueError(f"k={k} needs more than {total} indexed vectors (k must be < N)")
    dist, ids = search(shards, queries, k + 1, metric=metric)
    return drop_self(dist, ids, query_rows)


def affected_rows(old_rows: np.ndarray, fresh: np.ndarray, stale: np.ndarray) -> np.ndarray:
    """Rows an incremental update must search against the whole index: ``fresh`` rows (new or changed),
    and rows whose earlier list [rows, k] holds −1 (no list, or a neighbour gone) or a ``stale`` row
    (``stale[r]``: row r was removed, or its vector changed)."""
    lost = (old_rows < 0).any(axis=1) | stale[np.maximum(old_rows, 0)].any(axis=1)
    return np.asarray(fresh, bool) | lost


def merge_with_fresh(old_dist: np.ndarray, old_rows: np.ndarray, fresh_dist: np.ndarray, fresh_rows: np.ndarray,
                     k: int) -> tuple[np.ndarray, np.ndarray]:
    """A row's new k nearest when none of its old k nearest changed: the k smallest of
    (old k nearest) ∪ (k nearest among the fresh vectors) — any other vector was already
    farther than the old k-th neighbour, so the merge is as exact as the fresh lists
    (:func:`nearest_fresh`)."""
    cand_d = np.concatenate([old_dist, fresh_dist], axis=1)
    cand_r = np.concatenate([old_rows, fresh_rows], axis=1)
    order = np.argsort(cand_d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(cand_d, order, axis=1), np.take_along_axis(cand_r, order, axis=1)


def ivf_lists(index: faiss.Index) -> tuple[np.ndarray, np.ndarray] | None:
    """(row id, IVF list) of every vector a bare CPU IVF index stores; None for any other index
    (flat, behind an id map, on a GPU)."""
    if not isinstance(index, faiss.IndexIVF):
        return None
    invlists = index.invlists
    sizes = np.array([invlists.list_size(i) for i in range(index.nlist)], np.int64)
    ids = [faiss.rev_swig_ptr(invlists.get_ids(i), int(n)).astype(np.int64) for i, n in enumerate(sizes) if n]
    return (np.concatenate(ids) if ids else np.zeros(0, np.int64)), np.repeat(np.arange(index.nlist), sizes)


def nearest_fresh(index: faiss.Index, vectors: np.ndarray, lists: np.ndarray | None, fresh_vectors: np.ndarray,
                  fresh_rows: np.ndarray, k: int, *, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``vectors``' ``k`` nearest among ``fresh_vectors``: (squared L2 [N, k], fresh row ids
    [N, k]; inf and −1 where fewer were found).

    With an IVF index (``index`` a bare CPU IVF, ``lists[i]`` the list holding vector i, see
    :func:`ivf_lists`) the search runs from the fresh side: fresh vector v is compared with the
    vectors of its ``nprobe`` nearest lists, so vector x finds v when x's list is among v's
    probes — the mirror image of an IVF search from x, which finds v when v's list is among x's
    probes, and as approximate (the update's recall check measures it). For F fresh vectors this
    costs about N·F·D·nprobe/nlist instead of N·F·D: an update adding 1% to a graph of N rows
    would otherwise cost O(N²·D/100). Otherwise (``lists`` None): exact, brute force.
    """
    n, f = len(vectors), len(fresh_vectors)
    out_sq = np.full((n, k), np.inf, np.float32)
    out_rows = np.full((n, k), -1, np.int64)
    if n == 0 or f == 0 or k == 0:
        return out_sq, out_rows
    vectors = np.ascontiguousarray(vectors, np.float32)
    fresh_vectors = np.ascontiguousarray(fresh_vectors, np.float32)
    fresh_rows = np.asarray(fresh_rows, np.int64)
    if lists is None or not isinstance(index, faiss.IndexIVF) or not nprobe:
        kk = min(k, f)
        out_sq[:, :kk], local = faiss.knn(vectors, fresh_vectors, kk)
        out_rows[:, :kk] = np.where(local < 0, -1, fresh_rows[np.maximum(local, 0)])
        return out_sq, out_rows
    _, probes = index.quantizer.search(fresh_vectors, int(min(nprobe, index.nlist)))
    probed, probers = probes.ravel(), np.repeat(np.arange(f), probes.shape[1])
    by_probe, by_list = np.argsort(probed, kind="stable"), np.argsort(lists, kind="stable")
    probe_ids, probe_starts = np.unique(probed[by_probe], return_index=True)
    list_ids, list_starts = np.unique(np.asarray(lists)[by_list], return_index=True)
    probe_ends, list_ends = np.r_[probe_starts[1:], len(probed)], np.r_[list_starts[1:], n]
    _, in_probe, in_list = np.intersect1d(probe_ids, list_ids, assume_unique=True, return_indices=True)
    sq_x, sq_v = np.einsum("ij,ij->i", vectors, vectors), np.einsum("ij,ij->i", fresh_vectors, fresh_vectors)
    for p, q in zip(in_probe, in_list):  # one IVF list: its vectors × the fresh vectors probing it
        members = by_list[list_starts[q]:list_ends[q]]
        v = probers[by_probe[probe_starts[p]:probe_ends[p]]]
        sq = sq_x[members, None] + sq_v[None, v] - 2.0 * (vectors[members] @ fresh_vectors[v].T)
        kk = min(k, len(v))
        best = np.argpartition(sq, kk - 1, axis=1)[:, :kk] if len(v) > kk else np.broadcast_to(
            np.arange(kk), (len(members), kk))
        best_sq = np.take_along_axis(sq, best, axis=1)
        ranked = np.argsort(best_sq, axis=1, kind="stable")
        out_sq[members, :kk] = np.maximum(np.take_along_axis(best_sq, ranked, axis=1), 0.0)
        out_rows[members, :kk] = fresh_rows[v[np.take_along_axis(best, ranked, axis=1)]]
    return out_sq, out_rows


def probe_schedule(nprobe: int, nlist: int, *, nprobe_max: int, refine: bool, k_factor_max: int = 64
                   ) -> list[tuple[int, int]]:
    """The (nprobe, k_factor) settings tried in turn until the recall target is met: nprobe doubles
    from its start up to ``min(nprobe_max, nlist)``; with PQ re-ranking the re-rank depth
    (``k_factor``, FAISS's default 4) doubles alongside up to ``k_factor_max`` (0 without re-ranking)."""
    cap = max(1, min(nprobe_max, nlist))
    steps, p, f = [], max(1, min(nprobe, cap)), 4
    while True:
        steps.append((p, f if refine else 0))
        if p >= cap:
            return steps
        p, f = min(cap, 2 * p), min(k_factor_max, 2 * f)


@contextlib.contextmanager
def _ivf_settings(index: faiss.Index, *, nprobe: int | None = None, k_factor: int | None = None):
    """IVF search settings inside the block (restored after); a flat index ignores them."""
    gpu_ivf = getattr(faiss, "GpuIndexIVF", None)
    if gpu_ivf is not None and isinstance(index, gpu_ivf) and nprobe:
        index.nprobe = int(nprobe)  # a shard's GPU form (faiss GPU build); not exercised on this CPU machine
        yield
        return
    if not _is_ivf(index) or (not nprobe and not k_factor):
        yield
        return
    ivf = faiss.extract_index_ivf(index)
    saved = ivf.nprobe, getattr(ivf, "k_factor", None)
    try:
        if nprobe:
            ivf.nprobe = int(min(nprobe, ivf.nlist))
        if k_factor and saved[1] is not None:
            ivf.k_factor = int(k_factor)
        yield
    finally:
        ivf.nprobe = saved[0]
        if saved[1] is not None:
            ivf.k_factor = saved[1]


def _nlist(index: faiss.Index) -> int:
    return faiss.extract_index_ivf(index).nlist if _is_ivf(index) else 0


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
