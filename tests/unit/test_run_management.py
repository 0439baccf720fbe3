import json
from pathlib import Path

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


def test_runs_view_prints_and_exports_the_samples_a_run_was_computed_on(lake, tmp_path, capsys):
    import pyarrow.parquet as pq

    _samples(lake, 5)
    with runs.track(lake, brain_key="cats", method="embeddings", dataset="d", config={},
                    sample_filter=runs.dataset_filter("d", "label = 'cat'")):
        pass
    assert brain_main(["runs", "--lake", lake.uri, "view", "cats", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith('"sample_id"') and [line.split(",")[0] for line in lines[1:]] == ['"s1"', '"s3"']
    out = tmp_path / "view.parquet"
    assert brain_main(["runs", "--lake", lake.uri, "view", "cats", "--format", "parquet", "--out", str(out)]) == 0
    assert pq.read_table(out)["sample_id"].to_pylist() == ["s1", "s3"]
    assert brain_main(["runs", "--lake", lake.uri, "view", "nope"]) == 2
    assert "no run with key or id 'nope'" in capsys.readouterr().err


def test_delete_all_needs_yes_and_removes_every_run_of_the_dataset_or_the_lake(lake, capsys):
    keys = {}
    for key, dataset in (("u1", "d"), ("u2", "d"), ("o", "other")):
        with runs.track(lake, brain_key=key, method="uniqueness", dataset=dataset, config={}) as run:
            run.write("uniqueness", _scores(run.run_id, key))
            run.write_artifact("model.bin", b"x")
        keys[key] = run.run_id
    assert brain_main(["runs", "--lake", lake.uri, "delete", "--all", "--dataset", "d"]) == 2
    refusal = capsys.readouterr().err
    assert "would delete all 2 runs of dataset 'd'" in refusal and "nothing was deleted. Add --yes" in refusal
    assert len(runs.list_runs(lake)) == 3  # refused: nothing deleted
    assert brain_main(["runs", "--lake", lake.uri, "delete", "u1", "--all", "--yes"]) == 2  # a key or --all
    assert brain_main(["runs", "--lake", lake.uri, "delete", "--all", "--dataset", "d", "--yes"]) == 0
    assert "deleted 2 runs of dataset 'd'" in capsys.readouterr().out
    assert runs.list_runs(lake)["brain_key"].to_pylist() == ["o"]
    assert sql.query(lake, "SELECT DISTINCT brain_key FROM uniqueness_history")["brain_key"].to_pylist() == ["o"]
    assert lake.artifact_runs() == [keys["o"]]
    # a running run is left alone: its job commits after the delete
    with runs.track(lake, brain_key="busy", method="uniqueness", dataset="d", config={}):
        deleted, running = runs.delete_runs(lake)
    assert deleted == [keys["o"]] and len(running) == 1
    assert runs.list_runs(lake)["brain_key"].to_pylist() == ["busy"]


def test_cleanup_removes_orphans_and_keeps_what_runs_own(lake, capsys):
    with runs.track(lake, brain_key="u", method="uniqueness", dataset="d", config={}) as run:
        run.write("uniqueness", _scores(run.run_id, "u"))
        run.write_artifact("index.json", b"{}")
    kept = run.run_id
    # a killed job: its staged file was never committed, its heartbeat stays (marked abandoned by the cleanup)
    with pytest.raises(RuntimeError):
        with runs.track(lake, brain_key="v", method="uniqueness", dataset="d", config={}, keep_staged=True) as run:
            run.write("uniqueness", _scores(run.run_id, "v"))
            raise RuntimeError("killed")
    resumable = run.run_id
    with runs.track(lake, brain_key="w", method="uniqueness", dataset="d", config={}) as run:
        run.write_artifact("classes.json", b"[]")
    lake.stage("uniqueness", "f" * 32, _scores("f" * 32, "w"))  # a run the catalog has never heard of
    lake.stage("uniqueness", kept, _scores(kept, "u"))  # a late worker's file, staged after the commit
    lake.stage("uniqueness", run.run_id, _scores(run.run_id, "w"))  # of a run deleted (purged) next: vacuum's
    lake.beat(run.run_id)  # a heartbeat its process failed to remove
    lake.write_artifact("e" * 32, "model.npz", b"x")  # artifacts of an unknown run
    runs.delete_run(lake, "w")
    lake.write_artifact(run.run_id, "late.bin", b"x")  # written after the delete's purge
    plots = Path(lake.uri) / "plots"
    plots.mkdir()
    for name in ("u.html", "u.png", "w.html", "notes.txt"):
        (plots / name).write_text("x")

    dry = runs.cleanup(lake, dry_run=True)
    committed = {uri.rsplit("/", 1)[1] for uri in lake.file_uris("uniqueness")}
    assert sorted(dry["staged_files"]) == sorted(f"uniqueness/{f}" for r in ("f" * 32, kept)
                                                 for f in lake.staged_files("uniqueness", r)
                                                 if f.rsplit("/", 1)[1] not in committed)
    assert len(dry["staged_files"]) == 2
    assert dry["heartbeats"] == [run.run_id] and sorted(dry["artifacts"]) == sorted(["e" * 32, run.run_id])
    assert dry["plots"] == ["w.html"]
    assert lake.heartbeat_runs() == [run.run_id] and len(lake.artifact_runs()) == 3  # a dry run removes nothing

    assert brain_main(["lake", "cleanup", "--lake", lake.uri]) == 0
    assert "removed 2 uncommitted staged files" in capsys.readouterr().out
    # committed rows; a resumable run's shards; a purged run's files until vacuum
    assert sorted(lake.staged_runs("uniqueness")) == sorted([kept, resumable, run.run_id])
    assert len(lake.staged_files("uniqueness", kept)) == 1 and lake.staged_files("uniqueness", resumable)
    assert lake.heartbeat_runs() == [] and lake.artifact_runs() == [kept]
    assert sorted(p.name for p in plots.iterdir()) == ["notes.txt", "u.html", "u.png"]
    assert results.load_results(lake, "u")["sample_id"].to_pylist() == ["s0", "s1"]
    assert runs.cleanup(lake) == {"staged_files": [], "heartbeats": [], "artifacts": [], "plots": []}
