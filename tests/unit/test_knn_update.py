import numpy as np
import pytest

from brain import index


def _graph(vectors, k):
    idx = index.build_index(vectors, gpu=False)
    return index.knn_graph(idx, vectors, np.arange(len(vectors)), k, metric="cosine")


@pytest.mark.parametrize("seed", [0, 1])
def test_update_equals_a_full_rebuild(seed):
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
    dist, rows, searched = index.update_knn_graph(vectors, fresh, old_rows, old_d, k, metric="cosine")
    full_dist, full_rows = _graph(vectors, k)
    np.testing.assert_allclose(dist, full_dist, atol=1e-5)
    assert (rows == full_rows).mean() > 0.99  # equal up to ties
    assert 25 <= searched < len(vectors) // 2  # fresh rows and those that lost a neighbour only


def test_update_validates_shapes():
    with pytest.raises(ValueError, match="old_rows/old_dist"):
        index.update_knn_graph(np.zeros((4, 2), np.float32), np.zeros(4, bool), np.zeros((3, 2)),
                               np.zeros((3, 2)), 2, metric="cosine")
