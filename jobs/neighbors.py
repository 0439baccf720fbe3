"""kNN job: a FAISS index over an embeddings run and every sample's k nearest neighbours.

The driver builds the (CPU) index once and puts it in Ray's object store; Ray tasks
search query shards in parallel (on a GPU when the cluster has one) and each writes
its shard to `neighbors`' staging folder; the driver commits all shards at once.
The index file is saved with the run (``_artifacts/<run_id>/index.faiss``).
"""

from __future__ import annotations

import logging
import socket
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from brain import index as knn_index
from brain import runs
from brain.config import Conf
from brain.lake import Lake, plain_strings

log = logging.getLogger("jobs.neighbors")


def read_vectors(lake: Lake, run_id: str) -> tuple[pa.Array, np.ndarray]:
    """(sample ids, [N, D] float32 vectors) of one embeddings run."""
    table = lake.read("embeddings", columns=["sample_id", "vector"], filter=pc.field("run_id") == run_id)
    if table.num_rows == 0:
        raise ValueError(f"embeddings run {run_id} has no rows")
    vectors = table["vector"].combine_chunks()
    lengths = pc.list_value_length(vectors).to_numpy(zero_copy_only=False)
    if (lengths != lengths[0]).any():
        bad = int(np.flatnonzero(lengths != lengths[0])[0])
        raise ValueError(f"embeddings run {run_id}: sample {table['sample_id'][bad]} has a vector of length "
                         f"{lengths[bad]}, others {lengths[0]}")
    return table["sample_id"].combine_chunks(), vectors.flatten().to_numpy().reshape(len(lengths), lengths[0])


def search_shard(index_blob: np.ndarray, vectors: np.ndarray, ids: pa.Array, start: int, stop: int, *,
                 k: int, metric: str, lake_uri: str, run_id: str, threads: int) -> int:
    """Search rows [start, stop) against the index and stage their neighbour lists."""
    import faiss

    faiss.omp_set_num_threads(threads)
    index = knn_index.deserialize(index_blob)
    rows = np.arange(start, stop)
    dist, nbr = knn_index.knn_graph(index, vectors[start:stop], rows, k, metric=metric)
    Lake(lake_uri).stage("neighbors", run_id, graph_rows(run_id, ids, ids.slice(start, stop - start), dist, nbr))
    return len(rows)


def graph_rows(run_id: str, ids: pa.Array, query_ids: pa.Array, dist: np.ndarray, nbr: np.ndarray) -> pa.Table:
    """`neighbors` rows: ``nbr`` holds row numbers of ``ids``."""
    k = dist.shape[1]
    offsets = pa.array(np.arange(0, (len(query_ids) + 1) * k, k, dtype=np.int32))
    return pa.table({
        "run_id": pa.array([run_id] * len(query_ids), pa.string()),
        "sample_id": query_ids,
        "neighbor_ids": pa.ListArray.from_arrays(offsets, ids.take(pa.array(nbr.reshape(-1)))),
        "distances": pa.ListArray.from_arrays(offsets, pa.array(dist.reshape(-1), pa.float32())),
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
    dist[at] = pc.list_flatten(old["distances"]).to_numpy(zero_copy_only=False).reshape(len(at), k)
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
                    input_key=cfg.embeddings_key, config={**conf.model_dump(), "input_run_id": source["run_id"]},
                    engine_versions=versions("faiss-cpu", "faiss-gpu-cu12"),
                    executed_on=f"driver host={socket.gethostname()}",
                    sample_filter=source["sample_filter"]) as run:
        ids, vectors = read_vectors(lake, source["run_id"])
        if cfg.k >= len(ids):
            raise ValueError(f"neighbors.k={cfg.k} must be smaller than the {len(ids)} embedded samples")
        old_rows, old_dist = previous_graph(lake, previous, ids, cfg.k)
        fresh = pc.is_in(ids, fresh_ids).to_numpy(zero_copy_only=False)
        dist, nbr, searched = knn_index.update_knn_graph(vectors, fresh, old_rows, old_dist, cfg.k, metric=cfg.metric)
        index = knn_index.build_index(vectors, metric=cfg.metric, gpu=False)
        lake.write_artifact(run.run_id, "index.faiss", knn_index.serialize(index).tobytes())
        run.rows_written["neighbors"] = lake.write_files("neighbors", run.run_id, [graph_rows(run.run_id, ids, ids, dist, nbr)])
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
                    input_key=cfg.embeddings_key, config={**conf.model_dump(), "input_run_id": source["run_id"]},
                    engine_versions=versions("ray", "faiss-cpu", "faiss-gpu-cu12"), executed_on=ray_where(),
                    sample_filter=source["sample_filter"]) as run:
        ids, vectors = read_vectors(lake, source["run_id"])
        if cfg.k >= len(ids):
            raise ValueError(f"neighbors.k={cfg.k} must be smaller than the {len(ids)} embedded samples")
        blob = knn_index.serialize(knn_index.build_index(vectors, metric=cfg.metric, gpu=False))
        lake.write_artifact(run.run_id, "index.faiss", blob.tobytes())
        gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) // cfg.shards)
        task = ray.remote(search_shard).options(num_cpus=cpus, num_gpus=gpus)
        blob_ref, vectors_ref, ids_ref = ray.put(blob), ray.put(vectors), ray.put(ids)
        bounds = np.linspace(0, len(ids), cfg.shards + 1).astype(int)
        done = ray.get([task.remote(blob_ref, vectors_ref, ids_ref, int(a), int(b), k=cfg.k, metric=cfg.metric,
                                    lake_uri=lake.uri, run_id=run.run_id, threads=cpus)
                        for a, b in zip(bounds[:-1], bounds[1:]) if b > a])
        run.rows_written["neighbors"] = lake.commit_files("neighbors", run.run_id)
        if not run.rows_written["neighbors"] == sum(done) == len(ids):
            raise RuntimeError(f"neighbors: {len(ids)} samples but {sum(done)} searched and "
                               f"{run.rows_written['neighbors']} committed")
    log.info("neighbors: k=%d %s graph over %d samples in %d shards in %.1f s", cfg.k, cfg.metric,
             len(ids), cfg.shards, time.perf_counter() - started)
    return run.run_id


def main(argv: list[str] | None = None) -> int:
    from jobs._entry import job_main

    return job_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
