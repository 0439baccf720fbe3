"""kNN job: sharded FAISS indexes over an embeddings run and every sample's k nearest neighbours.

    embeddings → index spec for the size (brain.index.choose_spec: flat / IVF-Flat / IVF-PQ)
      → quantiser trained once on a random sample (driver)
      → index shards filled in parallel by Ray tasks (rows split evenly, global row ids)
      → query shards searched by Ray tasks against every index shard, results merged
        (on a GPU when the cluster has one) → `neighbors` staging → one Delta commit
      → recall@k of the graph vs exact search on `recall_queries` random samples → run.metrics

Saved with the run (``_artifacts/<run_id>/``): ``index-<i>.faiss`` (one per shard),
``index.json`` (the spec, shard count, embeddings run) and ``sample_ids.parquet``
(row id → sample id), which ``brain.similarity`` reloads for queries.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from brain import index as knn_index
from brain import runs
from brain.config import Conf
from brain.lake import Lake, plain_strings
from brain.vectors import to_list_array, to_matrix
from jobs.registry import Job

log = logging.getLogger("jobs.neighbors")


def read_vectors(lake: Lake, run_id: str) -> tuple[pa.Array, np.ndarray]:
    """(sample ids, [N, D] float32 vectors) of one embeddings run."""
    table = lake.read("embeddings", columns=["sample_id", "vector"], filter=pc.field("run_id") == run_id)
    if table.num_rows == 0:
        raise ValueError(f"embeddings run {run_id} has no rows")
    ids = table["sample_id"].combine_chunks()
    return ids, to_matrix(table["vector"], ids, context=f"embeddings run {run_id}", dtype=np.float32)


def search_shard(shard_blobs: list[np.ndarray], vectors: np.ndarray, ids: pa.Array, start: int, stop: int, *,
                 k: int, metric: str, lake_uri: str, run_id: str, threads: int,
                 check_rows: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Search rows [start, stop) against every index shard and stage their neighbour lists.

    Returns (rows searched, the ``check_rows`` in this range, their neighbour row ids).
    """
    import faiss

    faiss.omp_set_num_threads(threads)
    shards = [knn_index.deserialize(blob) for blob in shard_blobs]
    rows = np.arange(start, stop)
    dist, nbr = knn_index.knn_graph(shards, vectors[start:stop], rows, k, metric=metric)
    Lake(lake_uri).stage("neighbors", run_id, graph_rows(run_id, ids, ids.slice(start, stop - start), dist, nbr))
    mine = check_rows[(check_rows >= start) & (check_rows < stop)]
    return len(rows), mine, nbr[mine - start]


def build_shard(empty_blob: np.ndarray, vectors: np.ndarray, start: int, stop: int, *, metric: str,
                threads: int) -> np.ndarray:
    import faiss

    faiss.omp_set_num_threads(threads)
    return knn_index.build_shard(empty_blob, vectors[start:stop], np.arange(start, stop), metric=metric)


def save_index(lake: Lake, run_id: str, shard_blobs: list[np.ndarray], spec: knn_index.IndexSpec,
               embeddings_run_id: str, ids: pa.Array) -> None:
    """The run's index files: ``index-<i>.faiss`` per shard, ``index.json``, ``sample_ids.parquet``."""
    for i, blob in enumerate(shard_blobs):
        lake.write_artifact(run_id, f"index-{i}.faiss", blob.tobytes())
    lake.write_artifact(run_id, "index.json", json.dumps(
        {**spec.as_dict(), "shards": len(shard_blobs), "embeddings_run_id": embeddings_run_id}).encode())
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"sample_id": ids}), sink)
    lake.write_artifact(run_id, "sample_ids.parquet", sink.getvalue().to_pybytes())


def _bounds(n: int, parts: int) -> list[tuple[int, int]]:
    cuts = np.linspace(0, n, max(1, min(parts, n)) + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def graph_rows(run_id: str, ids: pa.Array, query_ids: pa.Array, dist: np.ndarray, nbr: np.ndarray) -> pa.Table:
    """`neighbors` rows: ``nbr`` holds row numbers of ``ids``."""
    k = dist.shape[1]
    offsets = pa.array(np.arange(0, (len(query_ids) + 1) * k, k, dtype=np.int32))
    return pa.table({
        "run_id": pa.array([run_id] * len(query_ids), pa.string()),
        "sample_id": query_ids,
        "neighbor_ids": pa.ListArray.from_arrays(offsets, ids.take(pa.array(nbr.reshape(-1)))),
        "distances": to_list_array(dist, query_ids, what="list of neighbour distances", max_norm=None),
    })


def previous_graph(lake: Lake, run_id: str, ids: pa.Array, k: int) -> tuple[np.ndarray, np.ndarray]:
    """An earlier kNN run's lists as (row numbers of ``ids`` or -1, distances), aligned with ``ids``."""
    old = plain_strings(lake.read("neighbors", columns=["sample_id", "neighbor_ids", "distances"],
                                  filter=pc.field("run_id") == run_id))
    rows = np.full((len(ids), k), -1, np.int64)
    dist = np.zeros((len(ids), k), np.float32)
    lengths = pc.list_value_length(old["neighbor_ids"]).to_numpy(zero_copy_only=False)
    old = old.filter(pa.array(lengths == k))
    at = pc.index_in(old["sample_id"], ids)
    old = old.filter(at.is_valid())  # rows of removed samples are dropped
    at = at.drop_null().to_numpy().astype(np.int64)
    nbr_at = pc.index_in(pc.list_flatten(old["neighbor_ids"]), ids).fill_null(-1).to_numpy(zero_copy_only=False)
    rows[at] = nbr_at.reshape(len(at), k)
    dist[at] = to_matrix(old["distances"], old["sample_id"], what="list of neighbour distances", width=k,
                         context=f"kNN run {run_id}", dtype=np.float32)
    return rows, dist


def update(conf: Conf, *, previous: str, fresh_ids: pa.Array) -> str:
    """A new kNN run from run ``previous``, searching only what ``fresh_ids`` (new/changed samples) affect.

    Runs in this process (no Ray): see :func:`brain.index.update_knn_graph`.
    """
    from jobs.engines import versions

    lake = Lake(conf.lake)
    cfg = conf.neighbors
    source = runs.latest_succeeded(lake, cfg.embeddings_key)
    started = time.perf_counter()
    with runs.track(lake, brain_key=cfg.brain_key, method="neighbors", dataset=conf.dataset,
                    inputs={"embeddings": source["run_id"], "previous": previous}, config=conf.model_dump(),
                    engine_versions=versions("faiss-cpu", "faiss-gpu-cu12"), policy=conf.runs) as run:
        ids, vectors = read_vectors(lake, source["run_id"])
        if cfg.k >= len(ids):
            raise ValueError(f"neighbors.k={cfg.k} must be smaller than the {len(ids)} embedded samples")
        old_rows, old_dist = previous_graph(lake, previous, ids, cfg.k)
        fresh = pc.is_in(ids, fresh_ids).to_numpy(zero_copy_only=False)
        dist, nbr, searched = knn_index.update_knn_graph(vectors, fresh, old_rows, old_dist, cfg.k, metric=cfg.metric)
        spec = knn_index.choose_spec(len(ids), vectors.shape[1], metric=cfg.metric, kind="flat")
        save_index(lake, run.run_id, [knn_index.serialize(knn_index.build_index(vectors, metric=cfg.metric, gpu=False))],
                   spec, source["run_id"], ids)
        run.write("neighbors", graph_rows(run.run_id, ids, ids, dist, nbr))
        run.metrics["searched"] = float(searched)
    log.info("neighbors: k=%d graph updated (%d of %d rows searched) in %.1f s", cfg.k, searched, len(ids),
             time.perf_counter() - started)
    return run.run_id


def run(conf: Conf) -> str:
    from jobs.engines import ray_init, ray_where, versions

    lake = Lake(conf.lake)
    cfg = conf.neighbors
    source = runs.latest_succeeded(lake, cfg.embeddings_key)
    ray = ray_init(conf)
    started = time.perf_counter()
    with runs.track(lake, brain_key=cfg.brain_key, method="neighbors", dataset=conf.dataset,
                    inputs={"embeddings": source["run_id"]}, config=conf.model_dump(), policy=conf.runs,
                    engine_versions=versions("faiss-cpu", "faiss-gpu-cu12"), executed_on=ray_where()) as run:
        ids, vectors = read_vectors(lake, source["run_id"])
        n = len(ids)
        if cfg.k >= n:
            raise ValueError(f"neighbors.k={cfg.k} must be smaller than the {n} embedded samples")
        spec = knn_index.choose_spec(n, vectors.shape[1], metric=cfg.metric, kind=cfg.index,
                                     flat_threshold=cfg.flat_threshold, pq_threshold=cfg.pq_threshold,
                                     nlist=cfg.nlist, nprobe=cfg.nprobe, refine_m=cfg.pq_refine_m)
        rng = np.random.default_rng(0)
        train_rows = np.sort(rng.choice(n, spec.train_size, replace=False)) if spec.train_size else np.arange(1)
        empty = knn_index.serialize(knn_index.train_empty_index(vectors[train_rows], spec))
        gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) // max(cfg.shards, cfg.index_shards))
        vectors_ref, ids_ref, empty_ref = ray.put(vectors), ray.put(ids), ray.put(empty)
        builder = ray.remote(build_shard).options(num_cpus=cpus)
        shard_refs = [builder.remote(empty_ref, vectors_ref, a, b, metric=cfg.metric, threads=cpus)
                      for a, b in _bounds(n, cfg.index_shards)]
        shard_blobs = ray.get(shard_refs)
        shards_ref = ray.put(shard_blobs)
        save_index(lake, run.run_id, shard_blobs, spec, source["run_id"], ids)

        check = np.sort(rng.choice(n, min(n, cfg.recall_queries), replace=False))
        task = ray.remote(search_shard).options(num_cpus=cpus, num_gpus=gpus)
        done = ray.get([task.remote(shards_ref, vectors_ref, ids_ref, a, b, k=cfg.k, metric=cfg.metric,
                                    lake_uri=lake.uri, run_id=run.run_id, threads=cpus, check_rows=check)
                        for a, b in _bounds(n, cfg.shards)])
        staged = run.staged_rows("neighbors")
        if not staged == sum(d[0] for d in done) == n:
            raise RuntimeError(f"neighbors: {n} samples but {sum(d[0] for d in done)} searched and {staged} staged")
        if check.size:
            found = np.concatenate([d[2] for d in done])
            rows = np.concatenate([d[1] for d in done])
            exact = knn_index.knn_graph(knn_index.build_index(vectors, metric=cfg.metric), vectors[rows], rows,
                                        cfg.k, metric=cfg.metric)[1]
            run.metrics["recall_at_k"] = knn_index.recall_at_k(found, exact)
        run.metrics.update(n=float(n), k=float(cfg.k), nlist=float(spec.nlist), nprobe=float(spec.nprobe),
                           index_shards=float(len(shard_blobs)), train_size=float(spec.train_size))
    log.info("neighbors: k=%d %s graph over %d samples, %s index in %d shards, recall@k %.4f, %.1f s", cfg.k,
             cfg.metric, n, spec.kind, len(shard_blobs), run.metrics.get("recall_at_k", float("nan")),
             time.perf_counter() - started)
    return run.run_id


JOB = Job(name="neighbors", engine="ray", help="FAISS kNN graph on Ray",
          reads=("embeddings",),
          writes=("neighbors",),
          run=run)


if __name__ == "__main__":
    JOB.main()
