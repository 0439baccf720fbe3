"""The kNN job on a real multi-node Ray cluster on loopback: a head and two `ray start --address` worker
nodes, one CPU and their own memory each. The shards land on three nodes, the driver's memory does not
grow with the vectors, and the graph's recall is the single-node run's."""

from __future__ import annotations

import subprocess
import sys
import tempfile

import numpy as np
import pyarrow as pa
import pytest
import yaml

from brain import runs
from brain.lake import Lake
from tests.conftest import ROOT, local_conf
from tests.integration.test_cluster import VENV_BIN, _env, _free_port, _kill_group, _kill_processes_under

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


def _ray_start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([str(VENV_BIN / "ray"), "start", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                             f"--dashboard-agent-listen-port={_free_port()}", f"--metrics-export-port={_free_port()}",
                             f"--runtime-env-agent-port={_free_port()}", *args],
                            env=_env(), start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


@pytest.fixture(scope="module")
def three_nodes():
    temp = tempfile.mkdtemp(prefix="lbknn", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    port = _free_port()
    started = [_ray_start("--head", f"--port={port}", "--num-cpus=1", "--memory=2000000000",
                          "--object-store-memory=300000000", "--include-dashboard=false", f"--temp-dir={temp}")]
    try:
        out, _ = started[0].communicate(timeout=90)
        assert started[0].returncode == 0, out
        for _ in range(2):
            lo = _free_port()
            node = _ray_start(f"--address=127.0.0.1:{port}", "--num-cpus=1", "--memory=2000000000",
                              "--object-store-memory=300000000", f"--node-manager-port={_free_port()}",
                              f"--object-manager-port={_free_port()}", f"--min-worker-port={lo}",
                              f"--max-worker-port={lo + 40}")
            started.append(node)
            out, _ = node.communicate(timeout=90)
            assert node.returncode == 0, out
        yield f"127.0.0.1:{port}"
    finally:
        _kill_processes_under(temp)
        for proc in reversed(started):  # each `ray start` and the node processes it left in its group
            _kill_group(proc.pid)


def _lake(root, n: int) -> Lake:
    """An embeddings run of n power-law vectors (D 256) in files of 5,000 rows."""
    rng = np.random.default_rng(0)
    scale = 1 / np.sqrt(np.arange(1, 257))
    modes = rng.normal(size=(50, 256)) * scale
    x = (modes[rng.integers(0, 50, n)] + rng.normal(size=(n, 256)) * scale).astype(np.float32)
    lake = Lake(root)
    with runs.track(lake, brain_key="embeddings", method="embeddings", dataset="pets", config={}) as run:
        for a in range(0, n, 5000):
            part = x[a:a + 5000]
            run.write("embeddings", pa.table({
                "run_id": pa.array([run.run_id] * len(part)), "sample_id": pa.array([f"s{a + i:07d}" for i in range(len(part))]),
                "vector": pa.array(list(part), pa.list_(pa.float32()))}))
    return lake


def _run_job(root, lake: Lake, address: str | None) -> dict[str, float]:
    conf = local_conf(lake.uri)
    conf.ray.address = address
    conf.neighbors = conf.neighbors.model_copy(update=dict(k=10, flat_threshold=1000, index_shards=3,
                                                            recall_queries=500))
    path = root / "knn.yaml"
    path.write_text(yaml.safe_dump(conf.model_dump()))
    done = subprocess.run([sys.executable, "-m", "jobs.neighbors", "--conf", str(path)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return dict(runs.get_run(lake, "knn")["metrics"])


def test_shards_on_three_nodes_driver_flat_recall_as_on_one_node(tmp_path, three_nodes):
    small = _run_job(tmp_path, small_lake := _lake(tmp_path / "small", 20_000), three_nodes)
    assert small["nodes"] == 3 and small["index_shards"] == 3
    big = _run_job(tmp_path, _lake(tmp_path / "big", 80_000), three_nodes)
    assert big["nodes"] == 3
    # 60,000 more vectors of 256 floats are 61 MB on the workers; the driver holds their ids (and the
    # id map's Parquet writer) only: it grows by well under half of that (one copy of the vectors would be all of it)
    assert big["driver_peak_rss_gb"] - small["driver_peak_rss_gb"] < 0.5 * 60_000 * 256 * 4 / 2**30, (small, big)
    assert big["worker_peak_rss_gb"] > small["worker_peak_rss_gb"]
    assert big["recall_at_k"] >= 0.93 and big["recall_cap_hit"] == 0

    single = _run_job(tmp_path, small_lake, None)  # a local one-node Ray
    assert single["nodes"] == 1
    assert single["nprobe"] == small["nprobe"] and abs(single["recall_at_k"] - small["recall_at_k"]) <= 0.01
