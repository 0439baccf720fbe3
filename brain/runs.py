"""The run catalog: an append-only log of run events, and the commit point of every job.

Every job runs inside :func:`track`. The run's result rows are staged under its
``run_id`` (:meth:`Run.write`, :meth:`Run.stage_dir`) and committed to their
tables when the job's block ends; only then does one append to ``run_events``
say ``succeeded``. That single append is what switches a brain key to the new
run: readers resolve "the current run of a key" from the log (:func:`resolve`),
so a reader sees either the old run's rows or the new run's, never both and
never half of one. Rows of a run that is not current are invisible to the table
views (:mod:`brain.sql`) even while they are still stored.

Events (``run_events.event``):

* ``started`` — the run record (config with credentials redacted, input run ids,
  versions, where it runs, its sample filter);
* ``succeeded`` / ``failed`` / ``abandoned`` — the first one after the run's last
  ``started`` ends it (a resumed run starts again with the same id);
* ``renamed`` — the run's brain key changes (``brain_key`` holds the new key);
* ``deleted`` — taken out of the catalog by a person;
* ``purged`` — its rows were removed from the result tables (:func:`vacuum`).

Resolution: a key's current run is, among its succeeded and not deleted runs, the
one whose ``succeeded`` event is newest (``at``, then ``run_id``: a total order
every reader agrees on). Older succeeded runs of the key are ``superseded``.

Appends to a Delta table never conflict, so any number of jobs can start, succeed
and fail on one lake at once. Liveness is a heartbeat file per running run
(:meth:`brain.lake.Lake.beat`); a run whose heartbeat is older than
``abandon_after_s`` is marked ``abandoned`` by the next job that starts on its key.
SIGTERM inside a run raises :class:`JobTerminated`, so the run ends ``failed``.

Removal is separate from replacement: :func:`vacuum` removes the rows of runs
that stopped being current more than ``retention_hours`` ago and are not the
input of a current or running run, then (one retention period later) their files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

import brain
from brain.config import RunsConf
from brain.errors import plain_text
from brain.lake import Lake
from brain.schemas import RUN_EVENTS, RUN_RESULT_TABLES, RUNS, TABLES

SUBMISSION_ENV = "LAKEBRAIN_SUBMISSION_ID"  # set by `brain submit` for the job it sends to a cluster
TERMINAL = ("succeeded", "failed", "abandoned")
# Packages whose versions a run records when its process has loaded them.
RECORDED_PACKAGES = {"ray": "ray", "pyspark": "pyspark", "numpy": "numpy", "pyarrow": "pyarrow",
                     "deltalake": "deltalake", "faiss": "faiss-cpu", "torch": "torch", "duckdb": "duckdb",
                     "sklearn": "scikit-learn", "umap": "umap-learn"}

log = logging.getLogger(__name__)


class RunNotFoundError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class JobTerminated(BaseException):
    """The job's process was asked to stop (SIGTERM): its run ends ``failed``."""


class RunAbandonedError(RuntimeError):
    """Another process marked this run abandoned (its heartbeat had stopped) before it could succeed."""


# -- the run a job is inside ------------------------------------------------------------------------
@dataclass
class Run:
    """A run in progress: the job stages its rows here; :func:`track` commits them."""

    lake: Lake
    run_id: str
    brain_key: str
    method: str
    dataset: str
    rows_written: dict[str, int] = field(default_factory=dict)  # filled by track when it commits
    metrics: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def write(self, table: str, rows: pa.Table, *, name: str | None = None) -> None:
        """Stage ``rows`` for ``table`` (one Parquet file; ``name`` makes it deterministic, for resumable jobs)."""
        self.lake.stage(table, self.run_id, rows, name=name)

    def stage_dir(self, table: str) -> str:
        """The folder where engines write this run's Parquet files for ``table`` (committed by track)."""
        return self.lake.staging_dir(table, self.run_id)

    def read_staged(self, table: str, *, columns: list[str] | None = None) -> pa.Table:
        """The rows staged so far for ``table`` (e.g. to count groups before the commit)."""
        return self.lake.read_staged(table, self.run_id, columns=columns)

    def staged_rows(self, table: str) -> int:
        """Rows staged so far for ``table`` (read from the files' footers)."""
        return self.lake.staged_rows(table, self.run_id)

    def upsert(self, table: str, rows: pa.Table, *, key: str) -> None:
        """Insert or replace rows of a table that is not keyed by run (`samples`), now, in one commit."""
        self.lake.upsert(table, rows, key=key)
        self.rows_written[table] = self.rows_written.get(table, 0) + rows.num_rows

    def delete(self, table: str, predicate: str) -> int:
        """Delete rows of a table that is not keyed by run (`samples`), now, in one commit."""
        return self.lake.delete_where(table, predicate)

    def write_artifact(self, name: str, data: bytes) -> str:
        """Save one of the run's files (an index, a fitted model); returns its URI."""
        return self.lake.write_artifact(self.run_id, name, data)

    def warn(self, message: str) -> None:
        """A warning kept in the run record (and logged)."""
        log.warning("run %s: %s", self.run_id, message)
        self.warnings.append(message)

    def _commit_staged(self) -> None:
        for table in RUN_RESULT_TABLES:
            if self.lake.staged_files(table, self.run_id):
                self.rows_written[table] = self.lake.commit_files(table, self.run_id)


# -- the record a run starts with ------------------------------------------------------------------
_CREDENTIAL_WORDS = {"secret", "secrets", "password", "passwd", "token", "credential", "credentials", "access", "auth",
                     "apikey", "sas", "passphrase"}
_KEY_QUALIFIERS = {"api", "private", "account", "signing", "encryption", "master", "client", "session", "ssh"}
REDACTED = "***"


def looks_like_credential(name: str) -> bool:
    """Whether a config key names a credential (``aws_secret_access_key``, ``fs.s3a.access.key``, ``api_key``).

    Brain keys (``brain_key``, ``neighbors_key``) are not: ``key`` counts only right after a
    qualifier such as api/private/account (``fs.azure.account.key.NAME``).
    """
    parts = [p for p in re.split(r"[^a-z0-9]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()) if p]
    if _CREDENTIAL_WORDS.intersection(parts):
        return True
    return any(part in ("key", "keys") and before in _KEY_QUALIFIERS for before, part in zip(parts, parts[1:]))


def redact(config: Any) -> Any:
    """``config`` with the values of credential-looking keys replaced by ``***`` (recursively)."""
    if isinstance(config, dict):
        return {k: REDACTED if looks_like_credential(str(k)) and v not in (None, "", {}, [])
                else redact(v) for k, v in config.items()}
    if isinstance(config, list):
        return [redact(v) for v in config]
    return config


# Config sections a run record never stores: they configure submission, not the computation.
UNRECORDED_SECTIONS = ("submit",)


def recorded_config(config: dict[str, Any]) -> str:
    """The config as the run record stores it: submission settings dropped, credentials redacted."""
    kept = {k: v for k, v in config.items() if k not in UNRECORDED_SECTIONS}
    return json.dumps(redact(kept), sort_keys=True, default=str)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def loaded_versions() -> dict[str, str]:
    """Versions of the recorded packages this process has imported, and Python's."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for module, dist in RECORDED_PACKAGES.items():
        if module in sys.modules:
            try:
                found[dist] = version(dist)
            except PackageNotFoundError:
                pass
    return found


def _append_events(lake: Lake, events: list[dict[str, Any]]) -> None:
    at = _now()
    lake.append("run_events", pa.Table.from_pylist([{"at": at, **e} for e in events], schema=RUN_EVENTS))


# -- resolving the log -------------------------------------------------------------------------------
# Same-instant events apply in lifecycle order.
_EVENT_ORDER = {"started": 0, "renamed": 1, "succeeded": 2, "failed": 2, "abandoned": 2, "deleted": 3, "purged": 4}
_RECORD_FIELDS = ("brain_key", "method", "dataset", "input_key", "input_run_ids", "samples_version", "config",
                  "package_version", "git_sha", "engine_versions", "executed_on", "submission_id", "sample_filter",
                  "host", "pid")


def resolve(events: pa.Table) -> pa.Table:
    """The ``runs`` view: one row per run (schema ``RUNS``) from ``run_events`` rows.

    status = ``running`` until the first terminal event after the run's last ``started``
    (``succeeded`` | ``failed`` | ``abandoned``); a succeeded run that is not its key's
    current run is ``superseded``; ``deleted`` overrides all. current = the key's
    succeeded, not deleted run with the newest ``succeeded`` event (ties: larger run_id).
    """
    records: dict[str, dict[str, Any]] = {}
    renamed_keys: dict[str, str] = {}
    for e in sorted(events.to_pylist(), key=lambda e: (e["at"], _EVENT_ORDER.get(e["event"], 9), e["run_id"])):
        kind, rec = e["event"], records.get(e["run_id"])
        if kind == "started":
            kept_key = rec["brain_key"] if rec else None
            records[e["run_id"]] = rec = {f: e[f] for f in _RECORD_FIELDS}
            rec.update(run_id=e["run_id"], status="running", started_at=e["at"], finished_at=None, error=None,
                       rows_written=None, metrics=None, warnings=None, deleted_at=None, purged_at=None)
            if kept_key:
                rec["brain_key"] = kept_key
        elif rec is None:
            continue
        elif kind in TERMINAL and rec["status"] == "running":
            rec.update(status=kind, finished_at=e["at"], error=e["error"], rows_written=e["rows_written"],
                       metrics=e["metrics"], warnings=e["warnings"])
        elif kind == "renamed":
            renamed_keys[rec["brain_key"]] = e["brain_key"]
            rec["brain_key"] = e["brain_key"]
        elif kind == "deleted":
            rec["deleted_at"] = rec["deleted_at"] or e["at"]
        elif kind == "purged":
            rec["purged_at"] = rec["purged_at"] or e["at"]
    newest: dict[str, tuple] = {}
    for rec in records.values():
        if rec["status"] == "succeeded" and rec["deleted_at"] is None:
            rank = (rec["finished_at"], rec["run_id"])
            newest[rec["brain_key"]] = max(newest.get(rec["brain_key"], rank), rank)
    rows = []
    for rec in records.values():
        current = rec["status"] == "succeeded" and rec["deleted_at"] is None and \
            newest[rec["brain_key"]] == (rec["finished_at"], rec["run_id"])
        superseded_at = None
        status = rec["status"]
        if rec["deleted_at"] is not None:
            status, superseded_at = "deleted", rec["deleted_at"]
        elif status == "succeeded" and not current:
            status, superseded_at = "superseded", newest[rec["brain_key"]][0]
        input_key = rec["input_key"]
        seen = set()
        while input_key in renamed_keys and input_key not in seen:  # inputs follow their key's renames
            seen.add(input_key)
            input_key = renamed_keys[input_key]
        rows.append({**rec, "status": status, "current": current, "superseded_at": superseded_at,
                     "input_key": input_key})
    stale = stale_runs(rows)
    for row in rows:
        row["stale"] = row["run_id"] in stale
    return pa.Table.from_pylist(rows, schema=RUNS).sort_by([("started_at", "ascending"), ("run_id", "ascending")])


def dependencies(run: dict[str, Any], key_of: dict[str, str]) -> list[tuple[str, str]]:
    """The run's inputs by role, ``[(role, run_id)]``, without its own key's earlier runs.

    An input of the run's own key (``carried_from``, ``previous``: an incremental run's
    starting point) is history it replaces, not something it depends on. ``key_of`` maps
    run ids to brain keys.
    """
    return [(role, run_id) for role, run_id in (run["input_run_ids"] or [])
            if key_of.get(run_id) != run["brain_key"]]


def stale_runs(rows: list[dict[str, Any]]) -> set[str]:
    """Ids of the stale runs among ``rows`` (resolved runs: run_id, brain_key, current, input_run_ids).

    A run is stale when one of its inputs (:func:`dependencies`) is no longer the current run
    of that input's key (a newer run replaced it, or it was deleted), or is itself stale:
    stale(r) = ∃ input i of r: ¬current(i) ∨ stale(i).
    Inputs the catalog does not hold (written by another lake) count as unchanged.
    """
    by_id = {r["run_id"]: r for r in rows}
    key_of = {r["run_id"]: r["brain_key"] for r in rows}
    known: dict[str, bool] = {}

    def is_stale(run_id: str, path: frozenset[str]) -> bool:
        if run_id not in known:
            inputs = [i for _, i in dependencies(by_id[run_id], key_of) if i in by_id and i not in path]
            known[run_id] = any(not by_id[i]["current"] or is_stale(i, path | {run_id}) for i in inputs)
        return known[run_id]

    return {run_id for run_id in by_id if is_stale(run_id, frozenset())}


@dataclass(frozen=True)
class Catalog:
    """The run catalog as of one version of ``run_events``: what every reader of one query agrees on."""

    runs: pa.Table  # schema RUNS, oldest first
    version: int

    def current_run_ids(self) -> list[str]:
        return self.runs.filter(self.runs["current"])["run_id"].to_pylist()

    def current(self, brain_key: str) -> dict[str, Any]:
        """The key's current run; a clear error when it has none."""
        match = self.runs.filter(pc.and_(pc.equal(self.runs["brain_key"], brain_key), self.runs["current"]))
        if match.num_rows == 0:
            raise RunNotFoundError(f"no succeeded run with key {brain_key!r}: run that step first")
        return match.to_pylist()[0]

    def get(self, key: str) -> dict[str, Any]:
        """The newest run, not deleted, whose brain key or run id is ``key``."""
        runs = self.runs.filter(pc.invert(pc.equal(self.runs["status"], "deleted")))
        match = runs.filter(pc.or_(pc.equal(runs["brain_key"], key), pc.equal(runs["run_id"], key)))
        if match.num_rows == 0:
            raise RunNotFoundError(f"no run with key or id {key!r}")
        return match.slice(match.num_rows - 1, 1).to_pylist()[0]


# The last catalog resolved in this process, per lake URI, with its table's id. A version of a
# Delta table never changes once written, so a catalog of the same table and version is exact;
# a job asks for it several times a run (the id tells a lake made again at the same path apart).
_resolved: dict[str, tuple[str, Catalog]] = {}


def catalog(lake: Lake) -> Catalog:
    """The catalog as of the latest version of ``run_events`` (one snapshot for one query or job)."""
    events = lake.existing_table("run_events")
    if events is None:
        return Catalog(resolve(RUN_EVENTS.empty_table()), -1)
    table_id, version = events.metadata().id, events.version()
    known = _resolved.get(lake.uri)
    if known is None or known[0] != table_id or known[1].version != version:
        known = _resolved[lake.uri] = (table_id, Catalog(resolve(
            lake.dataset("run_events", version=version).to_table()), version))
    return known[1]


# -- a job's run -----------------------------------------------------------------------------------
class _Heartbeat(threading.Thread):
    def __init__(self, lake: Lake, run_id: str, every_s: float):
        super().__init__(name=f"heartbeat-{run_id[:8]}", daemon=True)
        self.lake, self.run_id, self.every_s = lake, run_id, every_s
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            try:
                self.lake.beat(self.run_id)
            except OSError as err:  # a storage hiccup: the next beat may pass; abandonment needs many misses
                log.warning("heartbeat of run %s not written: %s", self.run_id, err)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


@contextlib.contextmanager
def _terminate_as_exception() -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`JobTerminated` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, _frame):
        raise JobTerminated(f"stopped by {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Callables whose metrics every run this process commits adds to its own (jobs.engines: the seconds spent
# starting or joining engines for the run, kept apart from ``work_s``, the run's block itself).
PROCESS_METRICS: list[Callable[[], dict[str, float]]] = []


@contextlib.contextmanager
def track(lake: Lake, *, brain_key: str, method: str, dataset: str, config: dict[str, Any],
          inputs: dict[str, str] | None = None, input_key: str | None = None, executed_on: str | None = None,
          engine_versions: dict[str, str] | None = None, sample_filter: str | None = None,
          run_id: str | None = None, keep_staged: bool = False, policy: RunsConf | None = None,
          prepare_s: float | None = None) -> Iterator[Run]:
    """Run a job's block as one run of the catalog.

    ``inputs`` names the runs the job reads by role (``{"embeddings": run_id}``); the
    run inherits the first input's ``sample_filter`` (the samples it was computed on)
    and key (``input_key``) unless given. ``run_id`` resumes an unfinished run; with
    ``keep_staged`` a failed run's staged files stay for that. ``prepare_s``: the seconds the job spent
    reading and checking its inputs before the run started (work that grows with N, done first so bad
    input fails before any run is recorded), stored as a metric beside ``work_s``.

    On success every staged table is committed (blind appends) and one ``succeeded``
    event makes the run its key's current run. On any exception, SIGTERM included,
    nothing becomes visible: the staged files are discarded, a ``failed`` event
    records the error, and the exception propagates.
    """
    policy = policy or RunsConf()
    abandon_stale(lake, brain_key=brain_key, policy=policy)
    inputs = dict(inputs or {})
    if inputs and (sample_filter is None or input_key is None):
        snapshot = catalog(lake)
        first = snapshot.get(next(iter(inputs.values())))
        sample_filter = sample_filter or first["sample_filter"]
        input_key = input_key or first["brain_key"]
    run = Run(lake, run_id or uuid.uuid4().hex, brain_key, method, dataset)
    record = dict(run_id=run.run_id, brain_key=brain_key, method=method, dataset=dataset, input_key=input_key,
                  input_run_ids=sorted(inputs.items()), samples_version=lake.version("samples"),
                  config=recorded_config(config), package_version=brain.__version__, git_sha=_git_sha(),
                  engine_versions=sorted({**loaded_versions(), **(engine_versions or {})}.items()),
                  executed_on=executed_on or f"driver host={socket.gethostname()}",
                  submission_id=os.environ.get(SUBMISSION_ENV) or None,
                  sample_filter=sample_filter or dataset_filter(dataset), host=socket.gethostname(), pid=os.getpid())
    lake.beat(run.run_id)
    _append_events(lake, [dict(event="started", **record)])
    heartbeat = _Heartbeat(lake, run.run_id, policy.heartbeat_s)
    heartbeat.start()
    log.info("run %s (%s, key %r) started", run.run_id, method, brain_key)
    if prepare_s is not None:
        run.metrics["prepare_s"] = round(prepare_s, 3)
    block_started = time.perf_counter()
    try:
        with _terminate_as_exception():
            yield run
            run._commit_staged()
        run.metrics.setdefault("work_s", round(time.perf_counter() - block_started, 3))
        for source in PROCESS_METRICS:
            for name, value in source().items():
                run.metrics.setdefault(name, value)
    except BaseException as err:
        heartbeat.stop()
        if not keep_staged:
            _discard_uncommitted(lake, run.run_id)
        _append_events(lake, [dict(event="failed", run_id=run.run_id, brain_key=brain_key,
                                   error=plain_text(f"{type(err).__name__}: {err}"))])
        lake.forget_beat(run.run_id)
        log.error("run %s (%s) failed: %s", run.run_id, method, plain_text(str(err)))
        raise
    heartbeat.stop()
    _append_events(lake, [dict(event="succeeded", run_id=run.run_id, brain_key=brain_key,
                               rows_written=sorted(run.rows_written.items()), metrics=sorted(run.metrics.items()),
                               warnings=list(run.warnings))])
    lake.forget_beat(run.run_id)
    ended = catalog(lake).runs
    status = ended.filter(pc.equal(ended["run_id"], run.run_id))["status"][0].as_py()
    if status not in ("succeeded", "superseded"):
        raise RunAbandonedError(f"run {run.run_id} ({method}, key {brain_key!r}) was marked {status} by another "
                                f"process before it succeeded (its heartbeat was older than "
                                f"{policy.abandon_after_s:g} s): its rows are not current; run it again")
    log.info("run %s (%s) succeeded: %s", run.run_id, method, run.rows_written)


def _discard_uncommitted(lake: Lake, run_id: str) -> None:
    for table in RUN_RESULT_TABLES:
        lake.discard_staged(table, run_id)


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return True  # unknown: only the heartbeat can tell
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def abandon_stale(lake: Lake, *, brain_key: str | None = None, dataset: str | None = None,
                  policy: RunsConf | None = None) -> list[str]:
    """Mark ``running`` runs abandoned whose heartbeat stopped (older than ``abandon_after_s``) or whose
    process, on this host, is gone.

    Limited to one brain key and/or dataset when given. Their uncommitted staged files
    are discarded; committed rows stay invisible until :func:`vacuum`. Returns their ids.
    """
    policy = policy or RunsConf()
    runs = catalog(lake).runs
    running = runs.filter(pc.equal(runs["status"], "running"))
    if brain_key is not None:
        running = running.filter(pc.equal(running["brain_key"], brain_key))
    if dataset is not None:
        running = running.filter(pc.equal(running["dataset"], dataset))
    now, host = time.time(), socket.gethostname()
    stale = []
    for row in running.to_pylist():
        beat = lake.last_beat(row["run_id"]) or row["started_at"].timestamp()
        if now - beat > policy.abandon_after_s or (row["host"] == host and not _pid_alive(row["pid"])):
            stale.append(row)
    if stale:  # the snapshot may be seconds old on a busy machine: keep only runs that are still running
        still = catalog(lake).runs
        still = set(still.filter(pc.equal(still["status"], "running"))["run_id"].to_pylist())
        stale = [row for row in stale if row["run_id"] in still]
    for row in stale:
        _discard_uncommitted(lake, row["run_id"])
        log.warning("run %s (%s, key %r): its process %s on %s was killed or lost: marked abandoned",
                    row["run_id"], row["method"], row["brain_key"], row["pid"], row["host"])
    if stale:
        _append_events(lake, [dict(event="abandoned", run_id=r["run_id"], brain_key=r["brain_key"],
                                   error=f"abandoned: no heartbeat for over {policy.abandon_after_s:g} s or its "
                                         f"process {r['pid']} on {r['host']} is gone (killed or lost)")
                              for r in stale])
        for row in stale:
            lake.forget_beat(row["run_id"])
    return [r["run_id"] for r in stale]


# -- reading the catalog ---------------------------------------------------------------------------
def list_runs(lake: Lake, *, method: str | None = None, history: bool = False) -> pa.Table:
    """The catalog, oldest first: runs not deleted (with ``history``, deleted and purged ones too)."""
    runs = catalog(lake).runs
    if not history:
        runs = runs.filter(pc.invert(pc.equal(runs["status"], "deleted")))
    if method:
        runs = runs.filter(pc.equal(runs["method"], method))
    return runs


def get_run(lake: Lake, key: str) -> dict[str, Any]:
    """The newest run, not deleted, whose brain key or run id is ``key``."""
    try:
        return catalog(lake).get(key)
    except RunNotFoundError:
        raise RunNotFoundError(f"no run with key or id {key!r} in {lake.uri}") from None


def latest_succeeded(lake: Lake, brain_key: str) -> dict[str, Any]:
    """The current run of ``brain_key`` (what downstream jobs read); a clear error if there is none."""
    try:
        return catalog(lake).current(brain_key)
    except RunNotFoundError:
        raise RunNotFoundError(f"no succeeded run with key {brain_key!r} in {lake.uri}: run that step first") from None


def sql_literal(value: str) -> str:
    """``value`` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def dataset_filter(dataset: str, where: str | None = None) -> str:
    """The sample filter of a run over ``dataset`` (and an optional SQL ``where`` over samples)."""
    return f"dataset = {sql_literal(dataset)}" + (f" AND ({where})" if where else "")


# -- changing the catalog --------------------------------------------------------------------------
def rename_run(lake: Lake, old: str, new: str) -> list[str]:
    """Give brain key ``old``'s runs the key ``new`` (one ``renamed`` event per run, in one commit).

    Refused when ``new`` is already a key (its results would be mixed with another's).
    Runs that consumed ``old`` follow (their ``input_key`` resolves to ``new``).
    """
    if not new or new == old:
        raise ValueError(f"new brain key must be non-empty and differ from {old!r}")
    runs = list_runs(lake)
    keys = set(runs["brain_key"].to_pylist())
    if old not in keys:
        raise RunNotFoundError(f"no run with key {old!r} in {lake.uri}")
    if new in keys:
        raise ValueError(f"brain key {new!r} already exists in {lake.uri}: delete or rename it first")
    run_ids = runs.filter(pc.equal(runs["brain_key"], old))["run_id"].to_pylist()
    _append_events(lake, [dict(event="renamed", run_id=r, brain_key=new) for r in run_ids])
    log.info("renamed brain key %r to %r (%d runs)", old, new, len(run_ids))
    return run_ids


def delete_run(lake: Lake, key: str) -> str:
    """Delete a run (the newest with this key or id) with its outputs: rows, files, catalog entry."""
    run = get_run(lake, key)
    _append_events(lake, [dict(event="deleted", run_id=run["run_id"], brain_key=run["brain_key"])])
    _purge(lake, [run["run_id"]])
    log.info("deleted run %s", run["run_id"])
    return run["run_id"]


def delete_runs(lake: Lake, *, dataset: str | None = None, dry_run: bool = False) -> tuple[list[str], list[str]]:
    """Delete every run of ``dataset`` (None: of every dataset in the lake) with its outputs, as
    :func:`delete_run` does one: one ``deleted`` event per run in one commit, then their rows and files.

    Running runs are left alone (their job would commit after the delete); returns the ids of the
    deleted (``dry_run``: to be deleted) runs and of the running ones left. `samples` stays: it is
    the dataset, not a run's output.
    """
    if not dry_run:
        abandon_stale(lake, dataset=dataset)
    table = list_runs(lake)
    if dataset is not None:
        table = table.filter(pc.equal(table["dataset"], dataset))
    running = table.filter(pc.equal(table["status"], "running"))["run_id"].to_pylist()
    doomed = table.filter(pc.not_equal(table["status"], "running")).to_pylist()
    if dry_run:
        return [r["run_id"] for r in doomed], running
    if doomed:
        _append_events(lake, [dict(event="deleted", run_id=r["run_id"], brain_key=r["brain_key"]) for r in doomed])
        _purge(lake, [r["run_id"] for r in doomed])
    log.info("deleted %d runs%s; %d running runs left", len(doomed),
             f" of dataset {dataset!r}" if dataset is not None else "", len(running))
    return [r["run_id"] for r in doomed], running


def _purge(lake: Lake, run_ids: list[str]) -> None:
    """Remove the runs' rows from every result table and their artifacts; record ``purged``."""
    for start in range(0, len(run_ids), 500):
        chunk = run_ids[start:start + 500]
        predicate = f"run_id IN ({', '.join(sql_literal(r) for r in chunk)})"
        for table in RUN_RESULT_TABLES:
            lake.delete_where(table, predicate)
        for run_id in chunk:
            lake.delete_artifacts(run_id)
    if run_ids:
        _append_events(lake, [dict(event="purged", run_id=r) for r in run_ids])


def _inputs_closure(runs: pa.Table, roots: set[str]) -> set[str]:
    inputs = {r["run_id"]: [v for _, v in (r["input_run_ids"] or [])] for r in runs.to_pylist()}
    kept, todo = set(), list(roots)
    while todo:
        run_id = todo.pop()
        if run_id not in kept:
            kept.add(run_id)
            todo.extend(inputs.get(run_id, []))
    return kept


def vacuum(lake: Lake, *, retention_hours: float, dry_run: bool = False,
           policy: RunsConf | None = None) -> dict[str, Any]:
    """Remove what no reader needs any more; safe while jobs run.

    1. Runs that stopped being current (superseded, failed, abandoned, deleted) more than
       ``retention_hours`` ago lose their rows, unless a current or running run reads them
       (directly or through its inputs' inputs): a ``purged`` event records it.
    2. Runs purged more than ``retention_hours`` ago lose their staged files, and every
       table's files that Delta no longer references and that are older than the retention
       are deleted (Delta's vacuum; it never touches the ``_staging`` folders, step 2 does).
    Returns what was (or, with ``dry_run``, would be) removed.
    """
    policy = policy or RunsConf()
    abandon_stale(lake, policy=policy)
    runs = catalog(lake).runs
    now = _now()
    cutoff = now - dt.timedelta(hours=retention_hours)
    live = {r["run_id"] for r in runs.to_pylist() if r["current"] or r["status"] == "running"}
    protected = _inputs_closure(runs, live)
    purge = [r["run_id"] for r in runs.to_pylist()
             if r["run_id"] not in protected and r["purged_at"] is None
             and (r["superseded_at"] or r["finished_at"] or now) <= cutoff]
    removable = [r["run_id"] for r in runs.to_pylist() if r["purged_at"] is not None and r["purged_at"] <= cutoff]
    report: dict[str, Any] = {"purged_runs": purge, "removed_staging": removable, "removed_files": 0}
    if dry_run:
        return report
    _purge(lake, purge)
    gone = set(removable)
    for table in RUN_RESULT_TABLES:
        for run_id in lake.staged_runs(table):
            if run_id in gone:
                lake.remove_staging(table, run_id)
    for table in TABLES:
        if lake.exists(table):
            report["removed_files"] += len(lake.table(table).vacuum(
                retention_hours=int(retention_hours), dry_run=False, enforce_retention_duration=False))
    lake.table("run_events").create_checkpoint()
    log.info("vacuum: purged %d runs' rows, removed %d runs' staged files and %d unreferenced files",
             len(purge), len(removable), report["removed_files"])
    return report


def cleanup(lake: Lake, *, dry_run: bool = False, policy: RunsConf | None = None) -> dict[str, list[str]]:
    """Remove what no run owns any more; safe while jobs run. Returns what was (``dry_run``: would be) removed.

    * staged files no table references, of runs that are not running (killed before their commit,
      or unknown to the catalog); a failed or abandoned run that is its key's newest keeps them, as
      ``resume`` reuses them. Committed files in staging folders are rows: they stay, and so do the
      folders of purged runs, whose files older table versions still reference (vacuum removes them
      once they are older than the retention);
    * heartbeat files of runs that ended (a killed run's last one), and unknown ones older than
      ``abandon_after_s``;
    * artifact folders (indexes, fitted models, classes) of deleted, purged or unknown runs;
    * plots under ``plots/`` (``brain plot``'s default ``<brain key>.html|.png``) of keys no run has.

    Folders are listed before the catalog is read: a run writes its ``started`` event before it
    stages or saves anything, so a folder of a run that has just started is never mistaken for an orphan.
    """
    policy = policy or RunsConf()
    abandon_stale(lake, policy=policy)
    staged = {table: lake.staged_runs(table) for table in RUN_RESULT_TABLES}
    beats, artifact_runs, plots = lake.heartbeat_runs(), lake.artifact_runs(), lake.plot_files()
    runs = {r["run_id"]: r for r in catalog(lake).runs.to_pylist()}
    newest_of_key: dict[str, str] = {}
    for row in runs.values():  # oldest first: the last one seen is the key's newest
        newest_of_key[row["brain_key"]] = row["run_id"]
    resumable = {run_id for run_id in newest_of_key.values() if runs[run_id]["status"] in ("failed", "abandoned")}
    report: dict[str, list[str]] = {"staged_files": [], "heartbeats": [], "artifacts": [], "plots": []}
    for table, run_ids in staged.items():
        for run_id in run_ids:
            row = runs.get(run_id)
            if (row and (row["status"] == "running" or row["purged_at"] is not None)) or run_id in resumable:
                continue
            uncommitted, any_committed = lake.uncommitted_staged(table, run_id)
            report["staged_files"] += [f"{table}/{rel}" for rel in uncommitted]
            if dry_run:
                continue
            if any_committed:
                lake.discard_staged(table, run_id)
            else:  # nothing of it committed: the whole folder goes, leftover temporary files included
                lake.remove_staging(table, run_id)
    now = time.time()
    for run_id in beats:
        row = runs.get(run_id)
        if row is None:
            beat = lake.last_beat(run_id)
            if beat is not None and now - beat <= policy.abandon_after_s:
                continue  # a run that beat just before its `started` event was read
        elif row["status"] == "running":
            continue
        report["heartbeats"].append(run_id)
        if not dry_run:
            lake.forget_beat(run_id)
    for run_id in artifact_runs:
        row = runs.get(run_id)
        if row is None or row["status"] == "deleted" or row["purged_at"] is not None:
            report["artifacts"].append(run_id)
            if not dry_run:
                lake.delete_artifacts(run_id)
    keys = {row["brain_key"] for row in runs.values() if row["status"] != "deleted"}
    for name in plots:
        stem, dot, suffix = name.rpartition(".")
        if dot and suffix in ("html", "png") and stem not in keys:
            report["plots"].append(name)
            if not dry_run:
                lake.delete_plot(name)
    log.info("cleanup%s: %s", " (dry run)" if dry_run else "", {k: len(v) for k, v in report.items()})
    return report


# -- reading a run's outputs (brain.results.load_results loads them by method) ------------------------
def readable_run(lake: Lake, key: str) -> dict[str, Any]:
    """The run a reader means by ``key``: that run for a run id, else the key's current run.

    A key with a re-run in progress (or a failed one) still reads its current run.
    """
    snapshot = catalog(lake)
    try:
        return snapshot.current(key)
    except RunNotFoundError:
        try:
            return snapshot.get(key)
        except RunNotFoundError:
            raise RunNotFoundError(f"no run with key or id {key!r} in {lake.uri}") from None


def load_view(lake: Lake, key: str) -> pa.Table:
    """The `samples` rows ``key``'s current run (or the run with that id) was computed on (its sample filter).

    The stored filter is checked as one expression first: whoever can write the lake cannot make
    a reader run a program (:mod:`brain.sql_expr`).
    """
    from brain.sql_expr import rows_where

    run = readable_run(lake, key)
    predicate = run.get("sample_filter") or dataset_filter(run["dataset"])
    return rows_where(lake, "samples", predicate, what=f"the sample_filter stored by run {run['run_id']}",
                      order_by="sample_id")
