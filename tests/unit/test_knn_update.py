"""The incremental update's kernels (what every shard actor applies to its rows) against a full rebuild."""

import numpy as np
import pytest

from brain import index


def _graph(vectors, k):
    idx = index.build_index(vectors, gpu=False)
    return index.knn_graph(idx, vectors, np.arange(len(vectors)), k, metric="cosine")


@pytest.mark.parametrize("seed", [0, 1])
def test_affected_rows_searched_and_the_rest_merged_equal_a_full_rebuild(seed):
    rng = np.random.default_rng(seed)
    k, n_old = 5, 300
    old = rng.normal(size=(n_old, 16)).astype(np.float32)
    old_dist, old_nbr = _graph(old, k)
    # remove rows 0..9, change rows 10..14, add 20 new rows
    kept = np.arange(10, n_old)
    vectors = np.concatenate([old[kept], rng.normal(size=(20, 16)).astype(np.float32)])
    vectors[:5] = rng.normal(size=(5, 16))
    fresh = np.zeros(len(vectors), bool)
    fresh[:5] = True
    fresh[-20:] = True
    new_row_of_old = np.full(n_old, -1)
    new_row_of_old[kept] = np.arange(len(kept))
    old_rows = np.full((len(vectors), k), -1)
    old_d = np.zeros((len(vectors), k), np.float32)
    old_rows[: len(kept)] = new_row_of_old[old_nbr[kept]]
    old_d[: len(kept)] = old_dist[kept]

    full = index.affected_rows(old_rows, fresh, stale=fresh)
    searched = np.flatnonzero(full)
    dist, rows = np.empty((len(vectors), k), np.float32), np.empty((len(vectors), k), np.int64)
    dist[searched], rows[searched] = index.knn_graph(index.build_index(vectors, gpu=False), vectors[searched],
                                                     searched, k, metric="cosine")
    others, fresh_rows = np.flatnonzero(~full), np.flatnonzero(fresh)
    fd, fi = index.search(index.build_index(vectors[fresh_rows], gpu=False), vectors[others], k, metric="cosine")
    dist[others], rows[others] = index.merge_with_fresh(old_d[others], old_rows[others], fd, fresh_rows[fi], k)

    full_dist, full_rows = _graph(vectors, k)
    np.testing.assert_allclose(dist, full_dist, atol=1e-5)
    assert (rows == full_rows).mean() > 0.99  # equal up to ties
    assert 25 <= searched.size < len(vectors) // 2  # fresh rows and those that lost a neighbour only


def test_a_row_whose_list_lost_a_neighbour_is_affected():
    old_rows = np.array([[1, 2], [0, 2], [0, 1], [-1, 0]])
    stale = np.array([False, False, True, False])
    fresh = np.array([False, False, False, False])
    assert index.affected_rows(old_rows, fresh, stale).tolist() == [True, True, False, True]


def test_distinct_positions_are_distinct_and_in_range():
    from jobs.neighbors import distinct_positions

    rng = np.random.default_rng(0)
    for n, m in ((10, 10), (1000, 30), (10**9, 5000)):
        got = distinct_positions(n, m, rng)
        assert len(got) == m and len(np.unique(got)) == m and got.min() >= 0 and got.max() < n


def _decaying(rng, n, d=24, modes=6):
    """Vectors with a decaying spectrum around overlapping modes (as real embeddings)."""
    scale = 1.0 / np.sqrt(np.arange(1, d + 1))
    centres = rng.normal(size=(modes, d)) * scale * 1.5
    return (centres[rng.integers(0, modes, n)] + rng.normal(size=(n, d)) * scale).astype(np.float32)


def _ivf(vectors, nlist):
    spec = index.IndexSpec("ivf_flat", "l2", nlist=nlist, nprobe=1, train_size=len(vectors))
    empty = index.train_empty_index(vectors, spec)
    empty.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
    return empty


def test_nearest_fresh_probing_every_list_is_exact_and_without_lists_is_brute_force():
    rng = np.random.default_rng(3)
    vectors = _decaying(rng, 2000)
    fresh_rows = np.arange(1900, 2000)
    old = np.arange(1900)
    exact_sq, exact_local = index.faiss.knn(vectors[old], vectors[fresh_rows], 5)
    ivf = _ivf(vectors, nlist=32)
    ids, lists = index.ivf_lists(ivf)
    list_of = np.empty(len(vectors), np.int64)
    list_of[ids] = lists
    assert index.ivf_lists(index.build_index(vectors, metric="l2", gpu=False)) is None
    for idx, old_lists, nprobe in ((ivf, list_of[old], 32), (ivf, None, 4)):
        sq, rows = index.nearest_fresh(idx, vectors[old], old_lists, vectors[fresh_rows], fresh_rows, 5,
                                       nprobe=nprobe)
        np.testing.assert_allclose(sq, exact_sq, rtol=1e-4, atol=1e-4)
        assert (rows == fresh_rows[exact_local]).mean() > 0.99  # equal up to ties


def test_nearest_fresh_probing_from_the_fresh_side_is_as_good_as_an_ivf_search_from_the_rows():
    """The reverse probe finds v for row x when x's list is among v's nprobe nearest; an IVF search
    from x finds v when v's list is among x's: on the same lists their recalls are alike."""
    rng = np.random.default_rng(4)
    vectors = _decaying(rng, 6000)
    fresh_rows = np.arange(5700, 6000)
    old = np.arange(5700)
    _, exact_local = index.faiss.knn(vectors[old], vectors[fresh_rows], 5)
    exact = fresh_rows[exact_local]
    ivf = _ivf(vectors, nlist=64)
    ids, lists = index.ivf_lists(ivf)
    list_of = np.empty(len(vectors), np.int64)
    list_of[ids] = lists
    _, reverse = index.nearest_fresh(ivf, vectors[old], list_of[old], vectors[fresh_rows], fresh_rows, 5, nprobe=8)
    forward = _ivf(vectors, nlist=64)  # the same lists: same training data, FAISS k-means seeds fixed
    forward.reset()
    forward.add_with_ids(vectors[fresh_rows], fresh_rows)
    forward.nprobe = 8
    _, found = forward.search(vectors[old], 5)
    reverse_recall, forward_recall = index.recall_at_k(reverse, exact), index.recall_at_k(found, exact)
    assert reverse_recall > 0.85
    assert abs(reverse_recall - forward_recall) < 0.05
