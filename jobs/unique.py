"""Unique subset job: the n most spread samples of an embeddings run (k-center greedy) → `unique`.

    embeddings (this run, this dataset, in sample-id order: ties go to the lowest id)
      → brain.methods.duplicates.find_unique_state (driver, NumPy) → (sample_id, rank) rows → one Delta commit
      + the run's artifact unique_state.npz (the mean, N, the picks' and the mean's nearest samples' vectors)

Incremental (math in brain.methods.duplicates, ``extend_unique``): when the key's current run used the same
n, metric and embeddings key, and the embeddings run read now is the one it read or was carried over from it
(``carried_from``, the scan's incremental embedding) with samples only added (none removed from the dataset,
none re-ingested since that embeddings run started), the job reads only the new samples' vectors and checks
which picks they could change: none → the previous picks again (no pass over the data); from step j → the
greedy continues from step j over every vector, pruned with the previous run's last radius as its guess;
the first pick → a full run. The same rows as a full run. With new samples like the old ones a pick changes
early (near step N/M for M new samples), so the gain is mostly the better pruning guess (bench/unique_incremental.py).

The run's metrics: ``full`` (1 when the greedy ran from the first pick), ``resumed_from_step`` (n + 1 when no
pick changed), ``new_samples``. A full pass needs every vector in one process (N·D floats: 0.5 GB for 1M × 128).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from brain import runs
from brain.config import Conf
from brain.lake import Lake, plain_strings
from brain.methods import duplicates as dup
from brain.vectors import to_matrix
from jobs.registry import Job

log = logging.getLogger("jobs.unique")

STATE_ARTIFACT = "unique_state.npz"
MAX_CARRY_CHAIN = 1000  # embeddings runs followed back through carried_from to the previous unique run's


def read_vectors(lake: Lake, run_id: str, sample_ids: pa.Array | None = None) -> tuple[pa.Array, np.ndarray]:
    """(sample ids, [N, D] float32 vectors) of one embeddings run (only ``sample_ids`` when given), in id order."""
    where = pc.field("run_id") == run_id
    if sample_ids is not None:
        where = where & pc.field("sample_id").isin(sample_ids)
    table = plain_strings(lake.read("embeddings", columns=["sample_id", "vector"], filter=where))
    if table.num_rows == 0 and (sample_ids is None or len(sample_ids)):
        raise ValueError(f"embeddings run {run_id} has no rows" + ("" if sample_ids is None else " for these samples"))
    ids = table["sample_id"].combine_chunks()
    vectors = to_matrix(table["vector"], ids, context=f"embeddings run {run_id}", dtype=np.float32)
    order = pc.array_sort_indices(ids)  # reordered as NumPy rows: taking Arrow list rows is much slower
    return ids.take(order), vectors[order.to_numpy()]


def dataset_vectors(lake: Lake, run_id: str, ids: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """``read_vectors`` of the run's samples in ``ids`` (read by run id and kept in memory: a filter naming
    every id reads several times slower)."""
    every_id, vectors = read_vectors(lake, run_id)
    mine = pc.is_in(every_id, value_set=ids).to_numpy(zero_copy_only=False)
    return every_id.filter(pa.array(mine)), vectors[mine]


def dataset_ids(lake: Lake, run_id: str, dataset: str) -> pa.Array:
    """The sample ids of an embeddings run that are samples of ``dataset`` now, sorted."""
    ids = plain_strings(lake.read("embeddings", columns=["sample_id"], filter=pc.field("run_id") == run_id))["sample_id"]
    mine = plain_strings(lake.read("samples", columns=["sample_id"], filter=pc.field("dataset") == dataset))["sample_id"]
    ids = ids.filter(pc.is_in(ids, value_set=mine))
    return ids.take(pc.array_sort_indices(ids)).combine_chunks()


@dataclass(frozen=True)
class Resumable:
    """What the key's current run leaves to an incremental run: its state, picks (in order) and the new ids."""

    state: dup.UniqueState
    picks: pa.Array
    new_ids: pa.Array


def _carried_from(lake: Lake, source: dict, earlier: str) -> bool:
    """Whether embeddings run ``source`` is ``earlier`` or holds its vectors carried over (through a chain)."""
    run = source
    for _ in range(MAX_CARRY_CHAIN):
        if run["run_id"] == earlier:
            return True
        parent = dict(run["input_run_ids"] or []).get("carried_from")
        if parent is None:
            return False
        run = runs.get_run(lake, parent)
    return False


def resumable(lake: Lake, conf: Conf, source: dict, ids: pa.Array) -> tuple[Resumable | None, str]:
    """The previous run's state when this run may extend it (module docstring), else None; and why."""
    cfg = conf.unique
    try:
        previous = runs.latest_succeeded(lake, cfg.brain_key)
    except runs.RunNotFoundError:
        return None, "no previous run"
    before = json.loads(previous["config"]).get("unique", {})
    if (before.get("n"), before.get("metric"), before.get("embeddings_key")) != (cfg.n, cfg.metric, cfg.embeddings_key):
        return None, "the previous run had other settings"
    earlier = dict(previous["input_run_ids"] or []).get("embeddings")
    if earlier is None or not _carried_from(lake, source, earlier):
        return None, "the embeddings were not carried over from the previous run's"
    try:
        state = dup.UniqueState.from_bytes(lake.read_artifact(previous["run_id"], STATE_ARTIFACT))
    except FileNotFoundError:
        return None, "the previous run saved no state"
    before_ids = plain_strings(lake.read("embeddings", columns=["sample_id"],
                                         filter=pc.field("run_id") == earlier))["sample_id"]
    was_there = pc.is_in(ids, value_set=before_ids)
    kept = ids.filter(was_there)
    # re-ingested since that embeddings run started: the scan's embedding gave them new vectors
    ingested = lake.read("samples", columns=["sample_id", "ingested_at"], filter=pc.field("dataset") == conf.dataset)
    since = pa.scalar(runs.get_run(lake, earlier)["started_at"], ingested["ingested_at"].type)
    recent = plain_strings(ingested.filter(pc.greater_equal(ingested["ingested_at"], since)))["sample_id"]
    if pc.any(pc.is_in(recent, value_set=kept)).as_py():
        return None, "samples were re-ingested"
    if len(kept) != state.count:
        return None, "samples were removed"
    picks = lake.read("unique", columns=["sample_id", "rank"], filter=pc.field("run_id") == previous["run_id"])
    picks = plain_strings(picks.take(pc.sort_indices(picks["rank"])))["sample_id"].combine_chunks()
    return Resumable(state, picks, ids.filter(pc.invert(was_there))), "samples only added"


def run(conf: Conf) -> str:
    lake = Lake.from_conf(conf)
    cfg = conf.unique
    source = runs.latest_succeeded(lake, cfg.embeddings_key)
    started = time.perf_counter()
    with runs.track(lake, brain_key=cfg.brain_key, method="unique", dataset=conf.dataset,
                    inputs={"embeddings": source["run_id"]}, config=conf.model_dump(), policy=conf.runs) as run:
        ids = dataset_ids(lake, source["run_id"], conf.dataset)
        if cfg.n > len(ids):
            raise ValueError(f"unique.n={cfg.n} is more than the {len(ids)} embedded samples of {conf.dataset!r}")
        earlier, why = resumable(lake, conf, source, ids)
        every_id = vectors = None
        if earlier is None or len(earlier.new_ids) * cfg.n > len(ids):
            # all vectors now: with M new samples like the old ones a pick changes near step N/M (the greedy
            # then needs them all), so only for few new samples is reading just theirs first worth it
            every_id, vectors = dataset_vectors(lake, source["run_id"], ids)
        step, state = 1, None
        if earlier is not None:
            if vectors is None:
                _, new_vectors = read_vectors(lake, source["run_id"], earlier.new_ids)
            else:
                new_vectors = vectors[pc.is_in(every_id, value_set=earlier.new_ids).to_numpy(zero_copy_only=False)]
            step, state = dup.extend_unique(earlier.state, new_vectors, metric=cfg.metric)
            run.metrics["new_samples"] = float(len(earlier.new_ids))
            picked_ids = earlier.picks
        if state is None:
            if vectors is None:
                every_id, vectors = dataset_vectors(lake, source["run_id"], ids)
            leading = [] if earlier is None else pc.index_in(earlier.picks[:step - 1], value_set=every_id).to_pylist()
            guess = None if earlier is None else earlier.state.radius * dup.RADIUS_SLACK
            picked, state = dup.find_unique_state(vectors, cfg.n, metric=cfg.metric, leading=leading,
                                                  radius_guess=guess)
            picked_ids = every_id.take(pa.array(picked))
        run.metrics["full"] = float(step == 1)
        run.metrics["resumed_from_step"] = float(step)
        run.write("unique", pa.table({
            "run_id": pa.array([run.run_id] * cfg.n, pa.string()),
            "brain_key": pa.array([cfg.brain_key] * cfg.n, pa.string()),
            "sample_id": picked_ids,
            "rank": pa.array(np.arange(cfg.n, dtype=np.int32)),
        }))
        run.write_artifact(STATE_ARTIFACT, state.to_bytes())
    how = (f"in full ({why})" if earlier is None else "in full (the first pick changed)" if step == 1
           else f"from step {step} ({why})")
    log.info("unique: %d of %d samples picked %s in %.1f s", cfg.n, len(ids), how, time.perf_counter() - started)
    return run.run_id


JOB = Job(name="unique", engine="driver", help="a unique (k-center) subset of n samples",
          reads=("embeddings", "samples"),
          writes=("unique",),
          run=run)


if __name__ == "__main__":
    JOB.main()
