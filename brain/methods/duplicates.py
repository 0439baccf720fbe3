"""Near-duplicates, exact duplicates and unique subsets from embeddings (arrays in, arrays out).

Near-duplicates. Let G_t be the kNN graph (each sample's k nearest others, self
excluded) keeping only the edges with distance d(i, j) ≤ t. A duplicate group is a
connected component of G_t with two or more members. The kept sample of a group
is its lowest index (lowest sample id in the lake jobs: the same rule as min-label
propagation), every other member is a duplicate, listed with the distance to its
nearest group member in G_t (≤ t):

    neighbors_map = {kept: [(duplicate, min_{j ∈ group, (dup, j) ∈ G_t} d(dup, j)), …]}

Threshold. ``thresh`` in distance units (cosine: 1 − cos). With ``fraction`` f the
threshold is chosen, as FiftyOne does, so that about f·N samples are duplicates:
the number of duplicates at t is N − #components(G_t) = #{edges of a minimum
spanning forest F of the kNN graph with weight ≤ t}, so t = the ⌈f·N⌉-th smallest
weight of F (exact for the kNN graph). With neither, ``DEFAULT_THRESH`` = 0.1 (cosine):
on real photo tiles with the default ``thumbnail`` embeddings it takes every copy
with noise ±8 grey levels, brightness ×0.85 or JPEG quality 50, but a 2-pixel shift
or a 5% crop of a textured tile can move the embedding farther (up to 0.32) than
distinct tiles lie (from 0.15): for images, verify candidates (below).

Verification on aligned pixels (``aligned_similarity``), for candidates from the
embedding graph. Both images are made 96×96 grey and smoothed (3×3 box); the
candidate b is rescaled by s ∈ SCALES about its centre and shifted by
(dy, dx) ∈ [−3, 3]²; the score is the best normalised cross-correlation of the
central window W (a 8-pixel border left out) over those transforms:

    ncc(a, b) = max_{s, dy, dx} ⟨A_W − mean, B_{s,dy,dx,W} − mean⟩ / (‖·‖ ‖·‖)

Brightness and contrast changes cancel (mean and scale removed), the smoothing
absorbs noise and JPEG artefacts, the search absorbs small shifts and crops.

Default for images (``find_duplicate_images``, the lake's near-duplicates job):
candidate pairs are the kNN edges with embedding distance ≤ CANDIDATE_THRESH (0.5),
kept when ncc ≥ MIN_NCC (0.92). Measured on real photo tiles (thumbnail
embeddings): every noise/brightness/shift/crop copy and 39/40 JPEG copies found,
2 false pairs among the 3 nearest distinct tiles of 381 (tests/quality).

Exact duplicates: samples whose files have the same content hash (sha256); the kept
sample is the lowest index, the distance 0.

Unique subset (``find_unique``): the k-center greedy (farthest-point) selection.
Start from the sample nearest the mean; then repeatedly add the sample whose
distance to the selected set is largest:

    s_1 = argmin_i d(x_i, x̄),   s_{m+1} = argmax_i min_{j ≤ m} d(x_i, x_{s_j})

a 2-approximation of the subset minimising the largest distance of any sample to
it (Gonzalez 1985). Cost O(n·N·D), memory O(N·D).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from brain import index as knn_index

DEFAULT_THRESH = 0.1  # cosine distance 1 − cos, embeddings only; see the module docstring
DEFAULT_K = 10
CANDIDATE_THRESH = 0.5  # embedding distance of the pairs verified on pixels
MIN_NCC = 0.92  # aligned normalised cross-correlation of a verified duplicate
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


def resolve_threshold(*, thresh: float | None, fraction: float | None, verify: bool,
                      candidate_thresh: float = CANDIDATE_THRESH) -> tuple[float | None, bool]:
    """(edge threshold, verify on pixels?) from the options; None: compute it from ``fraction``.

    fraction → (None, False); thresh → (thresh, verify); neither → (candidate_thresh,
    True) when verifying, else (DEFAULT_THRESH, False).
    """
    if thresh is not None and fraction is not None:
        raise ValueError("give thresh or fraction, not both")
    if fraction is not None:
        return None, False
    if thresh is not None:
        return thresh, verify
    return (candidate_thresh, True) if verify else (DEFAULT_THRESH, False)


def group_duplicates(n: int, src: np.ndarray, dst: np.ndarray, dist: np.ndarray,
                     thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Duplicates in the graph at ``thresh``: arrays (kept, duplicate, distance), one row per duplicate."""
    if not np.isfinite(thresh) or thresh < 0:
        raise ValueError(f"thresh must be a finite distance >= 0, got {thresh}")
    src, dst, dist = _check_edges(n, src, dst, dist)
    close = dist <= thresh
    src, dst, dist = src[close], dst[close], dist[close]
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


def as_neighbors_map(kept: np.ndarray, dup: np.ndarray, dist: np.ndarray) -> dict[int, list[tuple[int, float]]]:
    """{kept: [(duplicate, distance), …]}, duplicates nearest first."""
    out: dict[int, list[tuple[int, float]]] = {}
    for k_, d_, s_ in sorted(zip(kept.tolist(), dist.tolist(), dup.tolist())):
        out.setdefault(k_, []).append((s_, d_))
    return out


def find_duplicates(vectors: np.ndarray, thresh: float | None = None, fraction: float | None = None, *,
                    metric: str = "cosine", k: int = DEFAULT_K) -> dict[int, list[tuple[int, float]]]:
    """Near-duplicate groups of ``vectors`` [N, D] as a neighbors_map (see the module docstring).

    The kNN graph is FAISS's (``brain.index.self_knn``: exact below its flat
    threshold, IVF above). Give ``thresh`` or ``fraction``, not both; neither:
    ``DEFAULT_THRESH``.
    """
    thresh, _ = resolve_threshold(thresh=thresh, fraction=fraction, verify=False)
    n = len(vectors)
    if n < 2:
        return {}
    dist, ids = knn_index.self_knn(vectors, min(k, n - 1), metric=metric)
    src = np.repeat(np.arange(n), ids.shape[1])
    edges = (src, ids.reshape(-1), dist.reshape(-1).astype(np.float64))
    if fraction is not None:
        thresh = threshold_for_fraction(n, *edges, fraction)
    return as_neighbors_map(*group_duplicates(n, *edges, thresh))


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


def find_unique(vectors: np.ndarray, n: int, *, metric: str = "cosine") -> np.ndarray:
    """Indices of ``n`` samples spread over ``vectors`` [N, D] (k-center greedy, in pick order)."""
    x = knn_index.prepare(vectors, metric=metric).astype(np.float64)
    if not 1 <= n <= len(x):
        raise ValueError(f"n={n} must be between 1 and the {len(x)} samples")
    sq_norms = np.einsum("ij,ij->i", x, x)

    def sq_dist_to(row: np.ndarray) -> np.ndarray:
        return np.maximum(sq_norms - 2.0 * (x @ row) + row @ row, 0.0)

    picked = [int(np.argmin(sq_dist_to(x.mean(axis=0))))]
    nearest = sq_dist_to(x[picked[0]])
    for _ in range(n - 1):
        nearest[picked] = -1.0  # never picked twice, even among exact duplicates
        picked.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, sq_dist_to(x[picked[-1]]))
    return np.asarray(picked, dtype=np.int64)


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
                          min_ncc: float = MIN_NCC) -> dict[int, list[tuple[int, float]]]:
    """Near-duplicate images: embedding candidates (≤ candidate_thresh) verified on aligned pixels.

    ``vectors[i]`` is the embedding of ``images[i]``. Groups are the connected
    components of the verified pairs; distances are embedding distances.
    """
    if len(images) != len(vectors):
        raise ValueError(f"{len(images)} images but {len(vectors)} vectors")
    n = len(vectors)
    if n < 2:
        return {}
    dist, ids = knn_index.self_knn(vectors, min(k, n - 1), metric=metric)
    src, dst, d = np.repeat(np.arange(n), ids.shape[1]), ids.reshape(-1), dist.reshape(-1)
    src, dst, d = candidate_pairs(src, dst, d, candidate_thresh)
    ok = np.array([aligned_similarity(images[i], images[j]) >= min_ncc for i, j in zip(src, dst)], bool)
    return as_neighbors_map(*group_duplicates(n, src[ok], dst[ok], d[ok].astype(np.float64), candidate_thresh))


def candidate_pairs(src: np.ndarray, dst: np.ndarray, dist: np.ndarray,
                    thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected edges (i < j) with distance ≤ thresh, each once."""
    src, dst, dist = np.asarray(src), np.asarray(dst), np.asarray(dist)
    close = (dist <= thresh) & (src != dst)
    lo, hi, d = np.minimum(src, dst)[close], np.maximum(src, dst)[close], dist[close]
    _, first = np.unique(lo * (int(max(src.max(initial=0), dst.max(initial=0))) + 1) + hi, return_index=True)
    return lo[first], hi[first], d[first]
