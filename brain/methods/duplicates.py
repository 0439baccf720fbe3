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
it (Gonzalez 1985). Cost O(n·N·D), memory O(N·D).
"""

from __future__ import annotations

from collections.abc import Sequence

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


def find_unique(vectors: np.ndarray, n: int, *, metric: str = "cosine") -> np.ndarray:
    """Indices of ``n`` samples spread over ``vectors`` [N, D] (k-center greedy, in pick order).

    Each pick is one pass over the vectors: ‖x_i − c‖² = ‖x_i‖² − 2·x_i·c + ‖c‖² for every i (a float32
    matrix-vector product, updated in place), so n picks cost n·N·D multiply-adds and N·D·4 bytes.
    """
    x = knn_index.prepare(vectors, metric=metric).astype(np.float32, copy=False)
    if not 1 <= n <= len(x):
        raise ValueError(f"n={n} must be between 1 and the {len(x)} samples")
    sq_norms = np.einsum("ij,ij->i", x, x)

    def sq_dist_to(row: np.ndarray) -> np.ndarray:
        dist = x @ row
        dist *= -2.0
        dist += sq_norms
        dist += row @ row
        return np.maximum(dist, 0.0, out=dist)

    picked = [int(np.argmin(sq_dist_to(x.mean(axis=0))))]
    nearest = sq_dist_to(x[picked[0]])
    for _ in range(n - 1):
        nearest[picked[-1]] = -1.0  # never picked twice, even among exact duplicates (the minimum keeps it)
        picked.append(int(np.argmax(nearest)))
        np.minimum(nearest, sq_dist_to(x[picked[-1]]), out=nearest)
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
