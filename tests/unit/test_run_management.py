import json

import numpy as np
import pyarrow as pa
import pytest

from brain import index, results, runs, sql
from jobs.cli import main as brain_main


def _samples(lake, n=4):
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    lake.append("samples", pa.Table.from_pylist([
        dict(sample_id=f"s{i}", dataset="d" if i < n - 1 else "other", uri=f"/x/{i}.png", split=None,
             label="cat" if i % 2 else "dog", width=8, height=8, content_hash="h", size_bytes=1,
             attributes=None, ingested_at=now) for i in range(n)]))


def _scores(run_id, key, n=2):
    return pa.table({"run_id": [run_id] * n, "brain_key": [key] * n, "sample_id": [f"s{i}" for i in range(n)],
                     "uniqueness": [0.5] * n})


def test_rename_moves_the_key_everywhere_and_refuses_an_existing_key(lake, capsys):
    with runs.track(lake, brain_key="knn", method="neighbors", dataset="d", config={}):
        pass
    with runs.track(lake, brain_key="u", method="uniqueness", dataset="d", config={}, input_key="knn") as run:
        run.write("uniqueness", _scores(run.run_id, "u"))
    with runs.track(lake, brain_key="taken", method="uniqueness", dataset="d", config={}):
        pass
    with pytest.raises(ValueError, match="brain key 'taken' already exists"):
        runs.rename_run(lake, "u", "taken")
    assert runs.rename_run(lake, "u", "u2") == [run.run_id]
    assert sql.query(lake, "SELECT DISTINCT brain_key FROM uniqueness")["brain_key"].to_pylist() == ["u2"]
    assert runs.get_run(lake, "u2")["run_id"] == run.run_id
    with pytest.raises(runs.RunNotFoundError):
        runs.get_run(lake, "u")
    assert brain_main(["runs", "--lake", lake.uri, "rename", "knn", "graph"]) == 0
    assert runs.get_run(lake, "u2")["input_key"] == "graph"
    assert brain_main(["runs", "--lake", lake.uri, "rename", "graph", "taken"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_load_results_by_method(lake):
    vectors = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    with runs.track(lake, brain_key="knn", method="neighbors", dataset="d", config={}) as run:
        blob = index.serialize(index.build_index(vectors, gpu=False))
        lake.write_artifact(run.run_id, "index-0.faiss", blob.tobytes())
        lake.write_artifact(run.run_id, "index.json", json.dumps({"shards": 1}).encode())
    (loaded,) = results.load_results(lake, "knn")
    assert loaded.ntotal == 5
    _, ids = index.search(loaded, vectors[2:3], 1, metric="cosine")
    assert ids[0, 0] == 2
    with runs.track(lake, brain_key="u", method="uniqueness", dataset="d", config={}) as run:
        run.write("uniqueness", _scores(run.run_id, "u", 3))
    assert results.load_results(lake, "u").to_pandas()["sample_id"].tolist() == ["s0", "s1", "s2"]
    with runs.track(lake, brain_key="x", method="custom", dataset="d", config={}):
        pass
    with pytest.raises(ValueError, match="a 'custom' run, which stores no results to load"):
        results.load_results(lake, "x")


def test_load_view_reapplies_the_runs_sample_filter(lake):
    _samples(lake, 5)
    with runs.track(lake, brain_key="all", method="embeddings", dataset="d", config={}):
        pass
    with runs.track(lake, brain_key="cats", method="embeddings", dataset="d", config={},
                    sample_filter=runs.dataset_filter("d", "label = 'cat'")):
        pass
    assert runs.load_view(lake, "all")["sample_id"].to_pylist() == ["s0", "s1", "s2", "s3"]
    assert runs.load_view(lake, "cats")["sample_id"].to_pylist() == ["s1", "s3"]
    assert runs.get_run(lake, "cats")["sample_filter"] == "dataset = 'd' AND (label = 'cat')"


def test_submission_id_comes_from_the_environment(lake, monkeypatch):
    monkeypatch.setenv(runs.SUBMISSION_ENV, "raysubmit_123")
    with runs.track(lake, brain_key="e", method="embeddings", dataset="d", config={}):
        pass
    assert runs.get_run(lake, "e")["submission_id"] == "raysubmit_123"
