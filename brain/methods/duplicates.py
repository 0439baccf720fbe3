"""Near-duplicates, exact duplicates and unique subsets from embeddings (arrays in, arrays out).

Near-duplicates as FiftyOne defines them (``find_duplicates(thresh)``). Let G_t be the
kNN graph (each sample's k nearest others, self excluded) keeping only the edges with
distance d(i, j) ≤ t. Samples are visited in order (lowest index first; lowest sample
id in the lake jobs); a sample not yet marked is *kept*, and each of its unmarked
neighbours in G_t becomes its duplicate, reported with the distance to it:

    for i = 0 … N−1:  if i unmarked:  keep i;  for j ∈ G_t(i) unmarked:  dup(j) = (i, d(i, j))

The kept set is a maximal independent set of G_t: every pair of kept samples is farther
apart than t (as far as the kNN graph sees), every duplicate lies within t of its kept
sample, and a chain A–B–C (d(A,B), d(B,C) ≤ t < d(A,C)) gives A kept with B its
duplicate and C kept, not one group of three. ``grouping="components"`` gives the
connected components of G_t instead (kept = a component's lowest index, the distance
to the duplicate's nearest member): transitive groups, e.g. for cleaning a set of
frames; the default is ``"greedy"``.

    neighbors_map = {kept: [(duplicate, distance), …]}

Threshold. ``thresh`` in distance units (cosine: 1 − cos). With ``fraction`` f the
threshold is the one that makes about f·N samples duplicates under component grouping:
the number of duplicates at t is N − #components(G_t) = #{edges of a minimum spanning
forest F of the kNN graph with weight ≤ t}, so t = the ⌈f·N⌉-th smallest weight of F
(exact for the kNN graph). Greedy grouping at the same t marks at most as many (a
maximal independent set has at least one sample per component). With neither,
``DEFAULT_THRESH`` = 0.1 (cosine). Embedding distances alone do not separate altered
copies from distinct images (a 5% crop of a textured tile moves a thumbnail embedding
farther than distinct tiles lie): for images, verify candidates.

Images (``find_duplicate_images``, the default of the lake's near-duplicates job):
candidate pairs are the embedding's kNN edges with distance ≤ ``CANDIDATE_THRESH`` and
the blurred-thumbnail descriptor's kNN edges (brain.methods.near_duplicates), each
verified by a similarity transform and the correlation after alignment
(``near_duplicates.Verifier``, ncc ≥ min_corr). The graph of verified pairs, with
distance 1 − ncc, is grouped as above at t = 1 − min_corr. ``verifier="aligned"`` is
the previous check (``aligned_similarity``, shifts and rescales only; compared in
bench/near_duplicates.py).

Aligned similarity (``aligned_similarity``). Both images are made 96×96 grey and
smoothed (3×3 box); the candidate b is rescaled by s ∈ SCALES about its centre and
shifted by (dy, dx) ∈ [−3, 3]²; the score is the best normalised cross-correlation of
the central window W (a 8-pixel border left out) over those transforms:

    ncc(a, b) = max_{s, dy, dx} ⟨A_W − mean, B_{s,dy,dx,W} − mean⟩ / (‖·‖ ‖·‖)

Exact duplicates: samples whose files have the same content hash (sha256); the kept
sample is the lowest index, the distance 0.

Unique subset (``find_unique``): the k-center greedy (farthest-point) selection.
Start from the sample nearest the mean; then repeatedly add the sample whose
distance to the selected set is largest:

    s_1 = argmin_i d(x_i, x̄),   s_{m+1} = argmax_i min_{j ≤ m} d(x_i, x_{s_j})

a 2-approximation of the subset minimising the largest distance of any sample to
it (Gonzalez 1985). Cost O(n·N·D), memory O(N·D). Ties go to the first index (the
lake job orders samples by id). Call r_j = min_{l<j} d(s_j, s_l) the radius at step
j: it depends on the picks' vectors only.

Unique subset after additions (``extend_unique``): with only new samples V added (none
removed or changed), the old picks s_1 … s_n stay the greedy's picks as long as
  (a) s_1 is still nearest to the new mean m' = (N·m + Σ_V v)/(N + |V|): the run saves the
      K samples nearest to m (s_1 among them) and d_{K+1}, the next distance; with
      δ = ‖m' − m‖ every other old x has d(x, m') ≥ d(x, m) − δ ≥ d_{K+1} − δ, so
      d(s_1, m') < d_{K+1} − δ keeps them behind s_1, and the K saved samples and each
      new v are checked directly, d(·, m') > d(s_1, m'). (K = 1 is the bound with the
      second-smallest distance d_2; a larger K, ``MEAN_CANDIDATES``, tolerates a larger
      shift δ: at 1M samples the two nearest to the mean lie closer together than 1% of
      new samples move it.)
  (b) at each step j ≥ 2, every new v has min_{l<j} d(v, s_l) < r_j: the old points'
      distances to s_1 … s_{j−1} are what they were, so s_j is still their farthest, and
      no new point reaches it.
Proof by induction on j: (a) gives the same s_1; if s_1 … s_{j−1} are the same, the
nearest-distance array over the old points is the same, and (b) keeps s_j its argmax.
At the first step j where (b) fails the greedy continues from step j over all vectors
(``find_unique_state(…, leading=s_1 … s_{j−1})``: j − 1 passes rebuild the nearest-distance
array); when (a) fails it runs in full. Cost of the checks: O(|V|·(n + K)·D + n²·D),
the saved state O((n + K)·D) (the picks' and the K candidates' vectors) and the mean.

Float care: the greedy computes d² = ‖x‖² − 2·x·c + ‖c‖² in float32 with ``np.einsum``,
whose bits for a row do not depend on the other rows (a BLAS product's do: measured, a
few rows in a million differ in the last bit between a matrix and a subset of it), so an
old sample's distances are bit for bit the same once new rows join. The rounding of a
float32 d² is at most 4·D·ε₃₂ times the largest squared norm (ε₃₂ = 2⁻²⁴, Higham's γ_D
bound on a D-term dot product; never below 1e-5 relative): check (b) computes in float64
and demands each inequality with twice that margin, so a near-tie that float32 could
decide either way falls back to the greedy over all vectors instead of risking a
different pick. The first pick's distances to the mean are float64 from the differences
(the two nearest to the mean of a million samples can differ by less than float32
resolves), compared with a relative margin of 1e-9. d_{K+1} is saved as a lower bound,
and an extended state keeps a lower bound too (the K nearest of the candidates and new
samples, and the smaller of d_{K+1} − δ and the next candidate's distance), so a chain
of extensions stays exact.

When the new samples are like the old ones (drawn from the same distribution), each has
about a 1/N chance per step of being the farthest, so with M new samples a pick changes
near step N/M (step ~100 for 1% new): the saving is then the passes before it, and the
pruning below (which the continuation gets with the previous r_n² as its guess).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from brain import index as knn_index
from brain.methods import near_duplicates

DEFAULT_THRESH = 0.1  # cosine distance 1 − cos, embeddings only; see the module docstring
DEFAULT_K = 10
CANDIDATE_THRESH = 0.5  # embedding distance of the pairs verified on pixels
MIN_NCC = 0.92  # verifier="aligned": aligned normalised cross-correlation of a verified duplicate
VERIFY_SIZE, VERIFY_BORDER, VERIFY_SHIFT = 96, 8, 3
SCALES = (0.95, 0.975, 1.0, 1.025, 1.05)


def _check_edges(n: int, src: np.ndarray, dst: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, ...]:
    src, dst, dist = np.asarray(src, np.int64), np.asarray(dst, np.int64), np.asarray(dist, np.float64)
    if not src.shape == dst.shape == dist.shape or src.ndim != 1:
        raise ValueError(f"src {src.shape}, dst {dst.shape} and dist {dist.shape} must be equal 1-d shapes")
    bad = np.flatnonzero((src < 0) | (src >= n) | (dst < 0) | (dst >= n))
    if bad.size:
        raise ValueError(f"edge {int(bad[0])} ({src[bad[0]]}, {dst[bad[0]]}) names a row outside [0, {n})")
    bad = np.flatnonzero(~np.isfinite(dist) | (dist < 0))
    if bad.size:
        raise ValueError(f"edge {int(bad[0])} has distance {dist[bad[0]]}: distances must be finite and >= 0")
    return src, dst, dist


def threshold_for_fraction(n: int, src: np.ndarray, dst: np.ndarray, dist: np.ndarray, fraction: float) -> float:
    """The distance t at which ⌈fraction·n⌉ samples are duplicates in the graph (src → dst, dist)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    src, dst, dist = _check_edges(n, src, dst, dist)
    # scipy drops explicit zeros: shift every weight by one (order kept), take it back off below.
    graph = sparse.coo_matrix((dist + 1.0, (src, dst)), shape=(n, n)).tocsr()
    forest = np.sort(minimum_spanning_tree(graph).data) - 1.0
    if forest.size == 0:
        raise ValueError("the graph has no edges: no threshold gives any duplicates")
    return float(forest[min(forest.size, int(np.ceil(fraction * n))) - 1])


def resolve_threshold(*, thresh: float | None, fraction: float | None, verify: bool) -> tuple[float | None, bool]:
    """(embedding-distance threshold, verify candidates on pixels?) from the options.

    fraction → (None, False): the threshold comes from ``fraction``; thresh → (thresh,
    False): FiftyOne's semantics on the embedding distance; neither → (None, True) when
    verifying (the threshold is then 1 − min_corr on the verified pairs), else
    (DEFAULT_THRESH, False).
    """
    if thresh is not None and fraction is not None:
        raise ValueError("give thresh or fraction, not both")
    if fraction is not None:
        return None, False
    if thresh is not None:
        return thresh, False
    return (None, True) if verify else (DEFAULT_THRESH, False)


def group_duplicates(n: int, src: np.ndarray, dst: np.ndarray, dist: np.ndarray, thresh: float, *,
                     grouping: str = "greedy") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Duplicates in the graph at ``thresh``: arrays (kept, duplicate, distance), one row per duplicate.

    ``grouping``: "greedy" (FiftyOne's kept set, the default) or "components" (module docstring).
    """
    try:
        group = _GROUPINGS[grouping]
    except KeyError:
        raise ValueError(f"grouping must be one of {sorted(_GROUPINGS)}, got {grouping!r}") from None
    if not np.isfinite(thresh) or thresh < 0:
        raise ValueError(f"thresh must be a finite distance >= 0, got {thresh}")
    src, dst, dist = _check_edges(n, src, dst, dist)
    close = (dist <= thresh) & (src != dst)
    if not close.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return group(n, src[close], dst[close], dist[close])


def _components(n: int, src: np.ndarray, dst: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, ...]:
    _, labels = connected_components(sparse.coo_matrix((np.ones(src.size), (src, dst)), shape=(n, n)),
                                     directed=False)
    kept_of_label = np.full(labels.max() + 1, n, np.int64)
    np.minimum.at(kept_of_label, labels, np.arange(n))
    nearest = np.full(n, np.inf)
    np.minimum.at(nearest, src, dist)
    np.minimum.at(nearest, dst, dist)
    kept = kept_of_label[labels]
    dup = np.flatnonzero(kept != np.arange(n))
    return kept[dup], dup, nearest[dup]


def _greedy(n: int, src: np.ndarray, dst: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, ...]:
    # both directions, one entry per (row, col) with its least distance, rows in CSR order
    rows, cols, d = np.concatenate([src, dst]), np.concatenate([dst, src]), np.concatenate([dist, dist])
    order = np.lexsort((d, cols, rows))
    rows, cols, d = rows[order], cols[order], d[order]
    first = np.ones(rows.size, bool)
    first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    rows, cols, d = rows[first], cols[first], d[first]
    starts = np.searchsorted(rows, np.arange(n + 1))
    kept_of = np.full(n, -1, np.int64)  # -1 unmarked; i: kept (itself) or the kept sample it duplicates
    distance = np.zeros(n)
    for i in np.unique(rows).tolist():
        if kept_of[i] >= 0:
            continue
        kept_of[i] = i
        nbrs, nd = cols[starts[i]:starts[i + 1]], d[starts[i]:starts[i + 1]]
        free = kept_of[nbrs] < 0
        kept_of[nbrs[free]] = i
        distance[nbrs[free]] = nd[free]
    dup = np.flatnonzero((kept_of >= 0) & (kept_of != np.arange(n)))
    return kept_of[dup], dup, distance[dup]


_GROUPINGS = {"greedy": _greedy, "components": _components}


def as_neighbors_map(kept: np.ndarray, dup: np.ndarray, dist: np.ndarray) -> dict[int, list[tuple[int, float]]]:
    """{kept: [(duplicate, distance), …]}, duplicates nearest first."""
    out: dict[int, list[tuple[int, float]]] = {}
    for k_, d_, s_ in sorted(zip(kept.tolist(), dist.tolist(), dup.tolist())):
        out.setdefault(k_, []).append((s_, d_))
    return out


def find_duplicates(vectors: np.ndarray, thresh: float | None = None, fraction: float | None = None, *,
                    metric: str = "cosine", k: int = DEFAULT_K,
                    grouping: str = "greedy") -> dict[int, list[tuple[int, float]]]:
    """Near-duplicates of ``vectors`` [N, D] as a neighbors_map (see the module docstring).

    The kNN graph is FAISS's (``brain.index.self_knn``: exact below its flat
    threshold, IVF above). Give ``thresh`` or ``fraction``, not both; neither:
    ``DEFAULT_THRESH``. ``grouping``: "greedy" (kept set, FiftyOne's) or "components".
    """
    thresh, _ = resolve_threshold(thresh=thresh, fraction=fraction, verify=False)
    n = len(vectors)
    if n < 2:
        return {}
    src, dst, dist = _knn_edges(vectors, min(k, n - 1), metric)
    edges = (src, dst, dist.astype(np.float64))
    if fraction is not None:
        thresh = threshold_for_fraction(n, *edges, fraction)
    return as_neighbors_map(*group_duplicates(n, *edges, thresh, grouping=grouping))


def exact_duplicates(hashes: np.ndarray) -> dict[int, list[tuple[int, float]]]:
    """Groups of equal content hashes as a neighbors_map (kept = lowest index, distance 0)."""
    hashes = np.asarray(hashes, dtype=object)
    missing = [i for i, h in enumerate(hashes.tolist()) if not h]
    if missing:
        raise ValueError(f"samples at rows {missing[:5]} have no content hash")
    _, first, inverse = np.unique(hashes.astype(str), return_index=True, return_inverse=True)
    kept = first[inverse]
    dup = np.flatnonzero(kept != np.arange(len(hashes)))
    return as_neighbors_map(kept[dup], dup, np.zeros(dup.size))


# Relative margin of the incremental unique subset's comparisons (module docstring, "Float care").
NEAR_TIE = 1e-5
# K: the samples nearest to the mean a unique run keeps, to check its first pick after additions.
MEAN_CANDIDATES = 256
# Relative margin of comparisons of float64 distances to the mean (rounding ~D·2⁻⁵³, far below).
MEAN_TIE = 1e-9
# Pruning of the greedy's passes (find_unique_state): the radius guess from every PRUNE_STRIDE-th sample,
# for N ≥ PRUNE_MIN_SAMPLES; every PRUNE_EVERY picks, the samples below the guess are dropped when fewer
# than PRUNE_KEEP of those in play would stay.
PRUNE_STRIDE = 20
PRUNE_MIN_SAMPLES = 50_000
PRUNE_EVERY = 8
PRUNE_KEEP = 0.8
# The guess of a greedy continued after additions: the previous r_n² less 2% (with more samples of the same
# kind the greedy ends at about the same radius; a wrong guess costs the passes from there, never the picks).
RADIUS_SLACK = 0.98


@dataclass(frozen=True)
class UniqueState:
    """What ``extend_unique`` needs from a k-center run (n picks, N samples, D dimensions; module docstring).

    ``mean`` [D] float64 of the prepared vectors; ``count`` N; ``picks`` [n, D] float32 the picks' prepared
    vectors in pick order; ``near_mean`` [K, D] float32 the prepared vectors of the K samples nearest to the
    mean, the first pick first; ``beyond`` a lower bound of every other sample's distance to the mean
    (inf when there is none); ``radius`` r_n², the last pick's squared distance to the picks before it
    (float32; inf for n = 1), the pruning guess of a greedy that continues after additions.
    """

    mean: np.ndarray
    count: int
    picks: np.ndarray
    near_mean: np.ndarray
    beyond: float
    radius: float

    def to_bytes(self) -> bytes:
        """An ``.npz`` of the arrays (no pickle)."""
        blob = io.BytesIO()
        np.savez(blob, mean=self.mean, count=np.int64(self.count), picks=self.picks, near_mean=self.near_mean,
                 beyond=np.float64(self.beyond), radius=np.float64(self.radius))
        return blob.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> UniqueState:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return cls(arrays["mean"], int(arrays["count"]), arrays["picks"], arrays["near_mean"],
                       float(arrays["beyond"]), float(arrays["radius"]))


def _rounding_margin(dim: int, sq_scale: float) -> float:
    """Bound of the float32 greedy's error on a squared distance between vectors of squared norm ≤ sq_scale."""
    return max(NEAR_TIE, 4 * dim * float(np.finfo(np.float32).eps) / 2) * sq_scale


def _sq_dist_rows(x: np.ndarray, sq_norms: np.ndarray, row: np.ndarray) -> np.ndarray:
    """‖x_i − row‖² for every row of x in float32. ``np.einsum``, not BLAS: a BLAS product's bits for one row
    depend on the matrix's shape, einsum's do not, so a row's distance is the same in any subset of rows."""
    dist = np.einsum("ij,j->i", x, row)
    dist *= -2.0
    dist += sq_norms
    dist += np.einsum("j,j->", row, row)
    return np.maximum(dist, 0.0, out=dist)


def _exact_sq_dist(x: np.ndarray, point: np.ndarray, block: int = 65536) -> np.ndarray:
    """‖x_i − point‖² in float64 from the differences (no cancellation), ``block`` rows at a time."""
    out = np.empty(len(x))
    for lo in range(0, len(x), block):
        diff = x[lo:lo + block].astype(np.float64) - point
        out[lo:lo + block] = np.einsum("ij,ij->i", diff, diff)
    return out


def find_unique_state(vectors: np.ndarray, n: int, *, metric: str = "cosine", leading: Sequence[int] = (),
                      radius_guess: float | None = None) -> tuple[np.ndarray, UniqueState]:
    """Indices of ``n`` samples spread over ``vectors`` [N, D] (k-center greedy, in pick order) and the state
    ``extend_unique`` needs to update them after additions (module docstring).

    ``leading``: indices known to be the greedy's first picks (from ``extend_unique``); the greedy then
    rebuilds its nearest-distance array from them and continues after them. Each pick is one pass over the
    vectors still in play: ‖x_i − c‖² = ‖x_i‖² − 2·x_i·c + ‖c‖² in float32, updated in place, so n picks
    cost at most n·N·D multiply-adds; N·D·4 bytes. The first pick's distances to the mean are float64.

    Pruning (exact): the radii r_j never grow, so a sample whose nearest-pick distance falls below the last
    radius r_n can never be picked again. With a guess L ≤ r_n² (``radius_guess``; by default the last
    radius² of the greedy over every PRUNE_STRIDE-th sample, which covers fewer, closer samples) the passes
    drop the samples below L; if a step's largest distance falls below L the guess was wrong and the greedy
    continues from that step over all samples, so the picks never depend on the guess.
    """
    x = knn_index.prepare(vectors, metric=metric).astype(np.float32, copy=False)
    if not 1 <= n <= len(x):
        raise ValueError(f"n={n} must be between 1 and the {len(x)} samples")
    if len(leading) > n:
        raise ValueError(f"{len(leading)} leading picks are more than n={n}")
    sq_norms = np.einsum("ij,ij->i", x, x)
    mean = x.mean(axis=0, dtype=np.float64)
    near, beyond = _nearest_to_mean(x, sq_norms, mean)
    picked = [int(leading[0]) if len(leading) else int(near[0])]
    near = np.concatenate([[picked[0]], near[near != picked[0]]])[:MEAN_CANDIDATES]
    if radius_guess is None and not len(leading) and len(x) >= PRUNE_MIN_SAMPLES and len(x) >= 4 * n * PRUNE_STRIDE:
        radius_guess = find_unique_state(x[::PRUNE_STRIDE], n, metric="l2", radius_guess=np.inf)[1].radius
    prune = radius_guess is not None and np.isfinite(radius_guess)
    rows, xs, norms = np.arange(len(x)), x, sq_norms  # the samples still in play
    nearest = _sq_dist_rows(xs, norms, x[picked[0]])
    nearest[picked[0]] = -1.0  # never picked twice, even among exact duplicates (the minimum keeps it)
    radius = np.inf
    for step in range(1, n):
        if step < len(leading):
            at = int(np.searchsorted(rows, leading[step]))
            wrong_guess = at == len(rows) or rows[at] != leading[step]  # a known pick was dropped
        else:
            at = int(np.argmax(nearest))
            wrong_guess = prune and nearest[at] < radius_guess  # a dropped sample may be the farthest
        if wrong_guess:
            return find_unique_state(vectors, n, metric=metric, leading=list(picked) + list(leading[step:]),
                                     radius_guess=np.inf)
        radius = float(nearest[at])
        picked.append(int(rows[at]))
        np.minimum(nearest, _sq_dist_rows(xs, norms, x[picked[-1]]), out=nearest)
        nearest[at] = -1.0
        if prune and step % PRUNE_EVERY == 0:
            keep = nearest >= radius_guess
            if keep.sum() < PRUNE_KEEP * len(keep):
                rows, xs, norms, nearest = rows[keep], xs[keep], norms[keep], nearest[keep]
    picked = np.asarray(picked, dtype=np.int64)
    return picked, UniqueState(mean, len(x), x[picked].copy(), x[near].copy(), beyond, radius)


def find_unique(vectors: np.ndarray, n: int, *, metric: str = "cosine") -> np.ndarray:
    """Indices of ``n`` samples spread over ``vectors`` [N, D] (k-center greedy, in pick order; module docstring)."""
    return find_unique_state(vectors, n, metric=metric)[0]


def _nearest_to_mean(x: np.ndarray, sq_norms: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, float]:
    """The MEAN_CANDIDATES samples nearest to the float64 ``mean`` (nearest first, by float64 distance) and a
    lower bound of the others' distance. One float32 pass finds the candidates; their distances are then
    computed again in float64, and the nearest is exact unless a sample left out could be within float32
    rounding of it (then every distance is computed in float64)."""
    to_mean = _sq_dist_rows(x, sq_norms, mean.astype(np.float32))
    margin = 2 * _rounding_margin(x.shape[1], max(float(sq_norms.max()), float(mean @ mean)))
    if len(x) <= MEAN_CANDIDATES:
        near, rest = np.arange(len(x)), np.inf
    else:
        part = np.argpartition(to_mean, MEAN_CANDIDATES)
        near, rest = part[:MEAN_CANDIDATES], float(to_mean[part[MEAN_CANDIDATES]]) - margin
    exact = _exact_sq_dist(x[near], mean)
    if exact.min() >= rest:
        exact = _exact_sq_dist(x, mean)
        near = np.argsort(exact, kind="stable")[:MEAN_CANDIDATES + 1]
        near, rest, exact = near[:MEAN_CANDIDATES], exact[near[MEAN_CANDIDATES:]].min(initial=np.inf), exact[near[:MEAN_CANDIDATES]]
    order = np.lexsort((near, exact))  # ties to the first index, as the greedy's
    beyond = float(np.sqrt(max(rest, 0.0))) * (1 - MEAN_TIE)
    return near[order], beyond


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] squared distances in float64."""
    a, b = a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)
    return np.maximum((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :], 0.0)


def extend_unique(state: UniqueState, new_vectors: np.ndarray, *, metric: str = "cosine",
                  block: int = 8192) -> tuple[int, UniqueState | None]:
    """The first step (1-based) whose pick may change when ``new_vectors`` [M, D] join the samples of ``state``.

    Returns (n + 1, the new state) when all n picks stay the greedy's; (j, None) when the greedy must run
    again from step j ≥ 2 with the first j − 1 picks as ``leading``; (1, None) when it must run in full.
    Checks (a) and (b) of the module docstring, in float64 with the rounding margins; O(M·(n + K)·D) time,
    the new vectors in blocks of ``block`` rows (memory O(block·n)).
    """
    picks = state.picks.astype(np.float64)
    n, dim = picks.shape
    if len(new_vectors) == 0:
        return n + 1, state
    v = knn_index.prepare(new_vectors, metric=metric)
    if v.shape[1] != dim:
        raise ValueError(f"new vectors have {v.shape[1]} dimensions, the unique run's picks {dim}")
    count = state.count + len(v)
    mean = (state.count * state.mean + v.sum(axis=0, dtype=np.float64)) / count
    sq_scale = max(float(np.einsum("ij,ij->i", picks, picks).max()), float(mean @ mean), float(state.mean @ state.mean),
                   float(np.einsum("ij,ij->i", v, v, dtype=np.float64).max()),
                   float(np.einsum("ij,ij->i", state.near_mean, state.near_mean, dtype=np.float64).max()))
    margin = 2 * _rounding_margin(dim, sq_scale)
    # (a) the first pick: the saved candidates (first pick first) and the new vectors, against the old rest
    others_bound = state.beyond - float(np.linalg.norm(mean - state.mean))
    candidates = np.vstack([state.near_mean, v])
    to_mean = _exact_sq_dist(candidates, mean)
    first = float(to_mean[0]) + MEAN_TIE * sq_scale
    if others_bound <= 0 or others_bound ** 2 <= first or float(to_mean[1:].min(initial=np.inf)) <= first:
        return 1, None
    # (b) radius r_j² = min_{l<j} d²(s_j, s_l); reach_j = max_v min_{l<j} d²(v, s_l)
    between = _sq_dist(picks, picks)
    radius = np.array([np.inf] + [between[j, :j].min() for j in range(1, n)])
    reach = np.full(n, -np.inf)
    for lo in range(0, len(v), block):
        nearest_so_far = np.minimum.accumulate(_sq_dist(v[lo:lo + block], picks), axis=1)
        reach[1:] = np.maximum(reach[1:], nearest_so_far[:, :-1].max(axis=0))
    overtaken = np.flatnonzero(reach[1:] >= radius[1:] - margin)
    if overtaken.size:
        return int(overtaken[0]) + 2, None
    order = np.concatenate([[0], 1 + np.argsort(to_mean[1:], kind="stable")])
    kept, dropped = order[:MEAN_CANDIDATES], order[MEAN_CANDIDATES:]
    beyond = min(others_bound, float(np.sqrt(to_mean[dropped].min(initial=np.inf))) * (1 - MEAN_TIE))
    return n + 1, UniqueState(mean, count, state.picks, candidates[kept].astype(np.float32), beyond, state.radius)


def _grey(image: np.ndarray, size: int) -> np.ndarray:
    img = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("L")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def aligned_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """ncc(a, b) of two images (H×W[×3] uint8) after the best small rescale and shift of b, in [−1, 1]."""
    n, m, r = VERIFY_SIZE, VERIFY_BORDER, VERIFY_SHIFT
    w = n - 2 * m
    ga = ndimage.uniform_filter(_grey(a, n), 3)[m:m + w, m:m + w]
    ga = ga - ga.mean()
    ga /= np.linalg.norm(ga) or 1.0
    gb = _grey(b, n)
    best = -1.0
    for scale in SCALES:
        size = round(n * scale)
        bs = np.asarray(Image.fromarray(gb).resize((size, size), Image.Resampling.BILINEAR), np.float32)
        bs = ndimage.uniform_filter(bs, 3)
        o = (size - n) // 2 + m
        windows = np.lib.stride_tricks.sliding_window_view(bs[o - r:o + w + r, o - r:o + w + r], (w, w))
        centred = windows - windows.mean(axis=(2, 3), keepdims=True)
        num = np.einsum("ijkl,kl->ij", centred, ga)
        den = np.sqrt(np.einsum("ijkl,ijkl->ij", centred, centred))
        best = max(best, float(np.max(np.divide(num, den, out=np.zeros_like(num), where=den > 0))))
    return best


def find_duplicate_images(images: Sequence[np.ndarray], vectors: np.ndarray, *, metric: str = "cosine",
                          k: int = DEFAULT_K, candidate_thresh: float = CANDIDATE_THRESH,
                          descriptor_thresh: float = near_duplicates.DESCRIPTOR_THRESH,
                          min_corr: float = near_duplicates.MIN_CORR, verifier: str = "geometric",
                          flips: bool = False, grouping: str = "greedy") -> dict[int, list[tuple[int, float]]]:
    """Near-duplicate images: candidate pairs verified on pixels (module docstring).

    ``vectors[i]`` is the embedding of ``images[i]``. ``verifier="geometric"`` (default):
    embedding and blurred-thumbnail candidates, similarity-transform verification,
    distance 1 − ncc, grouped at 1 − min_corr. ``verifier="aligned"``: the previous path,
    embedding candidates kept when ``aligned_similarity`` ≥ ``MIN_NCC``, distances are
    embedding distances, grouped at ``candidate_thresh``.
    """
    if len(images) != len(vectors):
        raise ValueError(f"{len(images)} images but {len(vectors)} vectors")
    if verifier not in ("geometric", "aligned"):
        raise ValueError(f"verifier must be 'geometric' or 'aligned', got {verifier!r}")
    n = len(vectors)
    if n < 2:
        return {}
    edges = [candidate_pairs(*_knn_edges(vectors, min(k, n - 1), metric), candidate_thresh)]
    if verifier == "aligned":
        src, dst, d = edges[0]
        ok = np.array([aligned_similarity(images[i], images[j]) >= MIN_NCC for i, j in zip(src, dst)], bool)
        return as_neighbors_map(*group_duplicates(n, src[ok], dst[ok], d[ok].astype(np.float64), candidate_thresh,
                                                  grouping=grouping))
    edges.append(_descriptor_edges(images, descriptor_thresh, flips=flips))
    src, dst = (np.concatenate(side) for side in zip(*(e[:2] for e in edges)))
    src, dst, _ = candidate_pairs(src, dst, np.zeros(src.size), 0.0)
    matches = near_duplicates.verify_pairs([images[i] for i in src], [images[j] for j in dst], min_corr=min_corr,
                                           flips=flips)
    ok = np.array([m.passed for m in matches], bool)
    distance = 1.0 - np.array([m.ncc for m in matches], np.float64)
    return as_neighbors_map(*group_duplicates(n, src[ok], dst[ok], np.maximum(distance[ok], 0.0), 1.0 - min_corr,
                                              grouping=grouping))


def _descriptor_edges(images: Sequence[np.ndarray], thresh: float, *,
                      flips: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    descriptors = near_duplicates.blurred_thumbnails(images)
    mirrored = near_duplicates.blurred_thumbnails([img[:, ::-1] for img in images]) if flips else None
    return descriptor_pairs(descriptors, thresh, mirrored=mirrored)


def descriptor_pairs(descriptors: np.ndarray, thresh: float, *, mirrored: np.ndarray | None = None,
                     k: int = near_duplicates.DESCRIPTOR_K) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs (i < j, distance) from the kNN graph of blurred-thumbnail ``descriptors`` [N, 192].

    With ``mirrored`` (the descriptors of the mirrored images) those join the graph as rows
    N…2N−1 and count for the image they mirror, so a flipped copy meets its original.
    """
    n = len(descriptors)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    if mirrored is not None and mirrored.shape != descriptors.shape:
        raise ValueError(f"mirrored descriptors {mirrored.shape} must match descriptors {descriptors.shape}")
    both = descriptors if mirrored is None else np.concatenate([descriptors, mirrored])
    src, dst, dist = _knn_edges(both, min(k, len(both) - 1), "cosine")
    return candidate_pairs(src % n, dst % n, dist, thresh)


def _knn_edges(vectors: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dist, ids = knn_index.self_knn(vectors, k, metric=metric)
    return np.repeat(np.arange(len(vectors)), ids.shape[1]), ids.reshape(-1), dist.reshape(-1)


def candidate_pairs(src: np.ndarray, dst: np.ndarray, dist: np.ndarray,
                    thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected edges (i < j) with distance ≤ thresh, each once."""
    src, dst, dist = np.asarray(src), np.asarray(dst), np.asarray(dist)
    close = (dist <= thresh) & (src != dst)
    lo, hi, d = np.minimum(src, dst)[close], np.maximum(src, dst)[close], dist[close]
    _, first = np.unique(lo * (int(max(src.max(initial=0), dst.max(initial=0))) + 1) + hi, return_index=True)
    return lo[first], hi[first], d[first]
