"""One lake, several jobs at once, readers polling, jobs killed: the catalog's guarantees.

Every job here is a real `brain` command in its own process (local Ray, local Spark),
as a scheduler or a person starts them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from brain import runs, sql
from brain.lake import Lake
from tests.conftest import ROOT, local_conf, write_image_folder

pytestmark = pytest.mark.integration

BRAIN = [sys.executable, "-m", "jobs.cli"]


@pytest.fixture
def lake_setup(tmp_path):
    """A lake with 36 ingested images, a conf file for subprocesses, and vectors to register."""
    images = tmp_path / "images"
    write_image_folder(images)
    conf = local_conf(tmp_path / "lake")
    conf.ingest.source = str(images)
    conf.runs.heartbeat_s, conf.runs.abandon_after_s = 0.5, 3.0
    conf_file = tmp_path / "conf.yaml"
    conf_file.write_text(yaml.safe_dump(conf.model_dump()))
    brain(conf_file, "ingest")
    lake = Lake(conf.lake)
    ids = sql.query(lake, "SELECT sample_id FROM samples ORDER BY sample_id")["sample_id"].to_pylist()
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    rng = np.random.default_rng(0)
    for v in range(2):
        np.save(tmp_path / f"v{v}.npy", rng.normal(size=(len(ids), 8)).astype(np.float32))
    return lake, conf_file, tmp_path, ids


def brain(conf_file: Path, *args: str, check: bool = True, **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    command = [*BRAIN, *args, "--conf", str(conf_file)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if popen:
        return subprocess.Popen(command, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, **popen)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def register(conf_file: Path, folder: Path, key: str, v: int, **popen):
    return brain(conf_file, "register-embeddings", "--file", str(folder / f"v{v}.npy"), "--ids",
                 str(folder / "ids.txt"), "--brain-key", key, **popen)


def count(lake: Lake, table: str, key: str | None = None) -> int:
    where = f" WHERE r.brain_key = '{key}'" if key else ""
    return sql.query(lake, f"SELECT count(*) AS n FROM {table} t JOIN runs r ON t.run_id = r.run_id{where}"
                     )["n"][0].as_py()


def current_runs(lake: Lake, key: str) -> list[dict]:
    return [r for r in runs.list_runs(lake).to_pylist() if r["brain_key"] == key and r["current"]]


def test_writers_on_one_key_and_on_different_keys_at_once(lake_setup):
    lake, conf_file, folder, ids = lake_setup
    for _ in range(2):
        procs = [register(conf_file, folder, key, v, start_new_session=True)
                 for key, v in (("shared", 0), ("shared", 1), ("own_a", 0), ("own_b", 1))]
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
    for key in ("shared", "own_a", "own_b"):
        assert len(current_runs(lake, key)) == 1
        assert count(lake, "embeddings", key) == len(ids)
    statuses = [r["status"] for r in runs.list_runs(lake, history=True).to_pylist() if r["brain_key"] == "shared"]
    assert sorted(statuses) == ["succeeded", "superseded", "superseded", "superseded"]
    runs.vacuum(lake, retention_hours=0)
    assert lake.read("embeddings").num_rows == 3 * len(ids)  # no orphan rows left once replaced runs are purged


def _neighbors_run(lake: Lake, ids: list[str], key: str = "knn") -> None:
    rng = np.random.default_rng(1)
    with runs.track(lake, brain_key=key, method="neighbors", dataset="pets", config={}) as run:
        run.write("neighbors", pa.table({
            "run_id": [run.run_id] * len(ids), "sample_id": ids,
            "neighbor_ids": [[ids[(i + j) % len(ids)] for j in (1, 2, 3)] for i in range(len(ids))],
            "distances": pa.array(np.sort(rng.random((len(ids), 3)), axis=1).astype(np.float32).tolist(),
                                  pa.list_(pa.float32()))}))


def test_two_spark_jobs_on_one_key_at_once_both_land_cleanly(lake_setup):
    lake, conf_file, _, ids = lake_setup
    _neighbors_run(lake, ids)
    procs = [brain(conf_file, "uniqueness", start_new_session=True) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    assert len(current_runs(lake, "uniqueness")) == 1
    assert count(lake, "uniqueness") == len(ids)
    assert sql.query(lake, "SELECT count(*) AS n FROM uniqueness_history")["n"][0].as_py() == 2 * len(ids)


def _wait_running(lake: Lake, key: str, proc: subprocess.Popen, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        running = [r for r in runs.list_runs(lake).to_pylist() if r["brain_key"] == key and r["status"] == "running"]
        if running:
            return running[0]
        time.sleep(0.2)
    raise AssertionError(f"no running run of {key!r} within {timeout} s")


def test_sigterm_fails_the_run_and_kill_9_is_abandoned_by_the_next_job(lake_setup):
    lake, conf_file, folder, ids = lake_setup
    register(conf_file, folder, "embeddings", 0)
    before = runs.latest_succeeded(lake, "embeddings")["run_id"]

    proc = brain(conf_file, "embed", start_new_session=True)  # re-runs the key on Ray
    run = _wait_running(lake, "embeddings", proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    row = runs.get_run(lake, run["run_id"])
    assert row["status"] == "failed" and "SIGTERM" in row["error"], err[-2000:]
    assert all(lake.staged_files(t, run["run_id"]) == [] for t in ("embeddings", "ingest_errors"))
    assert runs.latest_succeeded(lake, "embeddings")["run_id"] == before and count(lake, "embeddings") == len(ids)

    proc = brain(conf_file, "embed", start_new_session=True)
    run = _wait_running(lake, "embeddings", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert runs.get_run(lake, run["run_id"])["status"] == "running"  # nobody could say otherwise yet
    assert count(lake, "embeddings") == len(ids)
    time.sleep(3.5)  # runs.abandon_after_s = 3
    register(conf_file, folder, "embeddings", 1)  # the next job on the key
    row = runs.get_run(lake, run["run_id"])
    assert row["status"] == "abandoned" and "no heartbeat" in row["error"]
    assert count(lake, "embeddings") == len(ids)


def test_a_reader_during_a_rerun_sees_one_run_and_vacuum_may_run_meanwhile(lake_setup):
    lake, conf_file, folder, ids = lake_setup
    register(conf_file, folder, "embeddings", 0)
    seen, errors, stop = [], [], threading.Event()

    def poll():
        while not stop.is_set():
            try:
                seen.append(sql.query(lake, "SELECT count(*) AS n, count(DISTINCT run_id) AS r FROM embeddings")
                            .to_pylist()[0])
            except Exception as err:  # noqa: BLE001 - any failed read is what this test looks for
                errors.append(str(err))

    def vacuum():
        while not stop.is_set():
            try:
                runs.vacuum(lake, retention_hours=0)
            except Exception as err:  # noqa: BLE001
                errors.append(f"vacuum: {err}")
            time.sleep(0.5)

    threads = [threading.Thread(target=poll), threading.Thread(target=vacuum)]
    for thread in threads:
        thread.start()
    try:
        brain(conf_file, "embed")  # a re-run of the key on Ray while both run
        register(conf_file, folder, "embeddings", 1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors[:3]
    assert len(seen) > 5 and all(s == {"n": len(ids), "r": 1} for s in seen), [s for s in seen if s["r"] != 1][:3]
    assert len(current_runs(lake, "embeddings")) == 1 and count(lake, "embeddings") == len(ids)
    history = runs.list_runs(lake, history=True).to_pylist()
    assert sum(1 for r in history if r["brain_key"] == "embeddings" and r["purged_at"] is not None) >= 1
    assert json.loads(history[-1]["config"])["runs"]["abandon_after_s"] == 3.0
