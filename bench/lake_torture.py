"""Torture bench: many writers on one lake at once, a reader polling, writers killed with SIGKILL.

N writer processes each run M rounds of real jobs (``jobs.register_embeddings`` on a key
shared by all writers or on the writer's own key, ``jobs.unique`` reading the shared key),
while a reader polls the SQL views, and the bench kills random writers with kill -9 (and
starts a new process in their place). Then it checks, by kind of anomaly:

* ``reader_doubled`` / ``reader_partial``: a poll saw a key with more, or fewer, rows than
  one run writes (two runs' rows at once, or half a run);
* ``reader_errors``: a poll failed (a file removed under it, a torn read);
* ``multi_current``: a key with more than one current run;
* ``stuck``: runs still ``running`` after their processes died and a later job touched the key;
* ``lost``: a run its writer saw succeed that the catalog does not hold as succeeded, or a
  current run whose stored rows differ from what it recorded;
* ``orphans``: rows that after two vacuum passes belong to no current run (or an input of one).

    .venv/bin/python bench/lake_torture.py [--writers 8] [--rounds 20] [--kills 6]

Last line: ``RESULT anomalies=... commits_per_s=... runs=... kills=...``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from brain import runs, sql  # noqa: E402
from brain.config import Conf, RunsConf  # noqa: E402
from brain.lake import Lake  # noqa: E402
from brain.schemas import SAMPLES  # noqa: E402

SAMPLES_N, DIM, UNIQUE_N = 300, 16, 20
POLICY = dict(heartbeat_s=0.5, abandon_after_s=4.0)


def writer_conf(lake: str) -> Conf:
    conf = Conf(lake=lake, dataset="torture")
    conf.runs = RunsConf(**POLICY)
    return conf


def writer(lake_uri: str, index: int, rounds: int, journal: Path, vectors_dir: Path) -> None:
    """One writer process: ``rounds`` jobs, each journalled before it starts and after it succeeds."""
    from jobs import register_embeddings, unique

    rng = random.Random(index * 7919 + os.getpid())
    base = writer_conf(lake_uri)
    with journal.open("a") as log:
        for round_ in range(rounds):
            kind = rng.choice(["shared", "own", "unique"])
            conf = base.model_copy(deep=True)
            if kind == "unique":
                conf.unique.brain_key, conf.unique.embeddings_key, conf.unique.n = "unique", "emb", UNIQUE_N
                job = unique.run
            else:
                conf.register_embeddings.brain_key = "emb" if kind == "shared" else f"emb_w{index}"
                conf.register_embeddings.file = str(vectors_dir / f"v{rng.randrange(4)}.npy")
                conf.register_embeddings.ids_file = str(vectors_dir / "ids.txt")
                job = register_embeddings.run
            log.write(json.dumps({"round": round_, "kind": kind, "event": "start"}) + "\n")
            log.flush()
            try:
                run_id = job(conf)
            except runs.RunNotFoundError:  # `unique` before any shared embeddings run succeeded
                continue
            log.write(json.dumps({"round": round_, "kind": kind, "event": "succeeded", "run_id": run_id}) + "\n")
            log.flush()


class Reader(threading.Thread):
    """Polls the views: each key's row count must be exactly one run's."""

    def __init__(self, lake: Lake):
        super().__init__(daemon=True)
        self.lake, self.stop = lake, threading.Event()
        self.polls, self.anomalies, self.examples = 0, collections.Counter(), []

    def run(self) -> None:
        while not self.stop.is_set():
            try:  # one connection: both counts from one catalog snapshot
                con = sql.connect(self.lake)
                counts = con.sql("SELECT r.brain_key, count(*) AS n, count(DISTINCT e.run_id) AS runs "
                                 "FROM embeddings e JOIN runs r ON e.run_id = r.run_id GROUP BY r.brain_key").to_arrow_table()
                uniq = con.sql('SELECT count(*) AS n, count(DISTINCT run_id) AS runs FROM "unique"').to_arrow_table()
                con.close()
            except Exception as err:  # noqa: BLE001 - every failure of a read is an anomaly to report
                self.anomalies["reader_errors"] += 1
                self.examples.append(f"reader error: {err}")
                time.sleep(0.2)
                continue
            self.polls += 1
            for row in counts.to_pylist():
                if row["runs"] > 1 or row["n"] > SAMPLES_N:
                    self.anomalies["reader_doubled"] += 1
                    self.examples.append(f"key {row['brain_key']}: {row['n']} rows of {row['runs']} runs")
                elif row["n"] != SAMPLES_N:
                    self.anomalies["reader_partial"] += 1
                    self.examples.append(f"key {row['brain_key']}: {row['n']} rows")
            if uniq.num_rows:
                n, nruns = uniq["n"][0].as_py(), uniq["runs"][0].as_py()
                if nruns > 1 or n not in (0, UNIQUE_N):
                    self.anomalies["reader_doubled" if nruns > 1 else "reader_partial"] += 1
                    self.examples.append(f"unique: {n} rows of {nruns} runs")
            time.sleep(0.1)


def setup(lake: Lake, folder: Path) -> None:
    ids = [f"t{i:04d}" for i in range(SAMPLES_N)]
    now = dt.datetime.now(dt.timezone.utc)
    lake.append("samples", pa.Table.from_pylist(
        [dict(sample_id=s, dataset="torture", uri=f"/data/{s}.png", split="train", label=str(i % 5), width=8,
              height=8, content_hash=s, size_bytes=64, attributes="{}", ingested_at=now) for i, s in enumerate(ids)],
        schema=SAMPLES))
    (folder / "ids.txt").write_text("\n".join(ids) + "\n")
    rng = np.random.default_rng(0)
    for v in range(4):  # decaying spectrum, overlapping modes: as real embeddings
        scale = 1.0 / np.sqrt(np.arange(1, DIM + 1))
        centers = rng.normal(size=(5, DIM)) * scale
        x = centers[rng.integers(0, 5, SAMPLES_N)] + rng.normal(size=(SAMPLES_N, DIM)) * scale
        np.save(folder / f"v{v}.npy", x.astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--kills", type=int, default=6, help="writer processes killed with SIGKILL mid-run")
    parser.add_argument("--writer", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    parser.add_argument("--journal", help=argparse.SUPPRESS)
    parser.add_argument("--vectors", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer is not None:
        writer(args.lake, args.writer, args.rounds, Path(args.journal), Path(args.vectors))
        return

    import logging

    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="lake-torture-"))
    lake = Lake(work / "lake")
    setup(lake, work)
    reader = Reader(lake)
    reader.start()
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def spawn(i: int, rounds: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, __file__, "--writer", str(i), "--rounds", str(rounds),
                                 "--lake", lake.uri, "--journal", str(work / f"w{i}.jsonl"),
                                 "--vectors", str(work)], env=env, stderr=(work / f"w{i}.err").open("a"))

    procs = {i: spawn(i, args.rounds) for i in range(args.writers)}
    rng = random.Random(1)
    kills = 0
    def in_flight(i: int) -> bool:  # its journal's last line starts a job: the kill lands mid-run
        journal = work / f"w{i}.jsonl"
        lines = journal.read_text().splitlines() if journal.exists() else []
        return bool(lines) and json.loads(lines[-1])["event"] == "start"

    while any(p.poll() is None for p in procs.values()):
        time.sleep(rng.uniform(0.5, 2.0))
        busy = [i for i, p in procs.items() if p.poll() is None and in_flight(i)]
        if kills < args.kills and busy:
            victim = rng.choice(busy)
            time.sleep(rng.uniform(0.2, 2.0))
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            kills += 1
            journal = work / f"w{victim}.jsonl"
            done = sum(1 for line in journal.read_text().splitlines() if json.loads(line)["event"] == "start")
            if args.rounds - done > 0:
                procs[victim] = spawn(victim, args.rounds - done)
    wall = time.perf_counter() - started
    failed_writers = sum(1 for p in procs.values() if p.returncode not in (0, -signal.SIGKILL))
    # Every key is touched once more after the abandonment delay: killed runs must end abandoned.
    time.sleep(POLICY["abandon_after_s"] + 1)
    conf = writer_conf(lake.uri)
    keys = sorted(set(runs.list_runs(lake)["brain_key"].to_pylist()))
    for key in keys:
        runs.abandon_stale(lake, brain_key=key, policy=conf.runs)
    reader.stop.set()
    reader.join()

    anomalies = collections.Counter(reader.anomalies)
    examples = list(reader.examples)
    catalog = runs.list_runs(lake, history=True)
    rows = catalog.to_pylist()
    by_id = {r["run_id"]: r for r in rows}
    for key in keys:
        current = [r for r in rows if r["brain_key"] == key and r["current"]]
        if len(current) != 1:
            anomalies["multi_current"] += 1
            examples.append(f"key {key}: {len(current)} current runs")
    stuck = [r for r in rows if r["status"] == "running"]
    anomalies["stuck"] += len(stuck)
    examples += [f"stuck run {r['run_id']} ({r['brain_key']})" for r in stuck]
    for journal in work.glob("w*.jsonl"):
        for line in journal.read_text().splitlines():
            entry = json.loads(line)
            if entry["event"] == "succeeded" and by_id.get(entry["run_id"], {}).get("status") not in (
                    "succeeded", "superseded"):
                anomalies["lost"] += 1
                examples.append(f"run {entry['run_id']} succeeded for its writer but is "
                                f"{by_id.get(entry['run_id'], {}).get('status')}")
    stored = sql.query(lake, "SELECT run_id, count(*) AS n FROM embeddings_history GROUP BY run_id").to_pylist()
    stored_n = {r["run_id"]: r["n"] for r in stored}
    for r in rows:
        if r["current"] and r["method"] == "embeddings" and stored_n.get(r["run_id"]) != dict(r["rows_written"])[
                "embeddings"]:
            anomalies["lost"] += 1
            examples.append(f"current run {r['run_id']}: {stored_n.get(r['run_id'])} rows stored, "
                            f"{dict(r['rows_written'])} recorded")
    runs.vacuum(lake, retention_hours=0, policy=conf.runs)
    runs.vacuum(lake, retention_hours=0, policy=conf.runs)
    snapshot = runs.catalog(lake).runs
    keep = runs._inputs_closure(snapshot, set(snapshot.filter(snapshot["current"])["run_id"].to_pylist()))
    for table in ("embeddings", "unique"):
        left = set(lake.read(table, columns=["run_id"])["run_id"].to_pylist()) - keep
        anomalies["orphans"] += len(left)
        examples += [f"{table}: rows of run {r} after vacuum" for r in left]

    commits = sum(lake.version(t) + 1 for t in ("run_events", "embeddings", "unique", "samples"))
    statuses = collections.Counter(r["status"] for r in rows)
    print(f"lake: {lake.uri}")
    print(f"{args.writers} writers x {args.rounds} rounds, {kills} killed with SIGKILL, {failed_writers} writer "
          f"processes failed (stderr in {work}/w*.err); {len(rows)} runs: {dict(statuses)}; {reader.polls} reader polls; "
          f"{commits} Delta commits in {wall:.1f} s")
    for kind in ("reader_doubled", "reader_partial", "reader_errors", "multi_current", "stuck", "lost", "orphans"):
        print(f"  {kind:15s} {anomalies[kind]}")
    for line in examples[:10]:
        print(f"  e.g. {line}")
    total = sum(anomalies.values())
    print(f"RESULT anomalies={total} commits_per_s={commits / wall:.2f} runs={len(rows)} kills={kills} "
          f"polls={reader.polls} wall_s={wall:.1f} writers={args.writers} rounds={args.rounds}")


if __name__ == "__main__":
    main()
