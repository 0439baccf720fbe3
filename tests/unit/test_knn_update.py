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
