"""Scheduled lake scan: bring a dataset's results up to date with its sources, doing only the new work.

    lock (one scan per dataset) → runs left `running` by a dead scan: marked failed, outputs removed
      → diff the sources with `samples` (new / changed / removed files)        brain.scan
      → ingest the new and changed files, drop the removed ones               run `ingest_<dataset>`
      → embed the samples the latest embeddings run lacks (or that changed);  run `embeddings`
        the other vectors are carried over, so each run is complete
      → update the kNN graph: search the new vectors, merge them into the     run `knn`
        unaffected rows' lists, re-search rows that lost a neighbour
      → uniqueness again if its kNN input changed                             run `uniqueness`

Every step decides from the lake's state, not from the diff, what it still has to do: a
scan killed part-way left only whole runs committed (each a single Delta commit, its
catalog row `running` until then), and the next scan continues after the last committed
step. Steps with at most ``scan.in_process_max`` new samples run in this process (no Ray,
no Spark start); bigger ones on the configured Ray and Spark.
"""

from __future__ import annotations

import json
import logging
import time

import pyarrow as pa
import pyarrow.compute as pc

from brain import ingest, runs
from brain.config import Conf, ConfError
from brain.lake import Lake, plain_strings
from brain.scan import ScanLock, diff_sources
from brain.schemas import INGEST_ERRORS
from jobs.registry import Job

log = logging.getLogger("jobs.scan")


def _latest(lake: Lake, key: str) -> dict | None:
    try:
        return runs.latest_succeeded(lake, key)
    except runs.RunNotFoundError:
        return None


def with_sources(lake: Lake, conf: Conf) -> Conf:
    """The config with its ingest source; when it names none, the one the dataset was last ingested from."""
    if conf.ingest.source or conf.ingest.manifest:
        return conf
    last = _latest(lake, f"ingest_{conf.dataset}")
    if last is None:
        raise ConfError(f"scan needs ingest.source or ingest.manifest: dataset {conf.dataset!r} was never "
                        f"ingested into {lake.uri}")
    recorded = json.loads(last["config"])["ingest"]
    return conf.model_copy(update={"ingest": conf.ingest.model_copy(update=recorded)})


def ingest_step(lake: Lake, conf: Conf, diff) -> None:
    """Ingest new and changed files, delete removed samples; carry still-bad files' errors over."""
    previous = _latest(lake, f"ingest_{conf.dataset}")
    with runs.track(lake, brain_key=f"ingest_{conf.dataset}", method="ingest", dataset=conf.dataset,
                    config=conf.model_dump(), policy=conf.runs,
                    inputs={"previous": previous["run_id"]} if previous else {}) as run:
        samples, errors = ingest.probe(diff.new + diff.changed, dataset=conf.dataset, run_id=run.run_id,
                                       limits=conf.images.limits())
        ingest.check_new_ids(plain_strings(lake.read("samples", columns=["sample_id", "uri"],
                                                     filter=pc.field("dataset") == conf.dataset)), samples)
        if samples.num_rows:
            run.upsert("samples", samples, key="sample_id")
        if diff.removed:
            ids = ", ".join(runs.sql_literal(s) for s in diff.removed)
            run.delete("samples", f"sample_id IN ({ids})")
        parts = [errors]
        if previous is not None:
            probed = pa.array([f.uri for f in diff.new + diff.changed], pa.string())
            old = plain_strings(lake.read("ingest_errors", filter=(pc.field("run_id") == previous["run_id"])
                                          & (pc.field("stage") == "ingest")))
            old = old.filter(pc.invert(pc.is_in(old["uri"], probed)))
            parts.append(old.set_column(0, "run_id", pa.array([run.run_id] * old.num_rows, pa.string())))
        kept = pa.concat_tables([p.cast(INGEST_ERRORS) for p in parts])
        if kept.num_rows:
            run.write("ingest_errors", kept)
        run.metrics.update(removed=float(len(diff.removed)))


def embed_step(lake: Lake, conf: Conf) -> int | None:
    """Embed what the latest embeddings run lacks; None when it is complete. Returns how many were embedded."""
    from jobs import embed

    view = embed.select_samples(lake, conf)
    previous = _latest(lake, conf.embed.brain_key)
    if previous is None:
        embed.run(conf, in_process=view.num_rows <= conf.scan.in_process_max)
        return view.num_rows
    done = lake.read("embeddings", columns=["sample_id"], filter=pc.field("run_id") == previous["run_id"])["sample_id"]
    refused = lake.read("ingest_errors", columns=["uri"], filter=pc.field("run_id") == previous["run_id"])["uri"]
    ingested = lake.read("samples", columns=["sample_id", "ingested_at"], filter=pc.field("dataset") == conf.dataset)
    changed = ingested.filter(pc.greater_equal(ingested["ingested_at"], pa.scalar(previous["started_at"],
                                                                                   ingested["ingested_at"].type)))
    settled = pc.or_(pc.is_in(view["sample_id"], done), pc.is_in(view["uri"], refused.cast(pa.string())))
    todo = view.filter(pc.or_(pc.invert(settled), pc.is_in(view["sample_id"], changed["sample_id"])))
    gone = pc.sum(pc.invert(pc.is_in(done, view["sample_id"]))).as_py() or 0
    if todo.num_rows == 0 and gone == 0:
        return None
    embed.run(conf, sample_ids=todo["sample_id"].to_pylist(), carry_from=previous["run_id"],
              in_process=todo.num_rows <= conf.scan.in_process_max)
    return todo.num_rows


def neighbors_step(lake: Lake, conf: Conf) -> int | None:
    """Bring the kNN graph up to date with the latest embeddings run; None when it is. Returns fresh rows."""
    from jobs import neighbors

    cfg = conf.neighbors
    source = runs.latest_succeeded(lake, cfg.embeddings_key)
    previous = _latest(lake, cfg.brain_key)
    if previous is not None and dict(previous["input_run_ids"] or []).get("embeddings") == source["run_id"]:
        return None
    ids = lake.read("embeddings", columns=["sample_id"], filter=pc.field("run_id") == source["run_id"])["sample_id"]
    if previous is not None:
        old_conf = json.loads(previous["config"])["neighbors"]
        graph = lake.read("neighbors", columns=["sample_id"], filter=pc.field("run_id") == previous["run_id"])
        ingested = lake.read("samples", columns=["sample_id", "ingested_at"],
                             filter=pc.field("dataset") == conf.dataset)
        recent = ingested.filter(pc.greater_equal(ingested["ingested_at"], pa.scalar(
            previous["started_at"], ingested["ingested_at"].type)))["sample_id"]
        fresh = pc.filter(ids, pc.or_(pc.invert(pc.is_in(ids, graph["sample_id"])), pc.is_in(ids, recent)))
        same_graph = old_conf["k"] == cfg.k and old_conf["metric"] == cfg.metric
        if same_graph and len(fresh) <= conf.scan.in_process_max:
            neighbors.update(conf, previous=previous["run_id"], fresh_ids=fresh)
            return len(fresh)
    neighbors.run(conf)
    return len(ids)


def uniqueness_step(lake: Lake, conf: Conf, fresh: int) -> bool:
    """Score again when the kNN graph it read was replaced; False when it is up to date."""
    from jobs import uniqueness

    source = runs.latest_succeeded(lake, conf.uniqueness.neighbors_key)
    previous = _latest(lake, conf.uniqueness.brain_key)
    if previous is not None and dict(previous["input_run_ids"] or []).get("neighbors") == source["run_id"]:
        return False
    # normalisation is over the dataset's maximum, so every score is recomputed; small updates skip Spark
    uniqueness.run(conf, in_process=fresh <= conf.scan.in_process_max)
    return True


def run(conf: Conf) -> str:
    lake = Lake.from_conf(conf)
    conf = with_sources(lake, conf)
    src = conf.ingest
    started = time.perf_counter()
    with ScanLock(lake, conf.dataset, stale_after_s=conf.scan.lock_stale_s, heartbeat_s=conf.scan.heartbeat_s):
        keys = [f"scan_{conf.dataset}", f"ingest_{conf.dataset}", conf.embed.brain_key, conf.neighbors.brain_key,
                conf.uniqueness.brain_key]
        left = [run_id for key in keys for run_id in runs.abandon_stale(lake, brain_key=key, policy=conf.runs)]
        with runs.track(lake, brain_key=f"scan_{conf.dataset}", method="scan", dataset=conf.dataset,
                        config=conf.model_dump(), policy=conf.runs) as scan:
            files = ingest.source_files(src)
            diff = diff_sources(lake, conf.dataset, files)
            scan.metrics.update(new=len(diff.new), changed=len(diff.changed), removed=len(diff.removed),
                                unchanged=diff.unchanged, abandoned_runs=len(left))
            steps = []
            if not diff.empty:
                ingest_step(lake, conf, diff)
                steps.append("ingest")
            embedded = embed_step(lake, conf)
            if embedded is not None:
                steps.append("embeddings")
                scan.metrics["embedded"] = embedded
            fresh = neighbors_step(lake, conf)
            if fresh is not None:
                steps.append("knn")
            if uniqueness_step(lake, conf, fresh or 0):
                steps.append("uniqueness")
            scan.metrics["steps"] = len(steps)
    took = time.perf_counter() - started
    if steps:
        print(f"scan of {conf.dataset!r}: {len(diff.new)} new, {len(diff.changed)} changed, {len(diff.removed)} "
              f"removed; ran {', '.join(steps)} in {took:.1f} s")
    else:
        print(f"scan of {conf.dataset!r}: no new work ({diff.unchanged} files unchanged, {took:.1f} s)")
    return scan.run_id


JOB = Job(name="scan", engine="ray", help="incremental scan of the dataset's sources (what a scheduler runs)",
          reads=("samples", "embeddings", "neighbors", "ingest_errors"),
          writes=("samples", "ingest_errors", "embeddings", "neighbors", "uniqueness"),
          run=run)


if __name__ == "__main__":
    JOB.main()
