"""kNN job: every sample's k nearest neighbours, computed where the vectors are.

    embeddings files of the run (the Delta log's file list) → ``index_shards`` shard actors (Ray,
      spread over the nodes); each streams its files block by block and keeps its vectors
    → driver: the sample-id map (ids only), the index spec; a training sample of at most
      ``train_per_list · nlist`` rows gathered *by reference* → one Ray task trains the coarse
      quantiser → the empty index → every actor fills its shard under global row ids
    → recall target: held-out query rows searched exactly (brute force on every actor, partial
      top-k lists merged); ``nprobe`` (and the IVF-PQ re-rank depth) doubled until recall@k on
      ``recall_queries`` tuning rows reaches ``target_recall`` or the cap
    → graph: each actor's rows travel in blocks of ``query_block`` to every shard; the actor that
      owns a block merges the partial top-k lists (FAISS ``ResultHeap``) and stages its
      neighbour lists in the run's staging → one commit; recall@k of the graph on another
      ``recall_queries`` held-out rows vs exact search → ``run.metrics``
    → every actor saves its shard as ``index-<i>.faiss``.

The driver never holds a vector: it holds the id map (sample ids, row numbers), object
references, and merge state of [queries, k+1]. Vectors, shards and training run on workers.

**Partitioning: by rows, not by IVF list.** For N vectors of dimension D, S shards, nlist lists,
nprobe lists probed and Q queries (Q = N for the graph), per query:

* by rows: the query goes to all S shards (4·D·S bytes out, 12·(k+1)·S back); each shard scans
  its part of the nprobe lists, so the list scans add up to nprobe·(N/nlist)·D flops as in one
  index. The coarse quantiser (nlist·D) runs once, on the block's owner, and its list ids
  (12·nprobe bytes a query) go with the query to every shard (``search_preassigned``); were
  each shard to run it, it would cost S·nlist·D, as much as the scans S times over at the
  nlist = 4·√N, nprobe = 16 balance. Building moves no vector: a shard is the files its
  actor read, and shards are equal in size by construction.
* by IVF list: a query goes only to the shards owning its nprobe lists, min(S, nprobe) of them,
  and the quantiser runs once. But the build shuffles every vector to its list's owner (4·N·D
  bytes all-to-all), real embeddings fill lists unevenly (the hot lists' owner becomes the
  straggler for both build and queries), and each nprobe step of the recall tuning changes
  which shards a query visits.

With nprobe ≥ S — always, once the recall target is met on hard data (nprobe 16–128 vs a few
shards per node) — a query visits every shard under either scheme, so list partitioning saves
no traffic and, with the lists assigned once, no flops: rows win. (IVF-PQ with re-ranking and
GPU shards cannot take pre-assigned lists: there each shard runs the quantiser again, which
stays below the list scans while S < nprobe/16: use fewer, larger shards then.)

Saved with the run (``_artifacts/<run_id>/``): ``index-<i>.faiss`` and ``graph-<i>.npz`` (one per
shard, written by its actor: the shard and its rows' lists as row numbers, which the next update
starts from instead of reading 10 neighbour ids a row back from the table), ``index.json`` (the
spec, the chosen nprobe, shard count, embeddings run) and
``sample_ids.parquet`` (row id → sample id; null for a row an update removed), which
``brain.similarity`` and ``runs.load_results`` reload for queries.

:func:`update` (the scan's incremental step) loads the previous run's shards into the actors,
removes deleted and changed rows, adds the new vectors, and searches only the rows whose
list can have changed (:func:`brain.index.affected_rows`); the others merge their old list with
their nearest new vectors (:func:`brain.index.merge_with_fresh`), found by probing from the new
vectors' side (:func:`brain.index.nearest_fresh`). Same recall target, checked the same way.
"""

from __future__ import annotations

import io
import json
import logging
import os
import resource
import time
from dataclasses import dataclass
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from brain import index as knn_index
from brain import runs
from brain.config import Conf, NeighborsConf
from brain.lake import STAGING_FOLDER, Lake
from brain.vectors import (
    PATCH_TABLE,
    embeddings_table,
    id_columns,
    item_ids,
    split_patch_ids,
    to_list_array,
    to_matrix,
)
from jobs.registry import Job

log = logging.getLogger("jobs.neighbors")


def graph_rows(run_id: str, id_map: pa.Array, query_ids: pa.Array, dist: np.ndarray, nbr: np.ndarray, *,
               patches: bool = False) -> pa.Table:
    """`neighbors` rows: ``nbr`` holds row numbers of ``id_map``; with ``patches`` the ids are patch ids, and
    each row is keyed by (sample_id, patch_index)."""
    k = dist.shape[1]
    offsets = pa.array(np.arange(0, (len(query_ids) + 1) * k, k, dtype=np.int32))
    sample_ids, patch_index = split_patch_ids(query_ids) if patches else (query_ids, None)
    return pa.table({
        "run_id": pa.array([run_id] * len(query_ids), pa.string()),
        "sample_id": sample_ids,
        "patch_index": pa.nulls(len(query_ids), pa.int32()) if patch_index is None else patch_index,
        "neighbor_ids": pa.ListArray.from_arrays(offsets, id_map.take(pa.array(nbr.reshape(-1)))),
        "distances": to_list_array(dist, query_ids, what="list of neighbour distances", max_norm=None),
    })


def peak_rss_gb() -> float:
    """This process's peak resident memory: ``VmHWM`` on Linux. Not ``ru_maxrss``: Linux carries that
    across ``exec`` from the forked parent, so a job started by a big process would report the parent's."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class ShardWorker:
    """One index shard and the vectors of the embeddings files it read; lives as a Ray actor for one job.

    Its rows have global row numbers ``rows`` (positions in the run's id map). The actor answers
    searches from every block of queries, and merges and writes the lists of its own rows.
    """

    def __init__(self, lake: Lake, shard: int, files: list[str], embeddings_run_id: str, *, metric: str,
                 threads: int, table: str = "embeddings"):
        import faiss

        faiss.omp_set_num_threads(threads)
        self.lake, self.threads = lake, threads
        self.shard, self.files, self.embeddings_run_id, self.metric = shard, files, embeddings_run_id, metric
        self.table = table  # embeddings, or patch_embeddings: rows named by patch ids
        self.index = None
        self.old_dist = self.old_rows = None
        self.written: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (rows, neighbour rows, distances) written
        self.affected = self.fresh = None
        self.fresh_sq = self.fresh_ids = None  # an update's kept rows: their nearest fresh vectors

    # -- loading -------------------------------------------------------------
    def load(self, block_rows: int = 65_536) -> tuple[int, int, str, str | None]:
        """Stream this shard's files (this run's rows only); returns (rows, dim, node id, first sample id)."""
        import ray

        ids, parts, dim = [], [], None
        if self.files:
            data = self.lake.files_dataset(self.files)
            for batch in data.to_batches(columns=id_columns(self.table) + ["vector"], batch_size=block_rows,
                                         filter=pc.field("run_id") == self.embeddings_run_id):
                if batch.num_rows:
                    names = item_ids(batch, self.table).cast(pa.string())
                    part = to_matrix(batch.column("vector"), names, width=dim,
                                     context=f"embeddings run {self.embeddings_run_id}", dtype=np.float32)
                    dim = part.shape[1]
                    parts.append(knn_index.prepare(part, metric=self.metric))
                    ids.append(names)
        self.ids = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
        self.vectors = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
        node = ray.get_runtime_context().get_node_id()
        return len(self.ids), int(dim or 0), node, (self.ids[0].as_py() if len(self.ids) else None)

    def sample_ids(self) -> pa.Array:
        return self.ids

    def set_rows(self, rows: np.ndarray, id_map: pa.Array) -> None:
        """This shard's global row numbers and the run's id map (row → sample id)."""
        self.rows, self.id_map = np.asarray(rows, np.int64), id_map

    def take(self, local: np.ndarray) -> np.ndarray:
        """Vectors of local positions (training sample, held-out queries)."""
        return self.vectors[np.asarray(local, np.int64)]

    def fill(self, empty_index: np.ndarray) -> int:
        """This shard: a copy of the trained empty index holding this actor's vectors."""
        import faiss

        index = faiss.deserialize_index(empty_index)
        if len(self.vectors):
            index.add_with_ids(self.vectors, self.rows)
        self.index = knn_index.to_gpu_if_available(index)
        return int(index.ntotal)

    # -- incremental update --------------------------------------------------
    def load_previous(self, previous_run_id: str, previous_shards: int, removed_rows: np.ndarray,
                      fresh: np.ndarray, k: int) -> int:
        """The previous run's shard, less ``removed_rows``, plus this actor's ``fresh`` vectors; the old lists
        of this actor's rows (from the previous run's ``graph-<i>.npz``: row numbers, not ids). Returns the
        shard's size."""
        import faiss

        lake = self.lake
        index = faiss.deserialize_index(np.frombuffer(
            lake.read_artifact(previous_run_id, f"index-{self.shard}.faiss"), np.uint8))
        if len(removed_rows):
            index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(removed_rows, np.int64)))
        fresh = np.asarray(fresh, bool)
        if fresh.any():
            index.add_with_ids(self.vectors[fresh], self.rows[fresh])
        self.index = knn_index.to_gpu_if_available(index)

        saved = [np.load(io.BytesIO(lake.read_artifact(previous_run_id, graph_artifact(i))))
                 for i in range(previous_shards)]
        saved = [g for g in saved if len(g["rows"])]  # a shard without rows saved lists of width 0
        rows = np.concatenate([g["rows"] for g in saved] or [np.zeros(0, np.int64)])
        order = np.argsort(rows)
        at = np.minimum(np.searchsorted(rows[order], self.rows), max(len(rows) - 1, 0))
        known = ~fresh & (rows[order][at] == self.rows) if len(rows) else np.zeros(len(self.rows), bool)
        self.old_rows = np.full((len(self.rows), k), -1, np.int64)  # −1: no old list, the row is searched
        self.old_dist = np.zeros((len(self.rows), k), np.float32)
        taken = order[at[known]]
        if taken.size:
            self.old_rows[known] = np.concatenate([g["neighbors"] for g in saved])[taken]
            self.old_dist[known] = np.concatenate([g["distances"] for g in saved])[taken]
        self.fresh = fresh
        return int(index.ntotal)

    def fresh_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """This actor's new and changed vectors and their rows."""
        return self.vectors[self.fresh], self.rows[self.fresh]

    def list_members(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(row, IVF list) of every vector of this actor's shard (:func:`brain.index.ivf_lists`)."""
        return knn_index.ivf_lists(self.index)

    def find_fresh(self, k: int, nprobe: int, fresh_refs: list, member_refs: list) -> int:
        """Every kept (unaffected) row's k nearest among all actors' fresh vectors (``fresh_refs``:
        :meth:`fresh_vectors` of each), probing from the fresh side (:func:`brain.index.nearest_fresh`).
        A row's IVF list comes from whichever shard stores it (``member_refs``: :meth:`list_members`
        of each): an update's actors hold other rows than the shards they reloaded. Returns how many rows."""
        import ray

        kept = np.flatnonzero(~self.affected)
        fresh = [(v, r) for v, r in ray.get(fresh_refs) if len(r)]  # an actor without rows has vectors of width 0
        vectors = np.concatenate([v for v, _ in fresh]) if fresh else np.zeros((0, self.vectors.shape[1]), np.float32)
        rows = np.concatenate([r for _, r in fresh]) if fresh else np.zeros(0, np.int64)
        members = ray.get(member_refs)
        lists = None
        if all(m is not None for m in members):
            ids, list_of = np.concatenate([m[0] for m in members]), np.concatenate([m[1] for m in members])
            order = np.argsort(ids)
            at = np.minimum(np.searchsorted(ids[order], self.rows[kept]), len(ids) - 1)
            if not (ids[order][at] == self.rows[kept]).all():
                raise RuntimeError(f"neighbors: shard {self.shard}: kept rows missing from every reloaded shard")
            lists = list_of[order][at]
        self.fresh_sq = np.full((len(self.rows), k), np.inf, np.float32)
        self.fresh_ids = np.full((len(self.rows), k), -1, np.int64)
        self.fresh_sq[kept], self.fresh_ids[kept] = knn_index.nearest_fresh(
            self.index, self.vectors[kept], lists, vectors, rows, k, nprobe=nprobe)
        return len(kept)

    def mark_stale(self, stale_rows: np.ndarray) -> int:
        """Which of this actor's rows the update searches in full: its fresh rows and those whose old list
        holds a stale row (removed or changed by any actor). Returns how many."""
        stale = np.zeros(len(self.id_map), bool)
        stale[np.asarray(stale_rows, np.int64)] = True
        self.affected = knn_index.affected_rows(self.old_rows, self.fresh, stale)
        return int(self.affected.sum())

    # -- searching -----------------------------------------------------------
    def queries(self, a: int, b: int, affected_only: bool = False) -> np.ndarray:
        """Local rows [a, b) as a query block: all, or those an update must search."""
        return self.vectors[a:b][self.affected[a:b]] if affected_only else self.vectors[a:b]

    def assign(self, nprobe: int, *blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The query blocks' nprobe nearest IVF lists, found once for every shard (all share this quantiser)."""
        x = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
        return knn_index.coarse_assign(self.index, x, nprobe)

    def search(self, k: int, nprobe: int, k_factor: int, assigned: tuple[np.ndarray, np.ndarray] | None,
               *blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This shard's k nearest (squared L2, global rows) for the query blocks, concatenated; ``assigned``:
        their lists from :meth:`assign` (None: this shard finds them)."""
        x = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
        return knn_index.search_partial(self.index, x, k, nprobe=nprobe, k_factor=k_factor, assigned=assigned)

    def exact(self, k: int, *blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest among this actor's vectors (brute force), the ground truth of the recall check."""
        import faiss

        x = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
        k = min(k, len(self.vectors))
        if k == 0:
            return knn_index.search_partial(faiss.IndexFlatL2(x.shape[1]), x, k)
        sq, local = faiss.knn(x, self.vectors, k)
        return sq.astype(np.float32), np.where(local < 0, -1, self.rows[np.maximum(local, 0)])

    def write(self, run_id: str, a: int, b: int, k: int, check: np.ndarray,
              *parts: tuple[np.ndarray, np.ndarray]) -> tuple[int, np.ndarray, np.ndarray]:
        """Merge the shards' partial lists for local rows [a, b) and stage them as one file of the run.

        ``parts``: every shard's k+1 nearest for the rows searched in full (all rows, or in an
        update the affected ones); an update's other rows merge their old list with their
        nearest fresh vectors (:meth:`find_fresh`). Returns (rows written, the ``check`` local
        rows in the block, their neighbour rows).
        """
        full = np.ones(b - a, bool) if self.affected is None else self.affected[a:b]
        rows = self.rows[a:b]
        dist = np.empty((b - a, k), np.float32)
        nbr = np.empty((b - a, k), np.int64)
        if full.any():
            sq, ids = knn_index.merge_partials(parts, k + 1)
            dist[full], nbr[full] = knn_index.drop_self(knn_index.to_distance(sq, ids, metric=self.metric), ids,
                                                        rows[full])
        kept = np.flatnonzero(~full)
        if kept.size:
            sq, ids = self.fresh_sq[a:b][kept], self.fresh_ids[a:b][kept]
            dist[kept], nbr[kept] = knn_index.merge_with_fresh(
                self.old_dist[a:b][kept], self.old_rows[a:b][kept], knn_index.to_distance(sq, ids, metric=self.metric),
                ids, k)
        self.lake.stage("neighbors", run_id, graph_rows(run_id, self.id_map, self.ids.slice(a, b - a), dist, nbr,
                                                        patches=self.table == PATCH_TABLE),
                        name=f"shard{self.shard:05d}-{a:010d}")
        self.written.append((rows, nbr, dist))
        mine = check[(check >= a) & (check < b)]
        return b - a, mine, nbr[mine - a]

    def train(self, spec: dict, sample: list[tuple[int, object, np.ndarray]]) -> np.ndarray:
        """The empty index of ``spec``, its quantiser trained on a sample: (shard, its actor, local positions)
        for every shard; this actor fetches the other shards' parts itself, so they never pass the driver.

        Training runs alone (the other actors wait for its result): it uses every core of the node."""
        import faiss
        import ray

        parts = [self.take(local) if shard == self.shard else ray.get(actor.take.remote(local))
                 for shard, actor, local in sample]
        spec = knn_index.IndexSpec(**{**spec, "metric": "l2"})  # normalised at load for cosine
        faiss.omp_set_num_threads(len(os.sched_getaffinity(0)))
        try:
            return knn_index.serialize(knn_index.train_empty_index(np.concatenate(parts), spec))
        finally:
            faiss.omp_set_num_threads(self.threads)

    def save(self, run_id: str) -> None:
        """This shard's index, and its rows' lists as row numbers (what the next update starts from)."""
        self.lake.write_artifact(run_id, f"index-{self.shard}.faiss", knn_index.serialize(self.index).tobytes())
        k = self.written[0][1].shape[1] if self.written else 0
        sink = io.BytesIO()
        np.savez(sink, rows=np.concatenate([r for r, _, _ in self.written] or [np.zeros(0, np.int64)]),
                 neighbors=np.concatenate([n for _, n, _ in self.written] or [np.zeros((0, k), np.int64)]),
                 distances=np.concatenate([d for _, _, d in self.written] or [np.zeros((0, k), np.float32)]))
        self.lake.write_artifact(run_id, graph_artifact(self.shard), sink.getvalue())

    def peak_rss_gb(self) -> float:
        return peak_rss_gb()


def graph_artifact(shard: int) -> str:
    """The run artifact holding shard ``shard``'s rows' lists as row numbers (rows, neighbors, distances)."""
    return f"graph-{shard}.npz"


def assign_files(files: list[str], sizes: list[int], shards: int) -> list[list[str]]:
    """Files dealt to ``shards`` shards, largest first to the lightest (balanced bytes; order kept per shard)."""
    load = [0] * shards
    out: list[list[str]] = [[] for _ in range(shards)]
    for i in sorted(range(len(files)), key=lambda i: -sizes[i]):
        s = int(np.argmin(load))
        out[s].append(files[i])
        load[s] += sizes[i]
    return [sorted(part) for part in out]


def embedding_files(lake: Lake, run_id: str, table: str = "embeddings") -> tuple[list[str], list[int]]:
    """The committed files of the vectors ``table`` that can hold ``run_id``'s rows (URIs) and their sizes.

    A run's files are committed from its staging folder ``_staging/<run_id>/``; files elsewhere
    (appended by older code) may hold any run's rows, so they are read too. Matching by full
    relative path matters: resumable runs name their files by shard, the same in every run.
    """
    actions = pa.table(lake.table(table).get_add_actions(flatten=True)).to_pydict()
    base = lake.table_uri(table)
    own, elsewhere = f"{STAGING_FOLDER}/{run_id}/", f"{STAGING_FOLDER}/"
    files, sizes = [], []
    for path, size in zip(actions["path"], actions["size_bytes"]):
        path = unquote(path)
        if path.startswith(own) or not path.startswith(elsewhere):
            files.append(f"{base}/{path}")
            sizes.append(int(size))
    return files, sizes


@dataclass
class ShardPool:
    """The shard actors of one job, the positions of their rows, and the driver's id map."""

    actors: list
    counts: np.ndarray  # rows per actor
    nodes: list[str]
    dim: int
    ids: pa.Array  # sample ids in actor order (position p)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts)])

    @classmethod
    def start(cls, ray, lake: Lake, embeddings_run_id: str, cfg: NeighborsConf, shards: int,
              table: str = "embeddings") -> ShardPool:
        files, sizes = embedding_files(lake, embeddings_run_id, table)
        parts = assign_files(files, sizes, shards)
        resources = ray.cluster_resources()
        cpus = max(0.25, float(resources.get("CPU", 1)) / shards)
        gpus = float(resources.get("GPU", 0)) / shards if resources.get("GPU", 0) else 0
        worker = ray.remote(ShardWorker).options(num_cpus=cpus, num_gpus=gpus, scheduling_strategy="SPREAD")
        actors = [worker.remote(lake, i, part, embeddings_run_id, metric=cfg.metric, threads=max(1, int(cpus)),
                                table=table)
                  for i, part in enumerate(parts)]
        loaded = ray.get([a.load.remote() for a in actors])
        dims = {d for c, d, _, _ in loaded if c}
        if not dims:
            raise ValueError(f"embeddings run {embeddings_run_id} has no rows")
        if len(dims) > 1:
            samples = {d: s for c, d, _, s in loaded if c}
            raise ValueError(f"embeddings run {embeddings_run_id}: vectors of different lengths, e.g. sample "
                             + " and sample ".join(f"{s} ({d})" for d, s in sorted(samples.items())))
        ids = pa.concat_arrays(ray.get([a.sample_ids.remote() for a in actors]))
        return cls(actors, np.array([c for c, *_ in loaded]), [node for _, _, node, _ in loaded], dims.pop(), ids)

    def locate(self, positions: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Sorted global positions → (actor, its local positions), actors in order."""
        positions = np.sort(np.asarray(positions, np.int64))
        at = np.searchsorted(self.starts, positions, side="right") - 1
        return [(int(i), positions[at == i] - self.starts[i]) for i in np.unique(at)]

    def gather(self, positions: np.ndarray) -> list:
        """References to the vectors of these positions (sorted), one per actor holding some: nothing comes here."""
        return [self.actors[i].take.remote(local) for i, local in self.locate(positions)]

    def search_merged(self, ray, query_refs: list, k: int, nprobe: int, k_factor: int, *,
                      exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Every shard's k nearest for the queries, merged here ([Q, k] state)."""
        if exact:
            calls = [a.exact.remote(k, *query_refs) for a in self.actors]
        else:
            assigned = self.actors[0].assign.remote(nprobe, *query_refs)
            calls = [a.search.remote(k, nprobe, k_factor, assigned, *query_refs) for a in self.actors]
        return knn_index.merge_partials(ray.get(calls), k)


def _neighbours_of(ray, pool: ShardPool, positions: np.ndarray, rows: np.ndarray, k: int, metric: str,
                   nprobe: int = 0, k_factor: int = 0, *, exact: bool = False) -> np.ndarray:
    sq, ids = pool.search_merged(ray, pool.gather(positions), k + 1, nprobe, k_factor, exact=exact)
    return knn_index.drop_self(knn_index.to_distance(sq, ids, metric=metric), ids, rows[np.sort(positions)])[1]


def tune(ray, pool: ShardPool, rows: np.ndarray, spec: knn_index.IndexSpec, cfg: NeighborsConf,
         positions: np.ndarray) -> tuple[int, int, float, bool, np.ndarray | None]:
    """(nprobe, k_factor, recall on the tuning rows, cap hit, the rows' exact neighbours): the first setting
    of :func:`brain.index.probe_schedule` whose recall@k vs exact reaches ``cfg.target_recall``."""
    if spec.kind == "flat" or not positions.size:
        return 0, 0, 1.0, False, None
    exact = _neighbours_of(ray, pool, positions, rows, cfg.k, cfg.metric, exact=True)
    steps = knn_index.probe_schedule(spec.nprobe, spec.nlist, nprobe_max=cfg.nprobe_max or max(1, spec.nlist // 4),
                                     refine=bool(spec.refine_m), k_factor_max=cfg.k_factor_max)
    for nprobe, k_factor in steps:
        found = _neighbours_of(ray, pool, positions, rows, cfg.k, cfg.metric, nprobe, k_factor)
        recall = knn_index.recall_at_k(found, exact)
        log.info("neighbors: nprobe=%d k_factor=%d: recall@%d %.4f on %d tuning queries", nprobe, k_factor, cfg.k,
                 recall, len(positions))
        if recall >= cfg.target_recall:
            return nprobe, k_factor, recall, False, exact
    return nprobe, k_factor, recall, True, exact


def write_graph(ray, pool: ShardPool, run_id: str, lake: Lake, cfg: NeighborsConf, nprobe: int, k_factor: int,
                check: np.ndarray, *, update: bool = False) -> tuple[int, np.ndarray, np.ndarray]:
    """Every actor's rows in blocks to every shard, merged and staged by the owner; a window of blocks in flight.

    Returns (rows written, check positions found, their neighbour rows)."""
    k, blocks = cfg.k, []
    for i, count in enumerate(pool.counts):
        blocks += [(j, i, a, min(int(count), a + cfg.query_block)) for j, a in enumerate(range(0, int(count),
                                                                                           cfg.query_block))]
    blocks.sort()  # round-robin over the actors, so every one owns blocks in flight
    checks = {i: local for i, local in pool.locate(check)}
    pending, done = [], []
    for _, i, a, b in blocks:
        owner = pool.actors[i]
        q = owner.queries.remote(a, b, affected_only=update)
        assigned = owner.assign.remote(nprobe, q)
        parts = [w.search.remote(k + 1, nprobe, k_factor, assigned, q) for w in pool.actors]
        mine = checks.get(i, np.zeros(0, np.int64))
        pending.append((i, owner.write.remote(run_id, a, b, k, mine, *parts)))
        if len(pending) >= 2 * len(pool.actors):
            i0, ref = pending.pop(0)
            done.append((i0, ray.get(ref)))
    done += [(i, ray.get(ref)) for i, ref in pending]
    written = sum(d[0] for _, d in done)
    positions = np.concatenate([pool.starts[i] + d[1] for i, d in done] or [np.zeros(0, np.int64)])
    found = np.concatenate([d[2] for _, d in done] or [np.zeros((0, k), np.int64)])
    order = np.argsort(positions)
    return written, positions[order], found[order]


def distinct_positions(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` distinct random positions in [0, n), in random order, in O(m) memory when m ≪ n
    (``Generator.choice(replace=False)`` permutes all n: the driver would grow with N)."""
    m = min(n, m)
    if 4 * m >= n:
        return rng.permutation(n)[:m]
    picked = np.zeros(0, np.int64)
    while len(picked) < m:
        more = rng.integers(0, n, 2 * (m - len(picked)))
        picked = np.concatenate([picked, more])
        _, first = np.unique(picked, return_index=True)
        picked = picked[np.sort(first)]
    return picked[:m]


def _split_queries(n: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint random positions: (tuning queries, held-out check queries), each at most ``count``, sorted."""
    picked = distinct_positions(n, 2 * count, rng)
    half = len(picked) // 2
    return np.sort(picked[:half]), np.sort(picked[half:])


def _finish(ray, pool: ShardPool, lake: Lake, run: runs.Run, cfg: NeighborsConf, spec: knn_index.IndexSpec,
            rows: np.ndarray, id_map: pa.Array, embeddings_run_id: str, *, update: bool,
            table: str = "embeddings") -> None:
    """Tune, write the graph, check its recall, save the shards and the id map; metrics into ``run``."""
    queries = cfg.update_recall_queries if update else cfg.recall_queries
    tuning, held_out = _split_queries(pool.n, queries, np.random.default_rng(0))
    if update:  # one exact pass: its tuning starts at the previous run's nprobe and rarely steps, so
        held_out = tuning  # checking the graph on the same rows hardly selects on them
    exact = None
    if cfg.target_recall:
        nprobe, k_factor, tuned, cap_hit, exact = tune(ray, pool, rows, spec, cfg, tuning)
    else:
        nprobe, k_factor, tuned, cap_hit = spec.nprobe, 4 if spec.refine_m else 0, float("nan"), False
    if cap_hit:
        run.warn(f"neighbors: recall@{cfg.k} {tuned:.4f} on the tuning queries is below the target "
                 f"{cfg.target_recall:.2f} at the cap nprobe={nprobe} (k_factor={k_factor}): raise "
                 f"neighbors.nprobe_max or nlist")
    log.info("neighbors: tuned (driver peak RSS %.3f GB)", peak_rss_gb())
    if update:  # the kept rows' nearest fresh vectors, probed at the tuned nprobe
        fresh = [a.fresh_vectors.remote() for a in pool.actors]
        members = [a.list_members.remote() for a in pool.actors]
        ray.get([a.find_fresh.remote(cfg.k, nprobe, fresh, members) for a in pool.actors])
        log.info("neighbors: the other rows' nearest new vectors found (driver peak RSS %.3f GB)", peak_rss_gb())
    written, checked, found = write_graph(ray, pool, run.run_id, lake, cfg, nprobe, k_factor, held_out, update=update)
    log.info("neighbors: graph written (driver peak RSS %.3f GB)", peak_rss_gb())
    staged = run.staged_rows("neighbors")  # committed by runs.track with the run
    if not staged == written == pool.n:
        raise RuntimeError(f"neighbors: {pool.n} samples but {written} searched and {staged} staged")
    if checked.size:
        if not update or exact is None:
            exact = _neighbours_of(ray, pool, checked, rows, cfg.k, cfg.metric, exact=True)
        run.metrics["recall_at_k"] = knn_index.recall_at_k(found, exact)
    ray.get([a.save.remote(run.run_id) for a in pool.actors])
    run.write_artifact("index.json", json.dumps(
        {**spec.as_dict(), "nprobe": nprobe or spec.nprobe, "k_factor": k_factor, "shards": len(pool.actors),
         "embeddings_run_id": embeddings_run_id, "embeddings_table": table, "graph_arrays": True}).encode())
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"sample_id": id_map}), sink, use_dictionary=False)  # unique ids: no dictionary
    run.write_artifact("sample_ids.parquet", sink.getvalue().to_pybytes())
    run.metrics.update(
        n=float(pool.n), k=float(cfg.k), nlist=float(spec.nlist), nprobe=float(nprobe), k_factor=float(k_factor),
        index_shards=float(len(pool.actors)), nodes=float(len(set(pool.nodes))), train_size=float(spec.train_size),
        target_recall=float(cfg.target_recall), tuning_recall_at_k=float(tuned), recall_cap_hit=float(cap_hit),
        driver_peak_rss_gb=peak_rss_gb(),
        worker_peak_rss_gb=max(ray.get([a.peak_rss_gb.remote() for a in pool.actors])))


def _track(lake: Lake, conf: Conf, inputs: dict[str, str]):
    from jobs.engines import ray_where, versions

    return runs.track(lake, brain_key=conf.neighbors.brain_key, method="neighbors", dataset=conf.dataset,
                      inputs=inputs, config=conf.model_dump(), policy=conf.runs,
                      engine_versions=versions("ray", "faiss-cpu", "faiss-gpu-cu12"), executed_on=ray_where())


def run(conf: Conf) -> str:
    from jobs.engines import ray_init

    lake = Lake.from_conf(conf)
    cfg = conf.neighbors
    source = runs.latest_succeeded(lake, cfg.embeddings_key)
    table = embeddings_table(source["method"])  # a patch embeddings run: a kNN graph of its boxes
    ray = ray_init(conf)
    started = time.perf_counter()
    with _track(lake, conf, {"embeddings": source["run_id"]}) as run:
        pool = ShardPool.start(ray, lake, source["run_id"], cfg, cfg.index_shards, table)
        try:
            n = pool.n
            if cfg.k >= n:
                raise ValueError(f"neighbors.k={cfg.k} must be smaller than the {n} embedded samples")
            spec = knn_index.choose_spec(n, pool.dim, metric=cfg.metric, kind=cfg.index,
                                         flat_threshold=cfg.flat_threshold, pq_threshold=cfg.pq_threshold,
                                         nlist=cfg.nlist, nprobe=cfg.nprobe, refine_m=cfg.pq_refine_m)
            if spec.nlist:
                spec = knn_index.IndexSpec(**{**spec.as_dict(), "train_size": min(n, cfg.train_per_list * spec.nlist)})
            rows = np.arange(n, dtype=np.int64)
            id_map = ray.put(pool.ids)  # once: every actor reads the same copy
            ray.get([a.set_rows.remote(rows[s:e], id_map) for a, s, e in
                     zip(pool.actors, pool.starts[:-1], pool.starts[1:])])
            train = distinct_positions(n, max(1, spec.train_size), np.random.default_rng(0))
            empty = pool.actors[0].train.remote(spec.as_dict(), [(i, pool.actors[i], local)
                                                                  for i, local in pool.locate(train)])
            ray.get([a.fill.remote(empty) for a in pool.actors])
            del empty
            log.info("neighbors: %d vectors in %d shards on %d nodes (driver peak RSS %.3f GB)", n, len(pool.actors),
                     len(set(pool.nodes)), peak_rss_gb())
            _finish(ray, pool, lake, run, cfg, spec, rows, pool.ids, source["run_id"], update=False, table=table)
        finally:
            for actor in pool.actors:
                ray.kill(actor)
    log.info("neighbors: k=%d %s graph over %d samples, %s index in %d shards on %d nodes, nprobe %d, recall@k %.4f, "
             "%.1f s", cfg.k, cfg.metric, pool.n, spec.kind, len(pool.actors), len(set(pool.nodes)),
             run.metrics["nprobe"], run.metrics.get("recall_at_k", float("nan")), time.perf_counter() - started)
    return run.run_id


def update(conf: Conf, *, previous: str, fresh_ids: pa.Array) -> str:
    """A new kNN run from run ``previous``: its shards reloaded into the actors, removed and changed rows taken
    out, ``fresh_ids`` (new or changed samples) added, and only the rows whose lists can change searched.

    Row numbers of the previous run stay (a removed sample's row is left empty in the id map; fresh
    samples get new rows at the end), so the saved shards stay valid. An IVF-PQ index with re-ranking
    cannot remove vectors (FAISS's IndexIVFPQR): that case runs the full job.
    """
    from jobs.engines import ray_init

    lake = Lake.from_conf(conf)
    cfg = conf.neighbors
    meta = json.loads(lake.read_artifact(previous, "index.json"))
    if meta["kind"] == "ivf_pq" and meta.get("refine_m"):
        log.info("neighbors: the previous index is IVF-PQ with re-ranking, which cannot remove vectors: full run")
        return run(conf)
    if not meta.get("graph_arrays"):
        log.info("neighbors: the previous run saved no graph arrays (an older version made it): full run")
        return run(conf)
    if meta.get("embeddings_table", "embeddings") != "embeddings":
        log.info("neighbors: the previous index holds patches, which the scan does not track: full run")
        return run(conf)
    source = runs.latest_succeeded(lake, cfg.embeddings_key)
    ray = ray_init(conf)
    started = time.perf_counter()
    with _track(lake, conf, {"embeddings": source["run_id"], "previous": previous}) as run_:
        pool = ShardPool.start(ray, lake, source["run_id"], cfg, int(meta["shards"]))
        try:
            if cfg.k >= pool.n:
                raise ValueError(f"neighbors.k={cfg.k} must be smaller than the {pool.n} embedded samples")
            old_map = pq.read_table(io.BytesIO(lake.read_artifact(previous, "sample_ids.parquet")))["sample_id"]
            old_map = old_map.combine_chunks().cast(pa.string())
            old_row = pc.index_in(pool.ids, old_map)
            fresh = pc.or_(pc.is_null(old_row), pc.is_in(pool.ids, fresh_ids.cast(pa.string()))).to_numpy(
                zero_copy_only=False)
            # removed: old rows whose sample is gone, or changed (it gets a new row)
            kept_old = np.where(fresh, -1, old_row.fill_null(-1).to_numpy(zero_copy_only=False)).astype(np.int64)
            live = np.zeros(len(old_map), bool)
            live[kept_old[kept_old >= 0]] = True
            was = pc.is_valid(old_map).to_numpy(zero_copy_only=False)
            removed = np.flatnonzero(was & ~live)
            rows = kept_old.copy()
            rows[fresh] = len(old_map) + np.arange(int(fresh.sum()))
            id_map = pa.concat_arrays([pc.if_else(pa.array(live), old_map, pa.nulls(len(old_map), pa.string())),
                                       pool.ids.filter(pa.array(fresh))])
            bounds = list(zip(pool.starts[:-1], pool.starts[1:]))
            id_map_ref = ray.put(id_map)
            ray.get([a.set_rows.remote(rows[s:e], id_map_ref) for a, (s, e) in zip(pool.actors, bounds)])
            ray.get([a.load_previous.remote(previous, int(meta["shards"]), removed, fresh[s:e], cfg.k)
                     for a, (s, e) in zip(pool.actors, bounds)])
            stale = np.concatenate([removed, rows[fresh]])  # rows of removed samples, and of new or changed ones
            searched = sum(ray.get([a.mark_stale.remote(stale) for a in pool.actors]))
            log.info("neighbors: vectors, previous shards and lists loaded in %.1f s; %d rows to search",
                     time.perf_counter() - started, searched)
            spec = knn_index.IndexSpec(**{f: meta[f] for f in knn_index.IndexSpec.__dataclass_fields__})
            _finish(ray, pool, lake, run_, cfg, spec, rows, id_map, source["run_id"], update=True)
            run_.metrics["searched"] = float(searched)
        finally:
            for actor in pool.actors:
                ray.kill(actor)
    log.info("neighbors: k=%d graph updated (%d of %d rows searched, %d new or changed, %d removed) in %.1f s",
             cfg.k, searched, pool.n, int(fresh.sum()), len(removed), time.perf_counter() - started)
    return run_.run_id


JOB = Job(name="neighbors", engine="ray", help="FAISS kNN graph on Ray, shards on Ray actors, recall as a target",
          reads=("embeddings",),
          writes=("neighbors",),
          run=run)


if __name__ == "__main__":
    from jobs.neighbors import (
        JOB as IMPORTED_JOB,  # workers load ShardWorker by module name, not from __main__
    )

    IMPORTED_JOB.main()
