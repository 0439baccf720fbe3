"""Incremental lake scans: what changed in a dataset's sources, and one scan at a time.

A file is

* **new** when its URI has no `samples` row (and is not a known-bad file, see below),
* **changed** when its size or sha256 differs from its `samples` row (the hash is only
  computed for files modified since they were ingested: same size and an mtime before
  ``ingested_at`` is unchanged without reading the file),
* **removed** when a `samples` row's URI is no longer in the source.

Which runs a scan makes again (:func:`plan_refresh`): the dataset's current runs form a graph
by their recorded inputs (``input_run_ids``; a run whose job reads `samples` and records no
input reads the dataset's ingest run current when it started). In topological order, a run is
made again when one of its inputs changed: its input run is no longer its key's current run,
or this scan makes a new one. Runs recorded with ``scan.rerun: manual`` (the default for
runs made by hand) are listed and left as made, and their inputs' changes stop there.

Files that ingest refused (an `ingest_errors` row, stage ``ingest``) are skipped
until they are modified after the error was recorded, so a broken file is not
retried by every scan.

:class:`ScanLock` is a lock file in the lake (``_locks/scan-<dataset>.json``) with
its owner (host, pid) and a heartbeat a background thread refreshes. A second
scan fails with the owner's name while the heartbeat is fresh; a lock whose owner
is gone (same host, dead pid) or whose heartbeat is older than ``stale_after_s``
is taken over. It needs a lake on a POSIX file system (atomic create and rename);
on object stores let the scheduler forbid overlapping runs (CronJob
``concurrencyPolicy: Forbid``, Airflow ``max_active_runs=1``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from brain.ingest import SourceFile
from brain.lake import Lake, plain_strings
from brain.runs import dependencies


class ScanLockedError(RuntimeError):
    """Another scan holds the lake's scan lock for this dataset."""


@dataclass
class SourceDiff:
    new: list[SourceFile]
    changed: list[SourceFile]
    removed: list[str]  # sample ids
    unchanged: int

    @property
    def empty(self) -> bool:
        return not (self.new or self.changed or self.removed)


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def diff_sources(lake: Lake, dataset: str, files: list[SourceFile]) -> SourceDiff:
    """Compare a dataset's current source files with its `samples` rows.

    Vectorised over Arrow and NumPy (a million files: one ``os.stat`` each in Python, the rest
    in columns); a file is hashed only when its size matches and it was modified since ingest.
    """
    in_dataset = pc.field("dataset") == dataset
    # content hashes are read only for the files to hash: a million random 64-character strings take seconds
    known = plain_strings(lake.read("samples", columns=["sample_id", "uri", "size_bytes", "ingested_at"],
                                    filter=in_dataset))
    at = pc.index_in(pa.array([f.uri for f in files], pa.string()), value_set=known["uri"])
    listed = pc.is_valid(at).to_numpy(zero_copy_only=False)
    errors = plain_strings(lake.read("ingest_errors", columns=["uri", "recorded_at"],
                                     filter=(pc.field("dataset") == dataset) & (pc.field("stage") == "ingest")))
    refused = dict(zip(errors["uri"].to_pylist(), errors["recorded_at"].to_pylist()))
    new = []
    for i in np.flatnonzero(~listed):  # new, unless refused before and not modified since
        when = refused.get(files[i].uri)
        if when is None or _mtime(files[i].uri) > when:
            new.append(files[i])

    positions = np.flatnonzero(listed)
    rows = at.drop_null().to_numpy(zero_copy_only=False).astype(np.int64)
    size, mtime = np.full(len(rows), -1, np.int64), np.zeros(len(rows))
    for j, i in enumerate(positions):
        try:
            info = os.stat(files[i].uri)
        except OSError:
            continue  # unreadable now (size −1: changed): ingest records why
        if stat.S_ISREG(info.st_mode):  # a FIFO or device now: never opened here (size −1), ingest refuses it
            size[j], mtime[j] = info.st_size, info.st_mtime
    ingested_at = known["ingested_at"].cast(pa.int64()).to_numpy()[rows] / 1e6  # µs → s since the epoch
    changed_mask = size != known["size_bytes"].to_numpy(zero_copy_only=False)[rows]
    touched = np.flatnonzero(~changed_mask & (mtime >= ingested_at))  # modified since ingest: same bytes?
    if touched.size:
        hashes = plain_strings(lake.read("samples", columns=["sample_id", "content_hash"], filter=in_dataset))
        at = pc.index_in(known["sample_id"].take(pa.array(rows[touched])), hashes["sample_id"])
        for j, digest in zip(touched, hashes["content_hash"].take(at).to_pylist()):
            changed_mask[j] = _sha256(files[positions[j]].uri) != digest
    changed = [files[i] for i in positions[changed_mask]]
    seen = np.zeros(known.num_rows, bool)
    seen[rows] = True
    removed = known["sample_id"].filter(pa.array(~seen)).to_pylist()
    return SourceDiff(new, changed, removed, known.num_rows - len(changed) - len(removed))


@dataclass(frozen=True)
class RunKind:
    """How a run is made again: by which job, and whether only for new samples."""

    job: str  # the job (`brain` verb) that makes such runs
    incremental: bool  # new and changed samples only, the rest carried over (else recomputed in full)
    reads_samples: bool  # its job declares `samples` among its reads


@dataclass(frozen=True)
class Refresh:
    """One line of a scan's plan: a key the scan makes a new run of, and why."""

    brain_key: str
    method: str
    run_id: str | None  # the key's current run, replaced by the new one (None: the key has no run yet)
    changed: tuple[str, ...]  # why: "embeddings: 1a2b3c4d → new", "samples: 2 new, 1 removed", "no run yet"
    kind: RunKind | None  # None: no job makes it again (rows registered from outside): left stale
    follow: bool  # False: recorded with scan.rerun=manual: left as made

    @property
    def runs(self) -> bool:
        return self.follow and self.kind is not None

    def describe(self) -> str:
        if self.kind is None:
            how = "left stale: registered from outside, no job makes it again"
        elif not self.follow:
            how = "left stale: made by hand (scan.rerun=manual)"
        else:
            how = "incremental" if self.kind.incremental else "full"
        job = self.kind.job if self.kind else "-"
        return f"{self.brain_key} ({self.method}, {job}): {how}; {'; '.join(self.changed)}"


def _short(run_id: str | None) -> str:
    return run_id[:8] if run_id else "none"


def plan_refresh(runs: pa.Table, *, dataset: str, ingest_key: str, samples_change: str | None,
                 pipeline: Sequence[tuple[str, str, RunKind]], kind_of: Callable[[dict[str, Any]], RunKind | None],
                 follows: Callable[[dict[str, Any]], bool]) -> list[Refresh]:
    """What a scan makes again, in order (see the module docstring).

    ``runs`` is the catalog (schema RUNS); ``samples_change`` says what ingest will change
    (None: nothing); ``pipeline`` the scan's own steps after ingest, ``(brain_key, method, kind)``
    in order: made when missing, always followed. ``kind_of`` tells how another run is made
    again (None: it is not), ``follows`` whether its record asks the scan to keep it fresh.
    """
    rows = runs.to_pylist()
    key_of = {r["run_id"]: r["brain_key"] for r in rows}
    current_of = {r["brain_key"]: r["run_id"] for r in rows if r["current"]}
    mine = {r["brain_key"]: r for r in rows if r["current"] and r["dataset"] == dataset}
    ingests = sorted((r["finished_at"], r["run_id"]) for r in rows
                     if r["brain_key"] == ingest_key and r["status"] in ("succeeded", "superseded"))
    pipeline_kinds = {key: (method, kind) for key, method, kind in pipeline}

    def kind_of_run(run: dict[str, Any]) -> RunKind | None:
        return pipeline_kinds[run["brain_key"]][1] if run["brain_key"] in pipeline_kinds else kind_of(run)

    def inputs(run: dict[str, Any]) -> list[tuple[str, str | None, str]]:
        found = [(role, run_id, key_of[run_id]) for role, run_id in dependencies(run, key_of) if run_id in key_of]
        kind = kind_of_run(run)
        if not found and kind is not None and kind.reads_samples and run["brain_key"] != ingest_key:
            read = [run_id for finished, run_id in ingests if finished <= run["started_at"]]
            found = [("samples", read[-1] if read else None, ingest_key)]
        return found

    graph: dict[str, set[str]] = {ingest_key: set()}
    for key, run in mine.items():
        graph.setdefault(key, set()).update(k for _, _, k in inputs(run))
    before = ingest_key
    for key, _, _ in pipeline:
        if key not in mine:
            graph.setdefault(key, set()).add(before)
        before = key

    changing: set[str] = set()
    plan = []
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as err:
        raise ValueError(f"the current runs of dataset {dataset!r} read each other in a cycle: {err.args[1]}; "
                         "delete or re-run one of them by hand") from None
    for key in order:
        run = mine.get(key)
        if key == ingest_key:
            if samples_change:
                plan.append(Refresh(key, "ingest", run and run["run_id"], (samples_change,),
                                    RunKind("ingest", incremental=True, reads_samples=False), follow=True))
                changing.add(key)
            continue
        if run is None:
            if key in pipeline_kinds:
                method, kind = pipeline_kinds[key]
                plan.append(Refresh(key, method, None, ("no run yet",), kind, follow=True))
                changing.add(key)
            continue
        changed = []
        for role, read, input_key in inputs(run):
            if input_key in changing:
                changed.append(f"{role}: {_short(read)} → new")
            elif read is not None and read != current_of.get(input_key):
                changed.append(f"{role}: {_short(read)} → {_short(current_of.get(input_key))}")
        if not changed:
            continue
        step = Refresh(key, run["method"], run["run_id"], tuple(changed), kind_of_run(run),
                       follow=key in pipeline_kinds or follows(run))
        plan.append(step)
        if step.runs:
            changing.add(key)
    return plan


def _mtime(uri: str) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(os.path.getmtime(uri), dt.timezone.utc)
    except OSError:
        return dt.datetime.max.replace(tzinfo=dt.timezone.utc)


class ScanLock:
    """One scan per dataset and lake: ``with ScanLock(lake, dataset): ...`` (see the module docstring)."""

    def __init__(self, lake: Lake, dataset: str, *, stale_after_s: float = 120.0, heartbeat_s: float = 10.0):
        if "://" in lake.uri and not lake.uri.startswith("file://"):
            raise ValueError(f"the scan lock needs a lake on a local or mounted file system, not {lake.uri}: "
                             "let the scheduler forbid overlapping scans instead")
        self.path = Path(lake.uri.removeprefix("file://")) / "_locks" / f"scan-{dataset}.json"
        self.stale_after_s, self.heartbeat_s = stale_after_s, heartbeat_s
        self.owner = dict(host=socket.gethostname(), pid=os.getpid(), token=uuid.uuid4().hex,
                          started_at=time.time())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _is_stale(self, holder: dict) -> bool:
        if time.time() - holder.get("heartbeat", 0) > self.stale_after_s:
            return True
        if holder.get("host") == self.owner["host"]:
            try:
                os.kill(int(holder["pid"]), 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False

    def _write(self, path: Path, *, exclusive: bool) -> None:
        data = json.dumps({**self.owner, "heartbeat": time.time()}).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC), 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def acquire(self) -> "ScanLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                self._write(self.path, exclusive=True)
                break
            except FileExistsError:
                holder = self.holder()
                if holder is not None and not self._is_stale(holder):
                    age = time.time() - holder.get("started_at", time.time())
                    raise ScanLockedError(
                        f"another scan of this dataset is running: host {holder.get('host')} pid {holder.get('pid')}, "
                        f"started {age:.0f} s ago, heartbeat {time.time() - holder.get('heartbeat', 0):.0f} s ago "
                        f"(lock {self.path}); it is taken over after {self.stale_after_s:.0f} s without heartbeat"
                    ) from None
                aside = self.path.with_name(f".stale-{uuid.uuid4().hex}.json")
                try:  # stale: move it aside atomically, so only one taker wins
                    os.rename(self.path, aside)
                    aside.unlink()
                except FileNotFoundError:
                    pass
        else:
            raise ScanLockedError(f"could not take the scan lock {self.path}")
        self._thread = threading.Thread(target=self._beat, daemon=True, name="scan-lock-heartbeat")
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            holder = self.holder()
            if holder is None or holder.get("token") != self.owner["token"]:
                return  # taken over (this process stalled past stale_after_s): never overwrite the new owner
            tmp = self.path.with_name(f".{self.path.name}.{self.owner['token']}")
            self._write(tmp, exclusive=False)
            os.replace(tmp, self.path)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder = self.holder()
        if holder is not None and holder.get("token") == self.owner["token"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "ScanLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
