"""`brain scan` on real engines: incremental work only, nothing twice, and a killed scan finished by the next."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.compute as pc
import pytest
import yaml
from tests.conftest import ROOT, local_conf, write_image_folder

from brain import index, runs, sql
from brain.config import IngestConf
from brain.lake import Lake
from brain.scan import ScanLock, ScanLockedError

pytestmark = pytest.mark.integration


def _conf(tmp_path, images):
    conf = local_conf(tmp_path / "lake", ingest=IngestConf(source=str(images)))
    conf.neighbors.k = 4
    return conf


def _run_ids(lake):
    return {r["brain_key"]: r["run_id"] for r in runs.list_runs(lake).to_pylist() if r["status"] == "succeeded"}


def _visible(lake, table: str) -> int:
    """Rows of the table's current runs (what readers see)."""
    return sql.query(lake, f"SELECT count(*) AS n FROM {table}")["n"][0].as_py()


def test_scans_do_only_new_work_and_match_a_full_rebuild(tmp_path, ray_session, capsys):
    from jobs import neighbors, scan

    images = tmp_path / "images"
    write_image_folder(images, per_class=8)
    conf = _conf(tmp_path, images)
    lake = Lake(conf.lake)
    scan.run(conf)
    first = _run_ids(lake)
    assert _visible(lake, "uniqueness") == 24

    scan.run(conf)
    assert "no new work" in capsys.readouterr().out
    after_idle = _run_ids(lake)
    assert {k: v for k, v in after_idle.items() if k != "scan_pets"} == {k: v for k, v in first.items() if k != "scan_pets"}
    idle = runs.get_run(lake, "scan_pets")
    assert dict(idle["rows_written"]) == {} and dict(idle["metrics"])["steps"] == 0

    write_image_folder(images, per_class=10, classes=("cat",), seed=7)  # 8 cat images changed, 2 new
    (images / "dog" / "dog-000.png").unlink()  # 1 removed
    scan.run(conf)
    out = capsys.readouterr().out
    assert "2 new, 8 changed, 1 removed" in out
    emb = runs.get_run(lake, "embeddings")
    metrics = dict(emb["metrics"])
    assert (metrics["embedded"], metrics["carried"]) == (10.0, 15.0)
    assert _visible(lake, "embeddings") == 25 and _visible(lake, "uniqueness") == 25
    knn = runs.get_run(lake, "knn")
    assert knn["executed_on"].startswith("driver") and dict(knn["metrics"])["searched"] < 25

    # the updated graph is the graph a full rebuild computes
    ids, vectors = neighbors.read_vectors(lake, emb["run_id"])
    full_dist, _ = index.knn_graph(index.build_index(vectors, gpu=False), vectors, np.arange(len(ids)), 4,
                                   metric="cosine")
    graph = lake.read("neighbors", filter=pc.field("run_id") == knn["run_id"]).to_pydict()
    by_id = dict(zip(graph["sample_id"], graph["distances"]))
    np.testing.assert_allclose(np.array([by_id[i] for i in ids.to_pylist()]), full_dist, atol=1e-5)
    assert runs.load_view(lake, "uniqueness").num_rows == 25


def test_a_second_scan_fails_clearly_while_one_holds_the_lock(tmp_path):
    from jobs import scan

    images = tmp_path / "images"
    write_image_folder(images, per_class=2)
    conf = _conf(tmp_path, images)
    with ScanLock(Lake(conf.lake), "pets"):
        with pytest.raises(ScanLockedError, match="another scan of this dataset is running"):
            scan.run(conf)
    assert not Lake(conf.lake).exists("samples")  # it did nothing


def test_a_killed_scan_leaves_no_partial_rows_and_the_next_one_finishes(tmp_path, ray_session):
    from jobs import scan

    images = tmp_path / "images"
    write_image_folder(images, per_class=10)
    conf = _conf(tmp_path, images)
    conf.scan.in_process_max = 0  # the subprocess runs the Ray and Spark jobs
    conf_file = tmp_path / "scan.yaml"
    conf_file.write_text(yaml.safe_dump(conf.model_dump()))
    lake = Lake(conf.lake)
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_ADDRESS="")
    proc = subprocess.Popen([sys.executable, "-m", "jobs.scan", "--conf", str(conf_file)], cwd=ROOT, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:  # kill it once the kNN run is committed
            if lake.exists("run_events") and "knn" in _run_ids(lake):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the scan ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _run_ids(lake)
    assert {"ingest_pets", "embeddings", "knn"} <= set(before) and "uniqueness" not in before
    assert runs.get_run(lake, "scan_pets")["status"] == "running"
    assert _visible(lake, "uniqueness") == 0  # nothing partial visible

    conf.scan.in_process_max = 2000
    scan.run(conf)
    after = _run_ids(lake)
    for key in ("ingest_pets", "embeddings", "knn"):
        assert after[key] == before[key]  # committed work is not redone
    assert _visible(lake, "uniqueness") == 30
    assert dict(runs.get_run(lake, "scan_pets")["metrics"])["abandoned_runs"] >= 1
    assert runs.list_runs(lake).filter(pc.equal(runs.list_runs(lake)["status"], "running")).num_rows == 0
