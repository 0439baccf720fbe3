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
import platform
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc

import brain
from brain.lake import Lake
from brain.schemas import RUN_RESULT_TABLES, RUNS

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
          executed_on: str = "", run_id: str | None = None, keep_staged: bool = False) -> Iterator[Run]:
    """Record a run around a block of work.

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
                executed_on=executed_on)
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
