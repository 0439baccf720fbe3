import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components

from brain import index
from brain.methods import duplicates


def clustered(n, d=16, centres=20, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d))
    return (c[rng.integers(0, centres, n)] + spread * rng.normal(size=(n, d))).astype(np.float32)


def with_copies(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    copies = rng.choice(300, 30, replace=False)
    noisy = x[copies] + 0.01 * rng.normal(size=(30, 12)).astype(np.float32)
    return np.vstack([x, noisy, x[copies[:3]]]), copies


def test_components_grouping_gives_the_components_of_the_thresholded_graph():
    x, copies = with_copies()
    found = duplicates.find_duplicates(x, thresh=0.01, grouping="components")
    # exact reference: components of all pairs within the threshold
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = 1 - xn @ xn.T
    np.fill_diagonal(dist, np.inf)
    _, labels = connected_components(dist <= 0.01, directed=False)
    expected = {}
    for i, lab in enumerate(labels):
        expected.setdefault(lab, []).append(i)
    expected = {min(m): sorted(set(m) - {min(m)}) for m in expected.values() if len(m) > 1}
    assert {k: sorted(d for d, _ in v) for k, v in found.items()} == expected
    assert set(found) == set(copies.tolist())  # the originals (lowest index) are kept
    assert all(0 <= dist_ <= 0.01 for v in found.values() for _, dist_ in v)


def chain(gap: float):
    """Unit vectors A, B, C on an arc: d(A,B) = d(B,C) = 1 − cos(gap), d(A,C) = 1 − cos(2·gap); D far away."""
    angles = np.array([0.0, gap, 2 * gap, np.pi / 2])
    return np.stack([np.cos(angles), np.sin(angles), np.zeros(4)], axis=1).astype(np.float32)


def test_greedy_keeps_a_and_c_of_a_chain_a_b_c():
    gap = 0.2
    near, far = 1 - np.cos(gap), 1 - np.cos(2 * gap)
    thresh = (near + far) / 2  # A–B and B–C within, A–C beyond
    found = duplicates.find_duplicates(chain(gap), thresh=thresh)
    assert list(found) == [0] and [d for d, _ in found[0]] == [1]  # B is A's duplicate; C is kept
    assert found[0][0][1] == pytest.approx(near, abs=1e-6)  # the distance to the kept sample
    # components chain all three into one group
    grouped = duplicates.find_duplicates(chain(gap), thresh=thresh, grouping="components")
    assert {d for d, _ in grouped[0]} == {1, 2}
    # above d(A, C) the greedy kept set is A alone: B and C are both its duplicates, at their distance to A
    wide = duplicates.find_duplicates(chain(gap), thresh=far + 1e-3)
    assert [(d, round(dist, 6)) for d, dist in wide[0]] == [(1, round(near, 6)), (2, round(far, 6))]
    with pytest.raises(ValueError, match="grouping must be one of"):
        duplicates.find_duplicates(chain(gap), thresh=thresh, grouping="chains")


def test_greedy_kept_samples_are_farther_apart_than_thresh():
    x = clustered(600, d=8, centres=40, spread=0.15, seed=4)
    thresh = 0.02
    found = duplicates.find_duplicates(x, thresh=thresh, k=len(x) - 1)  # k = N − 1: the graph is complete
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = 1 - xn.astype(np.float64) @ xn.T.astype(np.float64)
    dups = {d: (k, dd) for k, v in found.items() for d, dd in v}
    kept = np.array([i for i in range(len(x)) if i not in dups])
    np.fill_diagonal(dist, np.inf)
    assert dist[np.ix_(kept, kept)].min() > thresh - 1e-5
    assert all(dist[d, k] <= thresh + 1e-5 and abs(dist[d, k] - dd) < 1e-4 for d, (k, dd) in dups.items())
    assert len(dups) > 50  # the set does have duplicates


def test_fraction_sets_the_number_of_duplicates():
    x, _ = with_copies(1)
    found = duplicates.find_duplicates(x, fraction=0.05, grouping="components")
    assert sum(len(v) for v in found.values()) == int(np.ceil(0.05 * len(x)))
    greedy = duplicates.find_duplicates(x, fraction=0.05)
    assert 0 < sum(len(v) for v in greedy.values()) <= int(np.ceil(0.05 * len(x)))
    with pytest.raises(ValueError, match="not both"):
        duplicates.find_duplicates(x, thresh=0.1, fraction=0.1)


def test_default_threshold_is_documented_and_used():
    x, _ = with_copies(2)
    assert duplicates.find_duplicates(x) == duplicates.find_duplicates(x, thresh=duplicates.DEFAULT_THRESH)


def test_exact_duplicates_by_hash():
    found = duplicates.exact_duplicates(np.array(["a", "b", "a", "c", "b", "a"]))
    assert found == {0: [(2, 0.0), (5, 0.0)], 1: [(4, 0.0)]}
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        duplicates.exact_duplicates(np.array(["a", None]))


def test_find_unique_spreads_over_clusters():
    rng = np.random.default_rng(3)
    centres = np.eye(6, 8, dtype=np.float32) * 10
    x = np.repeat(centres, 50, axis=0) + 0.05 * rng.normal(size=(300, 8)).astype(np.float32)
    picked = duplicates.find_unique(x, 6, metric="l2")
    assert len(set(picked.tolist())) == 6
    assert sorted(set((picked // 50).tolist())) == list(range(6))  # one per cluster
    with pytest.raises(ValueError, match="n=301"):
        duplicates.find_unique(x, 301)


def test_ivf_graph_recall_and_sharded_search_match_exact():
    x = clustered(6000)
    spec = index.choose_spec(len(x), x.shape[1], flat_threshold=1000)
    assert spec.kind == "ivf_flat" and spec.nlist > 1
    _, approx = index.self_knn(x, 10, spec=spec)
    _, exact = index.self_knn(x, 10, spec=index.IndexSpec("flat", "cosine"))
    assert index.recall_at_k(approx, exact) >= 0.95
    # flat shards holding disjoint rows give the exact graph once merged
    empty = index.serialize(index.train_empty_index(x[:1], index.IndexSpec("flat", "cosine")))
    shards = [index.deserialize(index.build_shard(empty, x[a:a + 2000], np.arange(a, a + 2000), metric="cosine"))
              for a in range(0, 6000, 2000)]
    _, merged = index.knn_graph(shards, x[:500], np.arange(500), 10, metric="cosine")
    assert index.recall_at_k(merged, exact[:500]) >= 0.999


def test_aligned_similarity_sees_through_shift_and_brightness_not_other_images():
    from tests.quality.tiles import TILE, photos

    camera = photos()[1]
    a = camera[100:100 + TILE, 100:100 + TILE]
    shifted = camera[102:102 + TILE, 102:102 + TILE]
    assert duplicates.aligned_similarity(a, np.round(shifted * 0.85).astype(np.uint8)) > 0.95
    assert duplicates.aligned_similarity(a, camera[300:300 + TILE, 300:300 + TILE]) < 0.9


def test_index_kind_follows_the_size():
    assert index.choose_spec(1000, 128).kind == "flat"
    ivf = index.choose_spec(1_000_000, 128)
    assert (ivf.kind, ivf.nlist, ivf.train_size) == ("ivf_flat", 4000, 160_000)
    pq = index.choose_spec(30_000_000, 128)
    assert (pq.kind, pq.pq_m, pq.refine_m) == ("ivf_pq", 32, 64)
    assert index.choose_spec(30_000_000, 15).refine_m == 5
    with pytest.raises(ValueError, match="refine_m=7"):
        index.choose_spec(100_000, 128, kind="ivf_pq", refine_m=7)
    with pytest.raises(ValueError, match="pq_m=5"):
        index.choose_spec(100_000, 128, kind="ivf_pq", pq_m=5)
    with pytest.raises(ValueError, match="index kind"):
        index.choose_spec(10, 4, kind="hnsw")


def test_ivf_pq_re_ranking_recovers_the_recall_compression_loses():
    x = clustered(20_000, d=32, centres=100, spread=0.5)
    _, exact = index.self_knn(x, 10, spec=index.IndexSpec("flat", "cosine"))
    recall = {}
    for refine_m in (0, None):
        spec = index.choose_spec(len(x), x.shape[1], kind="ivf_pq", refine_m=refine_m)
        # the sharded path: a trained empty index, shards filled under global row ids, searched together
        empty = index.serialize(index.train_empty_index(x[::2], spec))
        shards = [index.deserialize(index.build_shard(empty, x[a:a + 10_000], np.arange(a, a + 10_000),
                                                      metric="cosine")) for a in (0, 10_000)]
        _, found = index.knn_graph(shards, x, np.arange(len(x)), 10, metric="cosine")
        recall[spec.refine_m] = index.recall_at_k(found, exact)
    assert recall[16] >= 0.9 and recall[16] > recall[0] + 0.15, recall


def test_job_groups_verified_pairs_in_sample_id_order():
    import pyarrow as pa

    from jobs.duplicates import group_rows

    # sample ids in string order: s1 is visited first and keeps both of its neighbours
    edges = pa.table({"a": ["s2", "s1"], "b": ["s1", "s3"], "distance": [0.01, 0.02]})
    rows = group_rows(edges, 0.05, "greedy").to_pylist()
    assert rows == [{"group_id": "s1", "kept_sample_id": "s1", "sample_id": "s2", "distance": 0.01},
                    {"group_id": "s1", "kept_sample_id": "s1", "sample_id": "s3", "distance": 0.02}]
    assert group_rows(edges, 0.015, "greedy").to_pylist() == [rows[0]]  # s1–s3 beyond the threshold
    assert group_rows(edges.slice(0, 0), 0.05, "components").num_rows == 0


def test_an_image_that_went_bad_after_ingest_matches_nothing_instead_of_failing_the_task(tmp_path):
    import pyarrow as pa
    from PIL import Image

    from brain.config import DuplicatesConf, ImagesConf
    from jobs.duplicates import descriptor_batches, verified_batches

    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(good)
    gone = str(tmp_path / "gone.png")
    limits = ImagesConf().limits()
    batch = pa.RecordBatch.from_pydict({"sample_id": ["g", "x"], "uri": [str(good), gone]})
    (out,) = descriptor_batches([batch], False, limits)
    assert out.column("sample_id").to_pylist() == ["g"]
    pairs = pa.RecordBatch.from_pydict({"a": ["g", "g"], "b": ["g2", "x"], "hash_a": ["h"] * 2, "hash_b": ["h", None],
                                        "uri_a": [str(good)] * 2, "uri_b": [str(good), gone]})
    (verified,) = verified_batches([pairs], DuplicatesConf(), limits)
    assert verified.column("passed").to_pylist() == [True, False]
