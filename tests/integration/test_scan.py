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


def test_scans_do_only_new_work_and_match_a_full_rebuild(tmp_path, ray_session, spark, capsys):
    from jobs import duplicates, scan, unique

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

    # near duplicates by an embedding threshold, kept fresh by the scan (which re-runs them in its process)
    first_distances = pc.list_element(lake.read("neighbors", columns=["distances"], filter=pc.field(
        "run_id") == first["knn"])["distances"], 0)
    follow = conf.model_copy(deep=True)
    follow.scan.rerun = "follow"
    follow.duplicates.thresh = float(np.quantile(first_distances.to_numpy(), 0.5))
    duplicates.run(follow, in_process=True)

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
    assert knn["executed_on"].startswith("ray=") and dict(knn["metrics"])["searched"] < 25

    # the updated graph is the graph a full rebuild computes
    ids, vectors = unique.read_vectors(lake, emb["run_id"])
    full_dist, _ = index.knn_graph(index.build_index(vectors, gpu=False), vectors, np.arange(len(ids)), 4,
                                   metric="cosine")
    graph = lake.read("neighbors", filter=pc.field("run_id") == knn["run_id"]).to_pydict()
    by_id = dict(zip(graph["sample_id"], graph["distances"]))
    np.testing.assert_allclose(np.array([by_id[i] for i in ids.to_pylist()]), full_dist, atol=1e-5)
    assert runs.load_view(lake, "uniqueness").num_rows == 25

    rerun = runs.get_run(lake, "duplicates")
    assert rerun["executed_on"].startswith("driver") and dict(rerun["input_run_ids"]) == {"neighbors": knn["run_id"]}
    follow.duplicates.brain_key = "duplicates_on_spark"
    on_spark = runs.get_run(lake, duplicates.run(follow))
    assert on_spark["executed_on"].startswith("spark=")
    columns = ["group_id", "kept_sample_id", "sample_id", "distance"]
    rows = [sorted(lake.read("duplicates", columns=columns, filter=pc.field("run_id") == r["run_id"]).to_pylist(),
                   key=lambda row: tuple(row.values())) for r in (rerun, on_spark)]
    assert rows[0] and rows[0] == rows[1]


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
    conf.scan.in_process_max = conf.scan.in_process_rows = 0  # the subprocess runs the Ray and Spark jobs
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


# -- a scan keeps every derived table fresh ----------------------------------------------------------
def _jobs():
    """Brain key → (how the test makes its first run, its table). Keys and tables are the defaults."""
    from jobs import duplicates, familiarity, hardness, label_quality, leaks, linear_probe, unique, visualization

    return {"duplicates": (duplicates.run, "duplicates"), "leaks": (leaks.run, "leaks"), "unique": (unique.run, "unique"),
            "predictions": (linear_probe.run, "predictions"), "hardness": (hardness.run, "hardness"),
            "mistakenness": (label_quality.run_mistakenness, "mistakenness"),
            "familiarity": (familiarity.run, "familiarity"), "visualization": (visualization.run, "visualization")}


PIPELINE = {"embeddings": "embeddings", "knn": "neighbors", "uniqueness": "uniqueness"}  # made by the scan itself
PER_SAMPLE = ("embeddings", "neighbors", "uniqueness", "predictions", "hardness", "mistakenness", "familiarity",
              "visualization")  # tables with a row for every sample of the run
ALL_KEYS = ("duplicates", "leaks", "unique", "predictions", "hardness", "mistakenness", "familiarity", "visualization")
# In CI the jobs without Spark (whose first jobs in a session cost tens of seconds on 2 loaded cores);
# every table, Spark's included, in the stress tier: pytest -m stress tests/integration/test_scan.py
CI_KEYS = ("unique", "predictions", "hardness", "visualization")


def _sample_ids(lake, where: str) -> set[str]:
    return {r["sample_id"] for r in sql.query(lake, f"SELECT sample_id FROM samples WHERE dataset = 'pets' AND {where}")
            .to_pylist()}


def _cli(capsys, *argv: str) -> str:
    from jobs.cli import main

    capsys.readouterr()
    assert main(list(argv)) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("keys", [
    pytest.param(CI_KEYS, id="ci"),
    pytest.param(ALL_KEYS, id="every-table", marks=pytest.mark.stress)])
def test_a_scan_refreshes_every_following_run_and_leaves_manual_ones(tmp_path, ray_session, spark, capsys, keys):
    from jobs import neighbors, scan, visualization
    from jobs.spark_lake import register_tables
    from tests.integration.app_lake import _near_copies

    images = tmp_path / "images"
    write_image_folder(images / "train", per_class=25, size=32, seed=1)
    write_image_folder(images / "test", per_class=7, size=32, seed=2)
    _near_copies(images / "train", images / "test", 4)  # near duplicates across splits: leaks
    conf = _conf(tmp_path, images)
    conf.scan.rerun = "follow"
    conf.embed.shard_size = 32
    conf.duplicates.candidate_thresh = 0.3
    conf.unique.n = 10
    conf.linear_probe.folds = 3
    conf.familiarity.fit_split = "train"
    conf.visualization.method = "pca"
    lake = Lake(conf.lake)
    scan.run(conf)  # ingest, embeddings, knn, uniqueness
    jobs = _jobs()
    for key in keys:
        jobs[key][0](conf)
    manual = conf.model_copy(deep=True)
    manual.scan.rerun = "manual"
    manual.visualization.brain_key = "my_map"
    visualization.run(manual)
    before = _run_ids(lake)
    conf_file = tmp_path / "scan.yaml"
    conf_file.write_text(yaml.safe_dump(conf.model_dump()))

    # 3 new images and a new near copy of a train image in test, 1 changed, 1 removed
    write_image_folder(images / "train", per_class=28, classes=("cat",), size=32, seed=1)  # cat-025..027 new
    write_image_folder(images / "train", per_class=1, classes=("fish",), size=32, seed=9)  # fish-000 changed
    _near_copies(images / "train" / "dog", images / "test", 1)  # test/dog/near-0-dog-000.png: a new leak
    removed = _sample_ids(lake, "uri LIKE '%train/dog/dog-003.png'")
    (images / "train" / "dog" / "dog-003.png").unlink()

    planned = _cli(capsys, "scan", "--plan", "--conf", str(conf_file))
    assert "4 new, 1 changed, 1 removed" in planned and _run_ids(lake) == before  # nothing ran
    lines = planned.splitlines()[1:]
    order = [line.split()[1] for line in lines]
    assert order[0] == "ingest_pets" and set(order) == {"ingest_pets", *PIPELINE, *keys, "my_map"}
    for first, then in (("embeddings", "knn"), ("knn", "uniqueness"), ("knn", "duplicates"), ("duplicates", "leaks"),
                        ("embeddings", "predictions"), ("predictions", "hardness"), ("predictions", "mistakenness"),
                        ("knn", "mistakenness")):
        if {first, then} <= set(order):
            assert order.index(first) < order.index(then)
    line_of = dict(zip(order, lines))
    assert line_of["embeddings"].startswith("  run  embeddings (embeddings, embed): incremental; samples: ")
    assert line_of["knn"].startswith("  run  knn (neighbors, neighbors): incremental; embeddings: ")
    assert f"neighbors: {before['knn'][:8]} → new" in line_of["uniqueness"] and "full" in line_of["uniqueness"]
    assert line_of["my_map"].startswith("  skip my_map (visualization, visualize): left stale: made by hand")

    scan.run(conf)
    after = _run_ids(lake)
    assert all(after[key] != before[key] for key in (*PIPELINE, *keys)), "every following run is made again"
    assert after["my_map"] == before["my_map"]
    new = _sample_ids(lake, "(uri SIMILAR TO '.*train/cat/cat-02[567].png' OR uri LIKE '%test/dog/near-0-dog-000.png')")
    assert len(new) == 4 and len(removed) == 1
    current = _sample_ids(lake, "true")
    for key, table in [*PIPELINE.items(), *((key, jobs[key][1]) for key in keys)]:
        ids = {r["sample_id"] for r in sql.query(lake, f"SELECT sample_id FROM \"{table}\" WHERE run_id = "
                                                       f"'{after[key]}'").to_pylist()}
        assert ids and ids <= current and not ids & removed, f"{table}: the removed sample is gone"
        if table in PER_SAMPLE:
            assert new <= ids, f"{table}: the new samples are scored"
    if "leaks" in keys:
        pairs = sql.query(lake, "SELECT sample_id, kept_sample_id FROM leaks").to_pylist()
        assert new & {i for pair in pairs for i in pair.values()}, "the new near copy in test is found as a leak"
    stale = sql.query(lake, "SELECT brain_key FROM runs WHERE current AND stale").column("brain_key").to_pylist()
    assert stale == ["my_map"]

    again = _cli(capsys, "scan", "--plan", "--conf", str(conf_file))
    assert "0 new, 0 changed, 0 removed" in again
    assert [line.split()[:2] for line in again.splitlines()[1:]] == [["skip", "my_map"]]

    neighbors.run(conf)  # a knn re-run by hand: the runs that read the old graph are stale
    listed = _cli(capsys, "runs", "--lake", conf.lake, "list")
    row = next(line for line in listed.splitlines() if "uniqueness" in line and "succeeded" in line)
    assert "stale" in row
    stale = sql.query(lake, "SELECT brain_key FROM runs WHERE current AND stale").column("brain_key").to_pylist()
    assert set(stale) == {"uniqueness", "my_map", *({"duplicates", "leaks", "mistakenness"} & set(keys))}
    register_tables(spark, lake)  # Spark SQL's runs view carries the same column
    assert {r.brain_key for r in spark.sql("SELECT brain_key FROM runs WHERE current AND stale").collect()} == set(stale)
