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
from brain.config import Conf
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

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="moto-key",
                 aws_secret_access_key=SECRET).create_bucket(Bucket=BUCKET)
    yield options
    server.terminate()
    server.wait(timeout=10)


def demo_pipeline(conf: Conf, images: Path) -> dict[str, str]:
    """The demo's stages (jobs/demo.py) on ``images``; returns run ids by stage."""
    from brain import lake_plots
    from jobs import (comparison, duplicates, embed, familiarity, ingest, label_quality, leaks, linear_probe,
                      neighbors, unique, uniqueness, visualization)

    conf = conf.model_copy(deep=True)
    conf.ingest.source = str(images)
    conf.duplicates.candidate_thresh = 0.05
    conf.unique.n = 50
    conf.linear_probe.folds = 3
    conf.visualization.method = "pca"
    conf.familiarity.fit_split = "train"
    conf.familiarity.reduced_dims = 10
    conf.familiarity.gaussian_count = 2
    conf.comparison.fit, conf.comparison.predict = "embeddings@train", "embeddings@test"
    done = {}
    for name, job in (("ingest", ingest), ("embed", embed), ("neighbors", neighbors), ("uniqueness", uniqueness),
                      ("duplicates", duplicates), ("leaks", leaks), ("unique", unique), ("linear_probe", linear_probe),
                      ("label_quality", label_quality), ("familiarity", familiarity), ("comparison", comparison),
                      ("visualization", visualization)):
        done[name] = job.run(conf)
    lake = Lake.from_conf(conf)
    html = lake.local_folder("plots") / "visualization.html"
    lake_plots.plot_run(lake, "visualization", html_path=html, color_by="label")
    lake.write_file("plots/visualization.html", html.read_bytes())
    return done


COUNTS = """SELECT
  (SELECT count(*) FROM samples) AS samples, (SELECT count(*) FROM embeddings) AS embeddings,
  (SELECT count(*) FROM neighbors) AS neighbors, (SELECT count(*) FROM uniqueness) AS uniqueness,
  (SELECT count(*) FROM duplicates) AS duplicates, (SELECT count(*) FROM leaks) AS leaks,
  (SELECT count(*) FROM "unique") AS unique_samples, (SELECT count(*) FROM predictions) AS predictions,
  (SELECT count(*) FROM mistakenness) AS mistakenness, (SELECT count(*) FROM label_quality_classes) AS classes,
  (SELECT count(*) FROM familiarity) AS familiarity, (SELECT count(*) FROM familiarity_extremes) AS extremes,
  (SELECT count(*) FROM familiarity_comparison) AS comparison, (SELECT count(*) FROM visualization) AS points"""


@pytest.fixture(scope="module")
def lakes(tmp_path_factory, s3_options, ray_session, spark):
    """The same digits through the demo's stages twice: a local lake and ``s3://BUCKET/lake``."""
    from jobs.digits import write_digits

    images = tmp_path_factory.mktemp("digits") / "images"
    write_digits(images, limit=DIGITS)
    local = local_conf(tmp_path_factory.mktemp("local") / "lake")
    remote = local_conf("unused")
    remote.lake = f"s3://{BUCKET}/lake"
    remote.storage.options = dict(s3_options)
    for conf in (local, remote):
        conf.dataset = "digits"
    started = time.perf_counter()
    local_runs = demo_pipeline(local, images)
    local_s = time.perf_counter() - started
    remote_runs = demo_pipeline(remote, images)
    print(f"demo stages on {DIGITS} digits: local lake {local_s:.1f} s, "
          f"S3 lake {time.perf_counter() - started - local_s:.1f} s (loaded machine)")
    return Lake.from_conf(local), Lake.from_conf(remote), local_runs, remote_runs


def test_every_table_on_s3_has_the_local_runs_counts(lakes):
    local, remote, _, remote_runs = lakes
    assert remote.uri == f"s3://{BUCKET}/lake" and not remote.is_local
    expected = sql.query(local, COUNTS).to_pylist()[0]
    assert expected["samples"] == DIGITS and expected["neighbors"] > 0 and expected["predictions"] == DIGITS
    assert sql.query(remote, COUNTS).to_pylist()[0] == expected
    assert {r["status"] for r in runs.list_runs(remote).to_pylist()} == {"succeeded"}
    assert set(runs.catalog(remote).current_run_ids()) >= set(remote_runs.values())


def test_results_load_and_match_the_local_run(lakes):
    local, remote, _, _ = lakes
    for key in ("uniqueness", "familiarity"):
        mine, theirs = results.load_results(remote, key), results.load_results(local, key)
        assert mine.num_rows == theirs.num_rows > 0
        assert mine.sort_by("sample_id")["sample_id"].equals(theirs.sort_by("sample_id")["sample_id"])
    # the same images, the same embeddings: the same scores (floating point summed in any order)
    scores = {lake: dict(zip(*sql.query(lake, "SELECT s.uri, u.uniqueness FROM uniqueness u JOIN samples s "
                                              "USING (sample_id)").to_pydict().values()))
              for lake in (local, remote)}
    assert scores[local].keys() == scores[remote].keys()
    assert max(abs(scores[local][u] - scores[remote][u]) for u in scores[local]) < 1e-6
    assert remote.filesystem.get_file_info(f"{BUCKET}/lake/plots/visualization.html").size > 1000


def test_cli_reads_the_s3_lake_from_aws_environment(lakes, s3_options, monkeypatch, capsys):
    _, remote, _, _ = lakes
    for name, value in s3_options.items():
        monkeypatch.setenv(name, value)
    assert brain_main(["sql", "SELECT count(*) AS n FROM uniqueness", "--format", "json",
                       "--set", f"lake={remote.uri}"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == [{"n": DIGITS}]
    assert Lake(remote.uri).read("samples", columns=["sample_id"]).num_rows == DIGITS  # options from the environment


def test_no_credential_in_the_recorded_configs(lakes):
    _, remote, _, _ = lakes
    listed = runs.list_runs(remote)
    assert listed.num_rows >= 12
    for record in listed["config"].to_pylist():
        assert SECRET not in record and "moto-key" not in record
        options = json.loads(record)["storage"]["options"]
        assert options["AWS_SECRET_ACCESS_KEY"] == runs.REDACTED and options["AWS_ENDPOINT_URL"].startswith("http")


def test_vacuum_on_s3_purges_a_replaced_run_and_its_staged_files(lakes):
    _, remote, _, remote_runs = lakes
    from jobs import unique

    conf = local_conf("unused")
    conf.lake, conf.storage.options, conf.dataset = remote.uri, dict(remote.storage_options), "digits"
    conf.unique.n = 20
    replaced = remote_runs["unique"]
    unique.run(conf)  # supersedes the first unique run
    assert replaced in remote.staged_runs("unique")
    report = runs.vacuum(remote, retention_hours=0)
    assert replaced in report["purged_runs"]
    report = runs.vacuum(remote, retention_hours=0)  # the purged run's staging goes a retention later
    assert replaced in report["removed_staging"] and replaced not in remote.staged_runs("unique")
    assert sql.query(remote, 'SELECT count(*) AS n FROM "unique"').to_pylist() == [{"n": 20}]
    assert remote.read("unique", filter=pc.field("run_id") == replaced).num_rows == 0


def test_two_concurrent_writers_on_s3_both_commit(lakes):
    """Two processes appending to one table at once: delta-rs commits each version with a conditional put
    (If-None-Match), so a writer that loses a version retries on the next one and no commit is lost."""
    _, remote, _, _ = lakes
    before = remote.version("ingest_errors")
    writer = """
import sys, datetime as dt, json
from brain.lake import Lake
lake = Lake(sys.argv[1], storage_options=json.loads(sys.argv[2]))
for i in range(4):
    lake.append("ingest_errors", pa.table({"run_id": [sys.argv[3]], "dataset": ["digits"], "uri": [f"{sys.argv[3]}-{i}"],
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
