import numpy as np
import pytest

from brain import index


def test_cosine_distances_are_one_minus_cosine():
    x = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=np.float32)
    idx = index.build_index(x, metric="cosine")
    dist, ids = index.search(idx, x[:1], 3, metric="cosine")
    assert ids[0].tolist() == [0, 2, 1]
    np.testing.assert_allclose(dist[0], [0.0, 1 - np.sqrt(0.5), 1.0], atol=1e-6)


def test_l2_distances_are_euclidean():
    x = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]], dtype=np.float32)
    dist, ids = index.search(index.build_index(x, metric="l2"), x[:1], 3, metric="l2")
    assert ids[0].tolist() == [0, 2, 1]
    np.testing.assert_allclose(dist[0], [0.0, 1.0, 5.0], atol=1e-6)


def test_knn_graph_excludes_self_even_when_a_duplicate_ties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    x[7] = x[3]  # exact duplicate: ties with self at distance 0
    idx = index.build_index(x, metric="l2")
    dist, ids = index.knn_graph(idx, x, np.arange(50), 5, metric="l2")
    assert ids.shape == (50, 5)
    assert not (ids == np.arange(50)[:, None]).any()
    assert ids[3, 0] == 7 and ids[7, 0] == 3 and dist[3, 0] == 0.0
    assert (np.diff(dist, axis=1) >= 0).all()


def test_knn_graph_matches_brute_force():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    dist, ids = index.knn_graph(index.build_index(x, metric="l2"), x, np.arange(200), 4, metric="l2")
    full = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.fill_diagonal(full, np.inf)
    np.testing.assert_array_equal(ids, np.argsort(full, axis=1)[:, :4])
    np.testing.assert_allclose(dist, np.sort(full, axis=1)[:, :4], rtol=1e-4)


def test_serialized_index_searches_the_same():
    x = np.random.default_rng(2).normal(size=(30, 4)).astype(np.float32)
    idx = index.build_index(x, metric="cosine")
    again = index.deserialize(index.serialize(idx))
    np.testing.assert_array_equal(index.search(idx, x, 3, metric="cosine")[1],
                                  index.search(again, x, 3, metric="cosine")[1])


@pytest.mark.parametrize("bad, match", [
    (np.zeros((0, 3)), "non-empty"),
    (np.array([[1.0, np.nan]]), "rows \\[0\\]"),
    (np.zeros(3), "non-empty \\[N, D\\]"),
])
def test_bad_vectors_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        index.build_index(bad, metric="l2")


def test_k_must_be_smaller_than_n():
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="k must be < N"):
        index.knn_graph(index.build_index(x, metric="l2"), x, np.arange(3), 3, metric="l2")


def test_unknown_metric():
    with pytest.raises(ValueError, match="metric must be one of"):
        index.prepare(np.eye(2), metric="manhattan")


def test_shards_merged_with_result_heap_equal_one_index():
    rng = np.random.default_rng(3)
    x = index.prepare(rng.normal(size=(600, 12)), metric="l2")
    one = index.build_index(x, metric="l2", gpu=False)
    empty = index.serialize(index.train_empty_index(x[:1], index.IndexSpec("flat", "l2")))
    shards = [index.deserialize(index.build_shard(empty, x[a:a + 200], np.arange(a, a + 200), metric="l2"))
              for a in (0, 200, 400)]
    merged = index.merge_partials([index.search_partial(s, x[:50], 7) for s in shards], 7)
    sq, ids = one.search(x[:50], 7)
    np.testing.assert_array_equal(merged[1], ids)
    np.testing.assert_allclose(merged[0], sq, rtol=1e-5)


def test_a_probe_left_short_is_searched_again_over_every_list():
    rng = np.random.default_rng(4)
    x = index.prepare(rng.normal(size=(400, 8)), metric="l2")
    spec = index.choose_spec(400, 8, metric="l2", kind="ivf_flat", nlist=100, nprobe=1)
    ivf = index.train_empty_index(x, spec)
    ivf.add_with_ids(x, np.arange(400))
    sq, ids = index.search_partial(ivf, x[:20], 30, nprobe=1)  # one list of ~4 rows cannot hold 30
    assert (ids >= 0).all() and np.isfinite(sq).all()
    assert _nprobe(ivf) == 1  # the setting is restored after the search


def test_shards_searched_with_lists_assigned_once_equal_each_finding_its_own():
    rng = np.random.default_rng(5)
    x = index.prepare(rng.normal(size=(3000, 16)) * (1.0 / np.sqrt(np.arange(1, 17))), metric="l2")
    spec = index.choose_spec(3000, 16, metric="l2", kind="ivf_flat", nlist=50, nprobe=4)
    blob = index.serialize(index.train_empty_index(x, spec))
    shards = [index.deserialize(index.build_shard(blob, x[a:a + 1000], np.arange(a, a + 1000), metric="l2"))
              for a in (0, 1000, 2000)]
    assigned = index.coarse_assign(shards[0], x[:200], 6)
    assert assigned[1].shape == (200, 6)
    shared = index.merge_partials([index.search_partial(s, x[:200], 10, assigned=assigned) for s in shards], 10)
    own = index.merge_partials([index.search_partial(s, x[:200], 10, nprobe=6) for s in shards], 10)
    np.testing.assert_array_equal(shared[1], own[1])
    np.testing.assert_allclose(shared[0], own[0], rtol=1e-5)
    assert _nprobe(shards[0]) == 4  # restored
    flat = index.build_index(x, metric="l2", gpu=False)
    assert index.coarse_assign(flat, x[:5], 6) is None  # nothing to assign: searched as before


def _nprobe(ivf):
    import faiss

    return faiss.extract_index_ivf(ivf).nprobe


def test_probe_schedule_doubles_to_the_cap_with_the_rerank_depth():
    assert index.probe_schedule(8, 1000, nprobe_max=50, refine=False) == [(8, 0), (16, 0), (32, 0), (50, 0)]
    assert index.probe_schedule(8, 20, nprobe_max=100, refine=True, k_factor_max=8) == [(8, 4), (16, 8), (20, 8)]


def test_drop_self_removes_the_query_or_the_farthest():
    ids = np.array([[5, 3, 9], [1, 2, 4]])
    dist = np.array([[0.0, 0.1, 0.2], [0.1, 0.2, 0.3]], np.float32)
    d, i = index.drop_self(dist, ids, np.array([3, 7]))
    assert i.tolist() == [[5, 9], [1, 2]] and d.tolist() == [[0.0, np.float32(0.2)], [np.float32(0.1), np.float32(0.2)]]
