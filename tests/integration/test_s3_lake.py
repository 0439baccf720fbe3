"""The demo's pipeline on a lake on an S3-compatible store (moto's server on loopback), against a local run.

The store runs as its own process: delta-rs blocks in its calls without releasing the GIL, so a server
thread in the test's process (moto's ThreadedMotoServer) would never answer it.
Jobs get the endpoint and credentials from ``storage.options``; the CLI from ``AWS_*`` variables.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.compute as pc
import pytest
from tests.conftest import local_conf

from brain import results, runs, sql
from brain.config import Conf, IngestConf
from brain.lake import Lake
from jobs.cli import main as brain_main

pytestmark = pytest.mark.integration

DIGITS = 200
BUCKET = "lakebrain-test"
SECRET = "moto-secret-never-recorded"


@pytest.fixture(scope="module")
def s3_options():
    """moto's S3 server on a free loopback port, with one bucket; yields the lake's storage options."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"moto_server did not start on {endpoint}") from None
            time.sleep(0.1)
    options = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "moto-key",
               "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ALLOW_HTTP": "true"}
    import boto3

    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="moto-key",
                     aws_secret_access_key=SECRET).create_bucket(Bucket=BUCKET)
        yield options
    finally:
        server.terminate()
        server.wait(timeout=10)


DEMO_STAGES = ("ingest", "embed", "neighbors", "uniqueness", "duplicates", "leaks", "unique", "linear_probe",
               "label_quality", "familiarity", "comparison", "visualization")
# In CI (time-boxed): stages that read and write the lake in every way the demo does (Ray staging from tasks
# and actors, artifacts, Spark reads, staged writes and a lake in a Spark closure), on unsplit images; the
# stress test runs every stage (duplicates, leaks, predictions, label quality and its staged read back in
# Spark, comparison).
CI_STAGES = ("ingest", "embed", "neighbors", "uniqueness", "unique", "familiarity", "visualization")


def run_stages(conf: Conf, stages: tuple[str, ...]) -> dict[str, str]:
    """The demo's stages (jobs/demo.py) named in ``stages``, in the demo's order, then its plot; run ids by stage."""
    import importlib

    from brain import lake_plots

    conf = conf.model_copy(deep=True)
    conf.duplicates.candidate_thresh = 0.05
    conf.unique.n = 20
    conf.linear_probe.folds = 3
    conf.visualization.method = "pca"
    conf.familiarity.reduced_dims, conf.familiarity.gaussian_count = 10, 2
    conf.comparison.fit, conf.comparison.predict = "embeddings@train", "embeddings@test"
    done, seconds = {}, {}
    for name in (n for n in DEMO_STAGES if n in stages):
        started = time.perf_counter()
        done[name] = importlib.import_module(f"jobs.{name}").run(conf)
        seconds[name] = time.perf_counter() - started
    print(f"stages on {conf.lake}: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    lake = Lake.from_conf(conf)
    html = lake.local_folder("plots") / "visualization.html"
    lake_plots.plot_run(lake, "visualization", html_path=html, color_by="label")
    lake.write_file("plots/visualization.html", html.read_bytes())
    return done


def s3_conf(conf: Conf, options: dict[str, str], prefix: str) -> Conf:
    conf = conf.model_copy(deep=True)
    conf.lake, conf.storage.options = f"s3://{BUCKET}/{prefix}", dict(options)
    return conf


@pytest.fixture(scope="module")
def s3_lake(s3_options, small_pipeline):
    """The session's small pipeline's images through the CI stages on ``s3://BUCKET/small``."""
    conf = s3_conf(small_pipeline.conf, s3_options, "small")
    started = time.perf_counter()
    run_ids = run_stages(conf, CI_STAGES)
    print(f"{len(CI_STAGES)} stages on the S3 lake in {time.perf_counter() - started:.1f} s (loaded machine)")
    return Lake.from_conf(conf), run_ids


SHARED = """SELECT
  (SELECT count(*) FROM samples) AS samples, (SELECT count(*) FROM ingest_errors) AS ingest_errors,
  (SELECT count(*) FROM embeddings) AS embeddings, (SELECT count(*) FROM neighbors) AS neighbors,
  (SELECT count(*) FROM uniqueness) AS uniqueness"""


def uniqueness_by_uri(lake: Lake) -> dict[str, float]:
    rows = sql.query(lake, "SELECT s.uri, u.uniqueness FROM uniqueness u JOIN samples s USING (sample_id)")
    return dict(zip(rows["uri"].to_pylist(), rows["uniqueness"].to_pylist()))


def test_s3_lake_has_the_local_pipelines_rows_and_scores(s3_lake, small_pipeline):
    lake, run_ids = s3_lake
    assert lake.uri == f"s3://{BUCKET}/small" and not lake.is_local
    expected = sql.query(small_pipeline.lake, SHARED).to_pylist()[0]
    assert expected["samples"] > 0 and expected["ingest_errors"] > 0
    assert sql.query(lake, SHARED).to_pylist()[0] == expected
    local, mine = uniqueness_by_uri(small_pipeline.lake), uniqueness_by_uri(lake)
    assert mine.keys() == local.keys()
    assert max(abs(mine[u] - local[u]) for u in local) < 1e-6  # same images, same scores
    assert {r["status"] for r in runs.list_runs(lake).to_pylist()} == {"succeeded"}
    assert set(runs.catalog(lake).current_run_ids()) >= set(run_ids.values())


def test_every_demo_table_on_s3_is_readable_by_sql_and_load_results(s3_lake):
    lake, _ = s3_lake
    counts = sql.query(lake, """SELECT (SELECT count(*) FROM samples) AS samples,
        (SELECT count(DISTINCT sample_id) FROM familiarity) AS familiarity,
        (SELECT count(DISTINCT sample_id) FROM visualization) AS visualization,
        (SELECT count(*) FROM "unique") AS unique_samples,
        (SELECT count(DISTINCT label) FROM familiarity_extremes) AS labels_with_extremes""").to_pylist()[0]
    n = counts["samples"]
    assert counts == dict(samples=n, familiarity=n, visualization=n, unique_samples=20, labels_with_extremes=3)
    for key in ("uniqueness", "visualization"):
        assert results.load_results(lake, key).num_rows == n, key
    assert lake.filesystem.get_file_info(f"{BUCKET}/small/plots/visualization.html").size > 1000


def test_cli_reads_the_s3_lake_from_aws_environment(s3_lake, s3_options, monkeypatch, capsys):
    remote, _ = s3_lake
    n = remote.read("samples", columns=["sample_id"]).num_rows
    for name, value in s3_options.items():
        monkeypatch.setenv(name, value)
    assert brain_main(["sql", "SELECT count(*) AS n FROM uniqueness", "--format", "json",
                       "--set", f"lake={remote.uri}"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"n": n}
    assert Lake(remote.uri).read("samples", columns=["sample_id"]).num_rows == n  # options from the environment


def test_no_credential_in_the_recorded_configs(s3_lake):
    remote, run_ids = s3_lake
    listed = runs.list_runs(remote)
    assert listed.num_rows == len(run_ids)
    for record in listed["config"].to_pylist():
        assert SECRET not in record and "moto-key" not in record
        options = json.loads(record)["storage"]["options"]
        assert options["AWS_SECRET_ACCESS_KEY"] == runs.REDACTED and options["AWS_ENDPOINT_URL"].startswith("http")


def test_vacuum_and_cleanup_on_s3_purge_a_replaced_run_and_its_staged_files(s3_lake, small_pipeline):
    remote, remote_runs = s3_lake
    from jobs import unique

    conf = s3_conf(small_pipeline.conf, remote.storage_options, "small")
    conf.unique.n = 10
    replaced = remote_runs["unique"]
    unique.run(conf)  # supersedes the first unique run
    assert replaced in remote.staged_runs("unique")
    report = runs.vacuum(remote, retention_hours=0)
    assert replaced in report["purged_runs"]
    report = runs.vacuum(remote, retention_hours=0)  # the purged run's staging goes a retention later
    assert replaced in report["removed_staging"] and replaced not in remote.staged_runs("unique")
    assert sql.query(remote, 'SELECT count(*) AS n FROM "unique"').to_pylist() == [{"n": 10}]
    assert remote.read("unique", filter=pc.field("run_id") == replaced).num_rows == 0
    report = runs.cleanup(remote)  # orphans listed through the S3 filesystem: none, the plot's key has a run
    assert report["plots"] == [] and report["staged_files"] == []
    assert remote.plot_files() == ["visualization.html"]


def test_two_concurrent_writers_on_s3_both_commit(s3_lake):
    """Two processes appending to one table at once: delta-rs commits each version with a conditional put
    (If-None-Match), so a writer that loses a version retries on the next one and no commit is lost."""
    remote, _ = s3_lake
    before = remote.version("ingest_errors")
    writer = """
import sys, datetime as dt, json
import pyarrow as pa
from brain.lake import Lake
lake = Lake(sys.argv[1], storage_options=json.loads(sys.argv[2]))
for i in range(4):
    lake.append("ingest_errors", pa.table({"run_id": [sys.argv[3]], "dataset": ["writers"], "uri": [f"{sys.argv[3]}-{i}"],
        "stage": ["test"], "reason": ["concurrent writer"], "recorded_at": [dt.datetime.now(dt.timezone.utc)]}))
"""
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", writer, remote.uri, json.dumps(remote.storage_options), name],
                              cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, stderr=subprocess.PIPE, text=True)
             for name in ("writer-a", "writer-b")]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert remote.version("ingest_errors") == before + 8
    uris = remote.read("ingest_errors", filter=pc.field("stage") == "test")["uri"].to_pylist()
    assert sorted(uris) == sorted(f"{n}-{i}" for n in ("writer-a", "writer-b") for i in range(4))


COUNTS = """SELECT
  (SELECT count(*) FROM samples) AS samples, (SELECT count(*) FROM embeddings) AS embeddings,
  (SELECT count(*) FROM neighbors) AS neighbors, (SELECT count(*) FROM uniqueness) AS uniqueness,
  (SELECT count(*) FROM duplicates) AS duplicates, (SELECT count(*) FROM leaks) AS leaks,
  (SELECT count(*) FROM "unique") AS unique_samples, (SELECT count(*) FROM predictions) AS predictions,
  (SELECT count(*) FROM mistakenness) AS mistakenness, (SELECT count(*) FROM label_quality_classes) AS classes,
  (SELECT count(*) FROM familiarity) AS familiarity, (SELECT count(*) FROM familiarity_extremes) AS extremes,
  (SELECT count(*) FROM familiarity_comparison) AS comparison, (SELECT count(*) FROM visualization) AS points"""


@pytest.mark.stress  # about 5 minutes on the loaded 2-core machine: the CI tests above cover each path faster
def test_every_demo_stage_on_s3_matches_a_local_run_on_digits(tmp_path, s3_options, ray_session, spark):
    from jobs.digits import write_digits

    images = tmp_path / "images"
    write_digits(images, limit=DIGITS)
    local = local_conf(tmp_path / "lake", ingest=IngestConf(source=str(images)))
    local.dataset = "digits"
    remote = s3_conf(local, s3_options, "digits")
    local_runs, remote_runs = run_stages(local, DEMO_STAGES), run_stages(remote, DEMO_STAGES)
    assert local_runs.keys() == remote_runs.keys() == set(DEMO_STAGES)
    expected = sql.query(Lake.from_conf(local), COUNTS).to_pylist()[0]
    assert expected["samples"] == expected["predictions"] == expected["points"] == DIGITS
    assert sql.query(Lake.from_conf(remote), COUNTS).to_pylist()[0] == expected
    assert uniqueness_by_uri(Lake.from_conf(remote)).keys() == uniqueness_by_uri(Lake.from_conf(local)).keys()
