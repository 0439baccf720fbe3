"""Neighbours at scale on real engines: IVF kNN job + recall, similarity with a subset,
near/exact duplicates on Spark, unique subset, leaks across splits."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image
from tests.conftest import local_conf

from brain import index, results, runs, sql
from jobs.cli import main as brain_main
from brain.config import IngestConf
from brain.lake import Lake, plain_strings
from brain.methods import duplicates
from brain.similarity import similar

pytestmark = pytest.mark.integration


def _write_embeddings(lake: Lake, vectors: np.ndarray) -> list[str]:
    ids = [f"s{i:05d}" for i in range(len(vectors))]
    with runs.track(lake, brain_key="embeddings", method="embeddings", dataset="pets", config={}) as run:
        run.write("embeddings", pa.table({
            "run_id": pa.array([run.run_id] * len(ids)), "sample_id": pa.array(ids),
            "vector": pa.array(list(vectors), pa.list_(pa.float32()))}))
    return ids


def test_ivf_knn_job_records_recall_and_serves_queries(tmp_path, ray_session):
    from jobs import neighbors

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, 16))
    x = (centres[rng.integers(0, 30, 3000)] + 0.3 * rng.normal(size=(3000, 16))).astype(np.float32)
    lake = Lake(tmp_path / "lake")
    ids = _write_embeddings(lake, x)
    conf = local_conf(lake.uri)
    conf.neighbors = conf.neighbors.model_copy(update=dict(k=5, flat_threshold=500, index_shards=2,
                                                            recall_queries=300))
    run_id = neighbors.run(conf)

    meta = json.loads(lake.read_artifact(run_id, "index.json"))
    assert meta["kind"] == "ivf_flat" and meta["shards"] == 2 and meta["nlist"] > 1
    metrics = dict(runs.get_run(lake, "knn")["metrics"])
    assert metrics["recall_at_k"] >= 0.9 and metrics["nlist"] == meta["nlist"]
    graph = plain_strings(lake.read("neighbors")).sort_by("sample_id")
    assert graph.num_rows == 3000
    found = np.array([[int(s[1:]) for s in row] for row in graph["neighbor_ids"].to_pylist()])
    _, exact = index.self_knn(x, 5, spec=index.IndexSpec("flat", "cosine"))
    rows = rng.choice(3000, 300, replace=False)
    assert abs(index.recall_at_k(found[rows], exact[rows]) - metrics["recall_at_k"]) < 0.05

    # similarity: the saved shards answer a query like exact search; a subset returns only its samples
    top = similar(lake, "knn", sample_id=ids[7], k=5)
    assert ids[7] not in top["sample_id"].to_pylist() and len(top) == 5
    assert index.recall_at_k(np.array([[int(s[1:]) for s in top["sample_id"].to_pylist()]]), exact[7:8]) >= 0.8
    by_vector = similar(lake, "knn", vector=x[7], k=6)
    assert by_vector["sample_id"][0].as_py() == ids[7]


def _tile_lake(root):
    """Real photo tiles in train/test folders, with altered copies (some across splits) and a byte copy."""
    from tests.quality.tiles import dataset

    tiles, source, kind = dataset(copies_per_alteration=3, seed=1)
    copies = np.flatnonzero(source >= 0)
    sources = sorted(set(source[copies].tolist()))
    originals = sources + [r for r in np.flatnonzero(source < 0).tolist() if r not in sources][:60 - len(sources)]
    split_of = {o: ("train" if i % 2 else "test") for i, o in enumerate(originals)}
    flip = {"train": "test", "test": "train"}
    for i, r in enumerate(copies):  # every other copy sits in the other split than its original
        split_of[int(r)] = flip[split_of[int(source[r])]] if i % 2 else split_of[int(source[r])]
    paths = {}
    for r in [*originals, *copies.tolist()]:
        path = root / split_of[r] / "tiles" / f"tile-{r:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(tiles[r]).save(path)
        paths[r] = path
    byte_copy = root / "test" / "tiles" / "copy-of-0.png"
    shutil.copyfile(paths[originals[0]], byte_copy)
    origin = {str(p): int(r if source[r] < 0 else source[r]) for r, p in paths.items()}
    origin[str(byte_copy)] = originals[0]
    return origin, str(paths[originals[0]]), str(byte_copy)


def test_duplicates_unique_and_leaks_on_spark(tmp_path, ray_session, spark):
    from jobs import duplicates as dup_job
    from jobs import embed, ingest, leaks, neighbors, unique

    origin, first, byte_copy = _tile_lake(tmp_path / "images")
    conf = local_conf(tmp_path / "lake", ingest=IngestConf(source=str(tmp_path / "images")))
    conf.neighbors.k = 5
    conf.unique.n = 8
    for job in (ingest, embed, neighbors, dup_job, leaks, unique):
        job.run(conf)
    lake = Lake(conf.lake)
    rows = sql.query(lake, "SELECT d.kept_sample_id AS kept, d.sample_id, k.uri AS kept_uri, s.uri, s.split, "
                           "k.split AS kept_split FROM duplicates d JOIN samples s USING (sample_id) "
                           "JOIN samples k ON k.sample_id = d.kept_sample_id").to_pylist()
    group_of = {}
    for row in rows:
        group_of[row["uri"]] = group_of[row["kept_uri"]] = row["kept"]
    # every copy is grouped with its original, and no group mixes two originals
    by_origin = {}
    for uri, o in origin.items():
        by_origin.setdefault(o, []).append(uri)
    for members in by_origin.values():
        if len(members) > 1:
            assert len({group_of.get(u) for u in members}) == 1 and group_of.get(members[0]) is not None, members
    for kept in set(group_of.values()):
        assert len({origin[u] for u, g in group_of.items() if g == kept}) == 1

    # leaks: exactly the duplicates whose split differs from their kept sample's
    leaked = sql.query(lake, "SELECT sample_id, split, kept_split FROM leaks").to_pylist()
    expected = {r["sample_id"] for r in rows if r["split"] != r["kept_split"]}
    assert {r["sample_id"] for r in leaked} == expected and expected
    metrics = dict(runs.get_run(lake, "leaks")["metrics"])
    assert {k: v for k, v in metrics.items() if k.startswith("leaks:")} == {"leaks:test|train": float(len(expected))}

    # exact duplicates by content hash: the byte copy only
    conf.duplicates = conf.duplicates.model_copy(update=dict(method="exact", brain_key="exact_duplicates"))
    dup_job.run(conf)
    exact = sql.query(lake, "SELECT k.uri AS kept, s.uri FROM duplicates d JOIN samples s USING (sample_id) "
                            "JOIN samples k ON k.sample_id = d.kept_sample_id "
                            "WHERE d.brain_key = 'exact_duplicates'").to_pylist()
    assert [sorted([r["kept"], r["uri"]]) for r in exact] == [sorted([first, byte_copy])]

    metrics = dict(runs.get_run(lake, "duplicates")["metrics"])
    assert metrics["candidates"] >= metrics["passed"] >= len(rows) > 0  # verification recorded in the run

    # fraction (component grouping): the threshold makes exactly ceil(fraction·N) duplicates (distinct distances)
    conf.duplicates = conf.duplicates.model_copy(update=dict(method="near", brain_key="by_fraction", fraction=0.1,
                                                             grouping="components"))
    dup_job.run(conf)
    n = sql.query(lake, "SELECT count(*) AS n FROM samples")["n"][0].as_py()
    by_fraction = sql.query(lake, "SELECT count(*) AS n FROM duplicates WHERE brain_key = 'by_fraction'")
    assert by_fraction["n"][0].as_py() == int(np.ceil(0.1 * n))

    # unique subset: the k-center picks over the same vectors
    picks = sql.query(lake, "SELECT sample_id FROM \"unique\" ORDER BY rank")["sample_id"].to_pylist()
    emb = plain_strings(lake.read("embeddings", columns=["sample_id", "vector"]))
    vectors = np.stack(emb["vector"].to_numpy(zero_copy_only=False))
    expected_picks = duplicates.find_unique(vectors, 8)
    assert picks == [emb["sample_id"][int(i)].as_py() for i in expected_picks]

    # similarity restricted to a subset returns only that subset, nearest first, like exact search
    splits = sql.query(lake, "SELECT sample_id, split FROM samples ORDER BY sample_id").to_pylist()
    split_of = {r["sample_id"]: r["split"] for r in splits}
    query = next(s for s, split in split_of.items() if split == "train")
    top = similar(lake, "knn", sample_id=query, k=4, where="split = 'test'")
    assert len(top) == 4 and {split_of[s] for s in top["sample_id"].to_pylist()} == {"test"}
    test_rows = [i for i, s in enumerate(emb["sample_id"].to_pylist()) if split_of[s] == "test"]
    qv = vectors[emb["sample_id"].to_pylist().index(query)]
    d = index.exact_distances(qv, vectors[test_rows], metric="cosine")
    assert np.allclose(np.sort(d)[:4], top["distance"].to_numpy(), atol=1e-5)
    assert pc.all(pc.greater_equal(top["distance"], 0)).as_py()
    out = tmp_path / "similar.json"
    assert brain_main(["similar", "--lake", lake.uri, "--id", query, "-k", "4", "--where", "split = 'test'",
                       "--format", "json", "--out", str(out)]) == 0
    assert [json.loads(line)["sample_id"] for line in out.read_text().splitlines()] == top["sample_id"].to_pylist()
    assert brain_main(["similar", "--lake", lake.uri, "--id", "no-such-sample"]) == 2



def test_duplicates_reuse_the_pixel_verdicts_of_unchanged_pairs(tmp_path, ray_session, spark):
    """A re-run verifies only pairs with a new file and finds what a run from scratch finds."""
    from jobs import duplicates as dup_job
    from jobs import embed, ingest, neighbors

    images = tmp_path / "images"
    origin, first, _ = _tile_lake(images)
    conf = local_conf(tmp_path / "lake", ingest=IngestConf(source=str(images)))
    conf.neighbors.k = 5
    for job in (ingest, embed, neighbors, dup_job):
        job.run(conf)
    lake = Lake(conf.lake)
    before = dict(runs.get_run(lake, "duplicates")["metrics"])
    assert before["verified"] == before["candidates"] > 0 and before["reused"] == 0

    tile = Image.open(first)  # a new file: the first original shifted by 3 px
    new_copy = images / "train" / "tiles" / "new-copy.png"
    tile.crop((3, 3, tile.width, tile.height)).resize(tile.size).save(new_copy)
    for job in (ingest, embed, neighbors, dup_job):
        job.run(conf)
    after = dict(runs.get_run(lake, "duplicates")["metrics"])
    assert 0 < after["verified"] < after["candidates"] and after["reused"] == after["candidates"] - after["verified"]
    verdicts = pq.read_table(pa.BufferReader(lake.read_artifact(runs.get_run(lake, "duplicates")["run_id"],
                                                                "verdicts.parquet")))
    pairs = list(zip(verdicts["hash_a"].to_pylist(), verdicts["hash_b"].to_pylist()))
    assert len(pairs) == len(set(pairs))  # one verdict per pair of contents (the byte copy makes repeats)

    conf.duplicates = conf.duplicates.model_copy(update=dict(brain_key="from_scratch"))
    dup_job.run(conf)
    scratch = dict(runs.get_run(lake, "from_scratch")["metrics"])
    assert scratch["verified"] == scratch["candidates"] == after["candidates"]

    def groups(key: str) -> set[tuple[str, str, float]]:
        rows = sql.query(lake, "SELECT k.uri AS kept, s.uri, d.distance FROM duplicates d JOIN samples s USING "
                               f"(sample_id) JOIN samples k ON k.sample_id = d.kept_sample_id WHERE d.brain_key = '{key}'")
        return {(r["kept"], r["uri"], round(r["distance"], 6)) for r in rows.to_pylist()}

    assert groups("duplicates") == groups("from_scratch")
    group_of = {}
    for kept, uri, _ in groups("duplicates"):
        group_of[uri] = group_of[kept] = kept
    members = {u for u, kept in group_of.items() if kept == group_of[str(new_copy)]} - {str(new_copy)}
    assert members and {origin[u] for u in members} == {origin[first]}  # the new copy joined its original's group

def _realistic(n: int, d: int, seed: int) -> np.ndarray:
    """Power-law axis variances (∝ 1/(i+1)) and broad overlapping modes: IVF at a small fixed nprobe misses."""
    rng = np.random.default_rng(seed)
    scale = 1 / np.sqrt(np.arange(1, d + 1))
    modes = rng.normal(size=(40, d)) * scale * 0.8
    return (modes[rng.integers(0, 40, n)] + rng.normal(size=(n, d)) * scale).astype(np.float32)


def test_recall_target_raises_nprobe_and_the_update_keeps_it(tmp_path, ray_session):
    from jobs import neighbors

    x = _realistic(4000, 32, seed=5)
    lake = Lake(tmp_path / "lake")
    ids = _write_embeddings(lake, x)
    conf = local_conf(lake.uri)
    conf.neighbors = conf.neighbors.model_copy(update=dict(k=10, flat_threshold=500, index_shards=2, nprobe=1,
                                                            recall_queries=400, query_block=700))
    first = neighbors.run(conf)
    metrics = dict(runs.get_run(lake, first)["metrics"])
    assert metrics["nprobe"] > 1 and metrics["recall_cap_hit"] == 0.0
    assert metrics["tuning_recall_at_k"] >= 0.95 and metrics["recall_at_k"] >= 0.93  # held-out rows, other queries
    assert metrics["driver_peak_rss_gb"] > 0 and metrics["worker_peak_rss_gb"] > 0

    # 100 removed, 50 changed, 150 new: an embeddings run of what is left, and the update
    rng = np.random.default_rng(6)
    keep = np.arange(100, 4000)
    vectors = np.concatenate([x[keep], _realistic(150, 32, seed=7)])
    vectors[:50] = _realistic(50, 32, seed=8)
    names = [ids[i] for i in keep] + [f"n{i:05d}" for i in range(150)]
    with runs.track(lake, brain_key="embeddings", method="embeddings", dataset="pets", config={}) as run:
        for part in (slice(0, None, 2), slice(1, None, 2)):  # two files: the actors get other rows than before
            run.write("embeddings", pa.table({
                "run_id": pa.array([run.run_id] * len(names[part])), "sample_id": pa.array(names[part]),
                "vector": pa.array(list(vectors[part]), pa.list_(pa.float32()))}))
    second = neighbors.update(conf, previous=first, fresh_ids=pa.array(names[:50] + names[-150:]))
    metrics = dict(runs.get_run(lake, second)["metrics"])
    assert 200 <= metrics["searched"] < len(names) // 2 and metrics["recall_at_k"] >= 0.93

    graph = plain_strings(lake.read("neighbors", filter=pc.field("run_id") == second))
    assert sorted(graph["sample_id"].to_pylist()) == sorted(names)
    row_of = {s: i for i, s in enumerate(names)}
    found = np.array([[row_of[s] for s in nbrs] for nbrs in graph["neighbor_ids"].to_pylist()])
    mine = np.array([row_of[s] for s in graph["sample_id"].to_pylist()])
    check = rng.choice(len(names), 500, replace=False)
    _, exact = index.knn_graph(index.build_index(vectors, gpu=False), vectors[mine[check]], mine[check], 10,
                               metric="cosine")
    assert index.recall_at_k(found[check], exact) >= 0.93
    # new samples enter the lists of rows that were not searched again, whichever shard stores those rows
    # (the update's actors hold other rows than the shards they reload)
    _, every_exact = index.knn_graph(index.build_index(vectors, gpu=False), vectors[mine], mine, 10, metric="cosine")
    is_new = every_exact >= len(keep)
    hits = np.array([np.isin(e, f) for e, f in zip(every_exact, found)])
    assert is_new.sum() > 100 and (hits & is_new).sum() / is_new.sum() >= 0.9
    # the saved shards hold exactly the live vectors; similarity reads them
    shards = results.load_results(lake, second)
    assert sum(s.ntotal for s in shards) == len(names)
    assert similar(lake, "knn", sample_id="n00003", k=5)["sample_id"][0].as_py() != "n00003"
