"""The run catalog: events, resolution, the commit point, faults, vacuum, redaction."""

import datetime as dt
import time

import pyarrow as pa
import pytest

from brain import runs, sql
from brain.config import RunsConf
from brain.schemas import RUN_EVENTS


def _emb(run_id: str, n: int = 2) -> pa.Table:
    return pa.table({"run_id": [run_id] * n, "sample_id": [f"s{i}" for i in range(n)],
                     "vector": pa.array([[1.0, 0.0]] * n, pa.list_(pa.float32()))})


def _count(lake, table: str = "embeddings") -> int:
    return sql.query(lake, f"SELECT count(*) AS n FROM {table}")["n"][0].as_py()


def test_a_succeeded_run_row_is_complete(lake):
    with runs.track(lake, brain_key="emb", method="embeddings", dataset="d", config={"k": 3},
                    engine_versions={"ray": "x"}, executed_on="test") as run:
        run.write("embeddings", _emb(run.run_id))
        run.metrics["recall_at_10"] = 0.97
        run.warn("cap hit")
    row = runs.get_run(lake, "emb")
    metrics = dict(row["metrics"])
    assert metrics.pop("recall_at_10") == 0.97 and row["warnings"] == ["cap hit"]
    assert set(metrics) <= {"work_s", "engine_start_s"} and metrics["work_s"] >= 0  # the run's own block
    assert row["status"] == "succeeded" and row["current"] and row["error"] is None
    assert row["finished_at"] >= row["started_at"]
    assert dict(row["rows_written"]) == {"embeddings": 2}
    assert dict(row["engine_versions"])["ray"] == "x" and "python" in dict(row["engine_versions"])
    assert row["config"] == '{"k": 3}' and row["samples_version"] == 0 and row["package_version"]
    assert row["executed_on"] == "test" and row["pid"] > 0 and row["host"]


def test_the_seconds_a_job_read_its_inputs_before_the_run_are_recorded_beside_its_work(lake):
    with runs.track(lake, brain_key="emb", method="embeddings", dataset="d", config={}, prepare_s=1.23456) as run:
        run.write("embeddings", _emb(run.run_id))
    metrics = dict(runs.get_run(lake, "emb")["metrics"])
    assert metrics["prepare_s"] == 1.235 and metrics["work_s"] >= 0


def test_rows_are_invisible_until_the_run_succeeds(lake):
    with runs.track(lake, brain_key="emb", method="embeddings", dataset="d", config={}) as run:
        run.write("embeddings", _emb(run.run_id))
        assert lake.read("embeddings").num_rows == 0  # staged, not committed
        assert runs.get_run(lake, "emb")["status"] == "running"
    assert _count(lake) == 2


def test_a_failed_run_leaves_no_rows_and_says_why(lake):
    with pytest.raises(RuntimeError, match="boom"):
        with runs.track(lake, brain_key="emb", method="embeddings", dataset="d", config={}) as run:
            run.write("embeddings", _emb(run.run_id))
            run.write_artifact("index.faiss", b"x")
            raise RuntimeError("\x1b[31mboom\x1b[0m")
    row = runs.get_run(lake, "emb")
    assert row["status"] == "failed" and row["error"] == "RuntimeError: boom"  # colour codes stripped
    assert lake.read("embeddings").num_rows == 0
    assert lake.staged_files("embeddings", row["run_id"]) == []
    with pytest.raises(runs.RunNotFoundError, match="no succeeded run with key 'emb'"):
        runs.latest_succeeded(lake, "emb")


def test_a_new_run_with_the_same_key_supersedes_the_old_one_in_one_event(lake):
    ids = []
    for n in (3, 5):
        with runs.track(lake, brain_key="emb", method="embeddings", dataset="d", config={}) as run:
            run.write("embeddings", _emb(run.run_id, n))
        ids.append(run.run_id)
    catalog = runs.list_runs(lake)
    assert catalog["status"].to_pylist() == ["superseded", "succeeded"]
    assert catalog["current"].to_pylist() == [False, True]
    assert runs.latest_succeeded(lake, "emb")["run_id"] == ids[1]
    assert _count(lake) == 5 and _count(lake, "embeddings_history") == 8
    assert sql.query(lake, "SELECT count(*) AS n FROM embeddings", history=True)["n"][0].as_py() == 8


def test_a_failed_rerun_keeps_the_previous_run_current(lake):
    with runs.track(lake, brain_key="emb", method="embeddings", dataset="d", config={}) as good:
        good.write("embeddings", _emb(good.run_id, 3))
    with pytest.raises(ValueError):
        with runs.track(lake, brain_key="emb", method="embeddings", dataset="d", config={}) as bad:
            bad.write("embeddings", _emb(bad.run_id, 7))
            raise ValueError("NaN in sample s3")
    assert runs.latest_succeeded(lake, "emb")["run_id"] == good.run_id and _count(lake) == 3


def test_resolve_orders_by_event_time_and_a_resumed_run_starts_again():
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

    def ev(event, run_id, seconds, **extra):
        return {"event": event, "run_id": run_id, "at": t0 + dt.timedelta(seconds=seconds), **extra}

    events = pa.Table.from_pylist([
        ev("started", "a", 0, brain_key="k"), ev("started", "b", 1, brain_key="k"),
        ev("succeeded", "b", 2), ev("succeeded", "a", 3),  # a finished last: a is current
        ev("started", "c", 4, brain_key="k"), ev("failed", "c", 5, error="x"),
        ev("started", "c", 6, brain_key="k"),  # resumed with the same id
        ev("renamed", "b", 7, brain_key="old"), ev("started", "d", 8, brain_key="e", input_key="old"),
    ], schema=RUN_EVENTS)
    table = runs.resolve(events)
    by_id = {r["run_id"]: r for r in table.to_pylist()}
    assert (by_id["a"]["status"], by_id["a"]["current"]) == ("succeeded", True)
    assert by_id["b"]["status"] == "succeeded" and by_id["b"]["brain_key"] == "old" and by_id["b"]["current"]
    assert by_id["c"]["status"] == "running" and by_id["c"]["error"] is None
    assert by_id["d"]["input_key"] == "old"


KILLED_JOB = """
import os, signal, sys
import pyarrow as pa
from brain import runs
from brain.config import RunsConf
from brain.lake import Lake
lake = Lake(sys.argv[1])
with runs.track(lake, brain_key="emb", method="embeddings", dataset="d", config={},
                policy=RunsConf(heartbeat_s=0.05, abandon_after_s=0.5)) as run:
    run.write("embeddings", pa.table({"run_id": [run.run_id], "sample_id": ["s0"],
                                      "vector": pa.array([[1.0]], pa.list_(pa.float32()))}))
    run._commit_staged()  # its rows are in the table ...
    print(run.run_id, flush=True)
    os.kill(os.getpid(), {signal})  # ... when it dies before its `succeeded` event
"""


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_a_killed_job_never_shows_rows_and_its_run_ends(lake, signal_name):
    import signal
    import subprocess
    import sys

    script = KILLED_JOB.replace("{signal}", f"signal.{signal_name}")
    out = subprocess.run([sys.executable, "-c", script, lake.uri], capture_output=True, text=True, timeout=60)
    killed = out.stdout.split()[0]
    assert out.returncode == (-signal.SIGKILL if signal_name == "SIGKILL" else 1), out.stderr
    if signal_name == "SIGTERM":  # the run saw it: failed, its error says so
        row = runs.get_run(lake, killed)
        assert row["status"] == "failed" and "SIGTERM" in row["error"]
    else:  # nothing ran after the kill: the next job on its key finds its heartbeat stopped
        assert runs.get_run(lake, killed)["status"] == "running"
        time.sleep(0.6)
        with runs.track(lake, brain_key="emb", method="embeddings", dataset="d", config={},
                        policy=RunsConf(abandon_after_s=0.5)) as run:
            run.write("embeddings", _emb(run.run_id, 4))
        row = runs.get_run(lake, killed)
        assert row["status"] == "abandoned" and "no heartbeat" in row["error"]
    assert lake.read("embeddings").num_rows == 1 + (4 if signal_name == "SIGKILL" else 0)  # stored ...
    assert _count(lake) == (4 if signal_name == "SIGKILL" else 0)  # ... but never visible


def test_rename_and_delete_are_events(lake):
    with runs.track(lake, brain_key="a", method="embeddings", dataset="d", config={}) as run_a:
        run_a.write("embeddings", _emb(run_a.run_id))
        run_a.write_artifact("index.faiss", b"x")
    with runs.track(lake, brain_key="b", method="embeddings", dataset="d", config={}) as run_b:
        run_b.write("embeddings", _emb(run_b.run_id))
    assert runs.delete_run(lake, "a") == run_a.run_id
    assert lake.read("embeddings")["run_id"].unique().to_pylist() == [run_b.run_id]
    assert runs.list_runs(lake)["brain_key"].to_pylist() == ["b"]
    assert runs.list_runs(lake, history=True)["status"].to_pylist() == ["deleted", "succeeded"]
    with pytest.raises(FileNotFoundError):
        lake.read_artifact(run_a.run_id, "index.faiss")
    with pytest.raises(runs.RunNotFoundError, match="no run with key or id 'a'"):
        runs.delete_run(lake, "a")


def test_vacuum_removes_replaced_rows_but_keeps_inputs_of_current_runs(lake):
    def make(key, inputs=None):
        with runs.track(lake, brain_key=key, method="embeddings", dataset="d", config={}, inputs=inputs) as run:
            run.write("embeddings", _emb(run.run_id))
        return run.run_id

    emb_old = make("emb")
    knn = make("knn", {"embeddings": emb_old})  # the current kNN run reads the old embeddings
    emb_new = make("emb")
    knn_old = knn
    knn = make("knn", {"embeddings": emb_new})
    report = runs.vacuum(lake, retention_hours=1)
    assert report["purged_runs"] == []  # replaced less than an hour ago
    report = runs.vacuum(lake, retention_hours=0)
    assert sorted(report["purged_runs"]) == sorted([emb_old, knn_old])
    assert set(lake.read("embeddings")["run_id"].to_pylist()) == {emb_new, knn}
    runs.vacuum(lake, retention_hours=0)  # the second pass removes the purged runs' files
    assert lake.staged_runs("embeddings") and emb_old not in lake.staged_runs("embeddings")
    assert _count(lake) == 4


def test_vacuum_keeps_the_inputs_of_a_running_run(lake):
    with runs.track(lake, brain_key="emb", method="embeddings", dataset="d", config={}) as old:
        old.write("embeddings", _emb(old.run_id))
    with runs.track(lake, brain_key="knn", method="neighbors", dataset="d", config={}, inputs={"e": old.run_id}):
        with runs.track(lake, brain_key="emb", method="embeddings", dataset="d", config={}) as new:
            new.write("embeddings", _emb(new.run_id))
        assert runs.vacuum(lake, retention_hours=0)["purged_runs"] == []  # knn is still running on it
    assert old.run_id in set(lake.read("embeddings")["run_id"].to_pylist())


@pytest.mark.parametrize("name,secret", [
    ("aws_secret_access_key", True), ("password", True), ("fs.s3a.access.key", True), ("api_key", True),
    ("spark.hadoop.fs.azure.account.key.x.blob.core.windows.net", True), ("AZURE_STORAGE_SAS_TOKEN", True),
    ("sessionToken", True), ("brain_key", False), ("neighbors_key", False), ("key", False), ("k", False),
])
def test_credential_names(name, secret):
    assert runs.looks_like_credential(name) is secret


def test_the_run_record_never_holds_credentials(lake):
    config = {"spark": {"conf": {"spark.hadoop.fs.s3a.secret.key": "S3CR3T", "spark.ui.enabled": "false"}},
              "submit": {"env_vars": {"AWS_SECRET_ACCESS_KEY": "S3CR3T"}}, "uniqueness": {"brain_key": "u"}}
    with runs.track(lake, brain_key="u", method="uniqueness", dataset="d", config=config):
        pass
    recorded = runs.get_run(lake, "u")["config"]
    assert "S3CR3T" not in recorded and "submit" not in recorded
    assert '"brain_key": "u"' in recorded and '"spark.ui.enabled": "false"' in recorded


def test_list_by_method(lake):
    for key, method in (("e", "embeddings"), ("n", "neighbors")):
        with runs.track(lake, brain_key=key, method=method, dataset="d", config={}):
            pass
    assert runs.list_runs(lake, method="neighbors")["brain_key"].to_pylist() == ["n"]


def test_storage_credentials_are_redacted_from_the_recorded_config():
    from brain.config import Conf

    conf = Conf(lake="s3://b/l", storage={"options": {"AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s3cr3t",
                                                      "AWS_SESSION_TOKEN": "tok", "AWS_REGION": "eu-west-1"}})
    recorded = runs.recorded_config(conf.model_dump())
    assert not any(secret in recorded for secret in ("AKIA1", "s3cr3t", "tok"))
    assert '"AWS_REGION": "eu-west-1"' in recorded


# -- staleness --------------------------------------------------------------------------------------
def _run(run_id: str, key: str, current: bool = True, **inputs: str) -> dict:
    return {"run_id": run_id, "brain_key": key, "current": current, "input_run_ids": sorted(inputs.items())}


def test_a_run_is_stale_when_an_input_was_replaced_and_so_are_its_consumers():
    rows = [_run("e1", "emb", current=False), _run("e2", "emb", carried_from="e1"),
            _run("k1", "knn", embeddings="e1"), _run("u1", "uniq", neighbors="k1"),
            _run("d1", "dups", neighbors="k1"), _run("l1", "leaks", duplicates="d1"),
            _run("v1", "map", embeddings="e2")]
    assert runs.stale_runs(rows) == {"k1", "u1", "d1", "l1"}  # transitive; e2's carried_from is its own history


def test_an_incremental_runs_own_previous_run_and_unknown_inputs_do_not_make_it_stale():
    rows = [_run("k1", "knn", current=False, embeddings="e1"), _run("k2", "knn", embeddings="e1", previous="k1"),
            _run("e1", "emb"), _run("x1", "ext", embeddings="elsewhere")]
    assert runs.stale_runs(rows) == set()


def test_a_deleted_input_makes_its_consumer_stale_and_a_cycle_does_not_loop():
    rows = [_run("p1", "preds", current=False), _run("h1", "hard", predictions="p1"),
            _run("a", "ka", b="b"), _run("b", "kb", a="a")]
    assert runs.stale_runs(rows) == {"h1"}


def test_the_runs_view_and_sql_carry_staleness(lake):
    def job(key: str, **inputs: str) -> str:
        with runs.track(lake, brain_key=key, method=key, dataset="d", config={}, inputs=inputs) as run:
            run.write("embeddings", _emb(run.run_id))
        return run.run_id

    first = job("emb")
    job("uniq", embeddings=first)
    assert not runs.get_run(lake, "uniq")["stale"]
    job("emb")
    assert runs.get_run(lake, "uniq")["stale"] and not runs.get_run(lake, "emb")["stale"]
    rows = sql.query(lake, "SELECT brain_key, stale FROM runs WHERE current ORDER BY brain_key").to_pylist()
    assert rows == [{"brain_key": "emb", "stale": False}, {"brain_key": "uniq", "stale": True}]
