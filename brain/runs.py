"""The run catalog: every job run is a row of the ``runs`` table.

A run is started with status ``running``, and ends ``succeeded`` (with the rows it
wrote per table) or ``failed`` (with the error). A failed run's rows are deleted
from every result table, so nothing partial stays visible. A brain key names one
result at a time: when a run succeeds, earlier runs with the same key are deleted
with their outputs (as FiftyOne replaces a brain run of the same key).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import platform
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow.dataset import field as pads_field

import brain
from brain.lake import Lake
from brain.schemas import RUN_RESULT_TABLES, RUNS, TABLES

SUBMISSION_ENV = "LAKEBRAIN_SUBMISSION_ID"  # set by `brain submit` for the job it sends to a cluster

log = logging.getLogger(__name__)


class RunNotFoundError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class Run:
    """A run in progress; jobs add to ``rows_written`` as they commit."""

    lake: Lake
    run_id: str
    brain_key: str
    method: str
    dataset: str
    rows_written: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _row(**values: Any) -> pa.Table:
    return pa.Table.from_pylist([values], schema=RUNS)


@contextlib.contextmanager
def track(lake: Lake, *, brain_key: str, method: str, dataset: str, config: dict[str, Any],
          input_key: str | None = None, engine_versions: dict[str, str] | None = None,
          executed_on: str = "", sample_filter: str | None = None, run_id: str | None = None,
          keep_staged: bool = False) -> Iterator[Run]:
    """Record a run around a block of work.

    ``sample_filter`` is the SQL predicate over ``samples`` selecting what the run was
    computed on (default: the run's dataset); :func:`load_view` re-applies it. The
    cluster submission id is read from ``$LAKEBRAIN_SUBMISSION_ID`` when set.

    On an exception the run's committed rows are deleted from every result table,
    its staged files are discarded (kept with ``keep_staged``, for a resumable job
    to pick up), and the row says ``failed`` with the error. ``run_id`` continues
    an unfinished run (its catalog row is replaced); by default a new id is made.
    """
    run = Run(lake, run_id or uuid.uuid4().hex, brain_key, method, dataset)
    started = _now()
    base = dict(run_id=run.run_id, brain_key=brain_key, method=method, dataset=dataset,
                input_key=input_key, samples_version=lake.version("samples"),
                config=json.dumps(config, sort_keys=True, default=str), started_at=started,
                package_version=brain.__version__, git_sha=_git_sha(),
                engine_versions=sorted({"python": platform.python_version(), **(engine_versions or {})}.items()),
                executed_on=executed_on, submission_id=os.environ.get(SUBMISSION_ENV) or None,
                sample_filter=sample_filter or dataset_filter(dataset))
    running = _row(**base, status="running", error=None, finished_at=None, rows_written=[], metrics=[])
    lake.upsert("runs", running, key="run_id") if run_id else lake.append("runs", running)
    log.info("run %s (%s, key %r) started", run.run_id, method, brain_key)
    try:
        yield run
    except BaseException as err:
        _remove_outputs(lake, run.run_id, keep_staged=keep_staged)
        lake.upsert("runs", _row(**base, status="failed", error=f"{type(err).__name__}: {err}",
                                 finished_at=_now(), rows_written=[], metrics=[]), key="run_id")
        log.error("run %s (%s) failed: %s", run.run_id, method, err)
        raise
    lake.upsert("runs", _row(**base, status="succeeded", error=None, finished_at=_now(),
                             rows_written=sorted(run.rows_written.items()),
                             metrics=sorted(run.metrics.items())), key="run_id")
    for earlier in _runs_with_key(lake, brain_key):
        if earlier != run.run_id:
            delete_run(lake, earlier)
    log.info("run %s (%s) succeeded: %s", run.run_id, method, run.rows_written)


def _runs_with_key(lake: Lake, brain_key: str) -> list[str]:
    runs = lake.read("runs", columns=["run_id", "brain_key"])
    return runs.filter(pc.equal(runs["brain_key"], brain_key))["run_id"].to_pylist()


def _remove_outputs(lake: Lake, run_id: str, *, keep_staged: bool = False) -> None:
    for table in RUN_RESULT_TABLES:
        lake.delete_where(table, f"run_id = '{run_id}'")
        if not keep_staged:
            lake.discard_staged(table, run_id)
    if not keep_staged:
        lake.delete_artifacts(run_id)


def abandon_running(lake: Lake, *, dataset: str, keys: list[str], reason: str) -> list[str]:
    """Mark the dataset's ``running`` runs with these brain keys failed and remove their outputs.

    Only call this while holding the lock that guarantees no live process runs them.
    """
    runs = lake.read("runs")
    stale = runs.filter(pc.and_(pc.and_(pc.equal(runs["dataset"], dataset), pc.equal(runs["status"], "running")),
                                pc.is_in(runs["brain_key"], pa.array(keys, pa.string()))))
    for row in stale.to_pylist():
        _remove_outputs(lake, row["run_id"])
        lake.upsert("runs", _row(**{**row, "status": "failed", "error": reason, "finished_at": _now()}), key="run_id")
        log.warning("run %s (%s) was left running by a process that ended: marked failed", row["run_id"], row["method"])
    return stale["run_id"].to_pylist()


def list_runs(lake: Lake, *, method: str | None = None) -> pa.Table:
    """The catalog, oldest first (optionally one method's runs)."""
    runs = lake.read("runs")
    if method:
        runs = runs.filter(pc.equal(runs["method"], method))
    return runs.sort_by("started_at")


def get_run(lake: Lake, key: str) -> dict[str, Any]:
    """The newest run whose brain key or run id is ``key``."""
    runs = lake.read("runs")
    match = runs.filter(pc.or_(pc.equal(runs["brain_key"], key), pc.equal(runs["run_id"], key)))
    if match.num_rows == 0:
        raise RunNotFoundError(f"no run with key or id {key!r} in {lake.uri}")
    return match.sort_by([("started_at", "descending")]).slice(0, 1).to_pylist()[0]


def latest_succeeded(lake: Lake, brain_key: str) -> dict[str, Any]:
    """The run a downstream job should read for ``brain_key``; a clear error if none succeeded."""
    runs = lake.read("runs")
    match = runs.filter(pc.and_(pc.equal(runs["brain_key"], brain_key), pc.equal(runs["status"], "succeeded")))
    if match.num_rows == 0:
        raise RunNotFoundError(f"no succeeded run with key {brain_key!r} in {lake.uri}: run that step first")
    return match.sort_by([("started_at", "descending")]).slice(0, 1).to_pylist()[0]


def delete_run(lake: Lake, key: str) -> str:
    """Delete a run (by key or id): its rows in every table, its files, its catalog row."""
    run_id = get_run(lake, key)["run_id"]
    _remove_outputs(lake, run_id)
    lake.delete_where("runs", f"run_id = '{run_id}'")
    log.info("deleted run %s", run_id)
    return run_id


def sql_literal(value: str) -> str:
    """``value`` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def dataset_filter(dataset: str, where: str | None = None) -> str:
    """The sample filter of a run over ``dataset`` (and an optional SQL ``where`` over samples)."""
    return f"dataset = {sql_literal(dataset)}" + (f" AND ({where})" if where else "")


def rename_run(lake: Lake, old: str, new: str) -> list[str]:
    """Rename brain key ``old`` to ``new`` in `runs` and every table with a brain_key column.

    Refused when ``new`` is already a key (its results would be mixed with another's).
    Runs that consumed ``old`` (their ``input_key``) follow. Returns the renamed run ids.
    """
    if not new or new == old:
        raise ValueError(f"new brain key must be non-empty and differ from {old!r}")
    keys = set(lake.read("runs", columns=["brain_key"])["brain_key"].to_pylist())
    if old not in keys:
        raise RunNotFoundError(f"no run with key {old!r} in {lake.uri}")
    if new in keys:
        raise ValueError(f"brain key {new!r} already exists in {lake.uri}: delete or rename it first")
    run_ids = _runs_with_key(lake, old)
    for table, schema in TABLES.items():
        if "brain_key" in schema.names and lake.exists(table):
            lake.table(table).update(updates={"brain_key": sql_literal(new)},
                                     predicate=f"brain_key = {sql_literal(old)}")
    lake.table("runs").update(updates={"input_key": sql_literal(new)}, predicate=f"input_key = {sql_literal(old)}")
    log.info("renamed brain key %r to %r (%d runs)", old, new, len(run_ids))
    return run_ids


def _result_rows(table: str) -> Callable[[Lake, dict[str, Any]], pa.Table]:
    def load(lake: Lake, run: dict[str, Any]) -> pa.Table:
        return lake.read(table, filter=pads_field("run_id") == run["run_id"])
    return load


def _faiss_index(lake: Lake, run: dict[str, Any]) -> list:
    """A kNN run's index shards (``index-<i>.faiss``, as many as ``index.json`` says); search them
    together with :func:`brain.index.search`."""
    from brain import index

    meta = json.loads(lake.read_artifact(run["run_id"], "index.json"))
    return [index.deserialize(np.frombuffer(lake.read_artifact(run["run_id"], f"index-{i}.faiss"), dtype=np.uint8))
            for i in range(meta["shards"])]


# What load_results returns, by run method; add an entry for a new method.
LOADERS: dict[str, Callable[[Lake, dict[str, Any]], Any]] = {
    "embeddings": _result_rows("embeddings"),
    "neighbors": _faiss_index,
    "uniqueness": _result_rows("uniqueness"),
}


def load_results(lake: Lake, key: str) -> Any:
    """The outputs of the newest run with ``key`` (brain key or run id).

    Arrow tables of its rows for table-producing methods, the FAISS index for a kNN
    (``neighbors``) run; see :data:`LOADERS`.
    """
    run = get_run(lake, key)
    if run["status"] != "succeeded":
        raise ValueError(f"run {run['run_id']} ({key!r}) is {run['status']}: it has no results to load")
    try:
        loader = LOADERS[run["method"]]
    except KeyError:
        raise ValueError(f"no results loader for method {run['method']!r}; known: {sorted(LOADERS)}") from None
    return loader(lake, run)


def load_view(lake: Lake, key: str) -> pa.Table:
    """The `samples` rows the run with ``key`` was computed on (its recorded sample filter)."""
    from brain import sql

    run = get_run(lake, key)
    predicate = run.get("sample_filter") or dataset_filter(run["dataset"])
    return sql.query(lake, f"SELECT * FROM samples WHERE {predicate} ORDER BY sample_id")
