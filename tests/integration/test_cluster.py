"""`brain submit` to real local clusters: a Ray head (Jobs API) and a standalone Spark master + worker.

Both clusters are started on 127.0.0.1 by this module, in their own process groups and temp
folders, and only their processes are stopped at the end (the session's own `ray.init` and
Spark are left alone). The embedding, kNN and unique-subset (a driver job) jobs go through the
Ray Jobs API, uniqueness and duplicates through spark-submit (with credentials in spark.conf and
submit.env_vars that must not show in the output), all into one lake.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from tests.conftest import ROOT, local_conf, write_image_folder

from brain import runs
from brain.config import IngestConf
from brain.lake import Lake

pytestmark = pytest.mark.cluster

VENV_BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict[str, str]:
    # A local Ray started earlier in this process switched Ray's multi-node mode off in os.environ
    # (jobs.engines._ray_on_loopback): the clusters started here are multi-node.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    return dict(env, PATH=f"{VENV_BIN}:{os.environ['PATH']}", PYTHONPATH=str(ROOT), RAY_AUTH_MODE="disabled",
                SPARK_LOCAL_IP="127.0.0.1", RAY_ADDRESS="", **extra)


def _kill_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        time.sleep(2)


def _kill_processes_under(folder: str) -> None:
    """Processes whose working folder is inside ``folder`` (Ray job drivers run in their own sessions)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.readlink(proc / "cwd").startswith(folder):
                    os.kill(int(proc.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


@pytest.fixture(scope="module")
def ray_cluster():
    temp = tempfile.mkdtemp(prefix="lbray", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    port, dashboard = _free_port(), _free_port()
    head = subprocess.Popen(
        [str(VENV_BIN / "ray"), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--dashboard-agent-listen-port={_free_port()}", f"--temp-dir={temp}", "--disable-usage-stats"],
        env=_env(), start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = head.communicate(timeout=90)
        assert head.returncode == 0, out
        yield f"http://127.0.0.1:{dashboard}", port
    finally:
        _kill_processes_under(temp)
        _kill_group(head.pid)


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory):
    import pyspark

    home = Path(pyspark.__file__).parent
    state = tmp_path_factory.mktemp("spark-standalone")
    port = _free_port()
    env = _env(SPARK_HOME=str(home), SPARK_PID_DIR=str(state), SPARK_LOG_DIR=str(state),
               SPARK_WORKER_DIR=str(state / "work"))
    daemon = [str(home / "sbin" / "spark-daemon.sh")]
    master_cls, worker_cls = "org.apache.spark.deploy.master.Master", "org.apache.spark.deploy.worker.Worker"
    master = f"spark://127.0.0.1:{port}"
    subprocess.run(daemon + ["start", master_cls, "1", "--host", "127.0.0.1", "--port", str(port),
                             "--webui-port", str(_free_port())], env=env, check=True, capture_output=True)
    subprocess.run(daemon + ["start", worker_cls, "1", master, "--host", "127.0.0.1", "--webui-port",
                             str(_free_port()), "--cores", "1", "--memory", "1g"], env=env, check=True,
                   capture_output=True)
    try:
        yield master
    finally:
        for cls in (worker_cls, master_cls):  # stops the pids in our SPARK_PID_DIR only
            subprocess.run(daemon + ["stop", cls, "1"], env=env, capture_output=True)


@pytest.fixture(scope="module")
def cluster_lake(tmp_path_factory):
    from jobs import ingest

    root = tmp_path_factory.mktemp("cluster")
    write_image_folder(root / "images", per_class=6)
    conf = local_conf(root / "lake", ingest=IngestConf(source=str(root / "images")))
    conf.neighbors.k = 4
    ingest.run(conf)
    return root, conf


def _submit(root: Path, conf, job: str) -> subprocess.CompletedProcess:
    path = root / f"submit-{job}.yaml"
    path.write_text(yaml.safe_dump(conf.model_dump()))
    return subprocess.run([sys.executable, "-m", "jobs.cli", "submit", job, "--conf", str(path)], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=240)


def test_embedding_and_knn_jobs_through_the_ray_jobs_api(cluster_lake, ray_cluster):
    root, conf = cluster_lake
    conf = conf.model_copy(deep=True)
    conf.submit.ray_address, gcs_port = ray_cluster
    conf.submit.python = sys.executable
    conf.unique.n = 4
    for job in ("embed", "neighbors", "unique"):  # unique: a driver job, sent to the Ray Jobs API
        done = _submit(root, conf, job)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "SUCCEEDED" in done.stdout and f"lakebrain-{job}-" in done.stdout
    lake = Lake(conf.lake)
    emb = runs.get_run(lake, "embeddings")
    assert emb["status"] == "succeeded" and emb["submission_id"].startswith("lakebrain-embed-")
    assert f":{gcs_port} " in emb["executed_on"]  # the cluster's address, not a local Ray
    assert lake.read("embeddings").num_rows == 18


def test_uniqueness_job_through_spark_submit(cluster_lake, spark_cluster):
    root, conf = cluster_lake
    conf = conf.model_copy(deep=True)
    conf.spark.master = spark_cluster
    conf.spark.conf.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                            "spark.executor.memory": "512m", "spark.cores.max": "1"})
    conf.spark.conf["spark.hadoop.fs.s3a.secret.key"] = "s3cr3t-in-spark-conf"
    conf.submit.env_vars = {"AWS_SECRET_ACCESS_KEY": "s3cr3t-in-env-vars"}
    conf.duplicates.method = "exact"
    for job in ("uniqueness", "duplicates"):
        done = _submit(root, conf, job)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "SUCCEEDED" in done.stdout and "spark.hadoop.fs.s3a.secret.key=***" in done.stdout
        assert "s3cr3t" not in done.stdout + done.stderr


def test_the_catalog_shows_where_each_submitted_run_ran(cluster_lake):
    root, conf = cluster_lake
    catalog = {r["method"]: r for r in runs.list_runs(Lake(conf.lake)).to_pylist()}
    submitted = ("embeddings", "neighbors", "unique", "uniqueness", "duplicates_exact")
    assert {m: catalog[m]["status"] for m in submitted} == dict.fromkeys(submitted, "succeeded")
    assert catalog["unique"]["submission_id"].startswith("lakebrain-unique-")
    assert catalog["duplicates_exact"]["submission_id"].startswith("lakebrain-duplicates-")
    uq = catalog["uniqueness"]
    assert uq["submission_id"].startswith("lakebrain-uniqueness-")
    assert uq["executed_on"].startswith("spark=spark://127.0.0.1")
    assert catalog["neighbors"]["submission_id"].startswith("lakebrain-neighbors-")
    assert catalog["ingest"]["submission_id"] is None
    assert Lake(conf.lake).read("uniqueness").num_rows == 18
