import pyarrow as pa
import pytest

from brain import runs


def _emb(run_id: str, n: int = 2) -> pa.Table:
    return pa.table({"run_id": [run_id] * n, "sample_id": [f"s{i}" for i in range(n)],
                     "vector": pa.array([[1.0, 0.0]] * n, pa.list_(pa.float32()))})


def test_a_succeeded_run_row_is_complete(lake):
    with runs.track(lake, brain_key="emb", method="embeddings", dataset="d", config={"k": 3},
                    engine_versions={"ray": "x"}, executed_on="test") as run:
        run.rows_written["embeddings"] = lake.write_files("embeddings", run.run_id, [_emb(run.run_id)])
        run.metrics["recall_at_10"] = 0.97
    row = runs.get_run(lake, "emb")
    assert dict(row["metrics"]) == {"recall_at_10": 0.97}
    assert row["status"] == "succeeded" and row["error"] is None
    assert row["finished_at"] >= row["started_at"]
    assert dict(row["rows_written"]) == {"embeddings": 2}
    assert dict(row["engine_versions"])["ray"] == "x" and "python" in dict(row["engine_versions"])
    assert row["config"] == '{"k": 3}' and row["samples_version"] == 0 and row["package_version"]
    assert row["executed_on"] == "test"


def test_a_failed_run_leaves_no_rows_and_says_why(lake):
    with pytest.raises(RuntimeError, match="boom"):
        with runs.track(lake, brain_key="emb", method="embeddings", dataset="d", config={}) as run:
            lake.write_files("embeddings", run.run_id, [_emb(run.run_id)])  # committed …
            lake.stage("embeddings", run.run_id, _emb(run.run_id))  # … and staged
            lake.write_artifact(run.run_id, "index.faiss", b"x")
            raise RuntimeError("boom")
    row = runs.get_run(lake, "emb")
    assert row["status"] == "failed" and row["error"] == "RuntimeError: boom"
    assert lake.read("embeddings").num_rows == 0
    assert lake.staged_files("embeddings", row["run_id"]) == []
    with pytest.raises(runs.RunNotFoundError, match="no succeeded run with key 'emb'"):
        runs.latest_succeeded(lake, "emb")


def test_a_new_run_with_the_same_key_replaces_the_old_one(lake):
    ids = []
    for _ in range(2):
        with runs.track(lake, brain_key="emb", method="embeddings", dataset="d", config={}) as run:
            lake.write_files("embeddings", run.run_id, [_emb(run.run_id, 3)])
        ids.append(run.run_id)
    assert lake.read("embeddings")["run_id"].unique().to_pylist() == [ids[1]]
    assert runs.list_runs(lake)["run_id"].to_pylist() == [ids[1]]


def test_delete_removes_rows_files_and_catalog_row(lake):
    with runs.track(lake, brain_key="a", method="embeddings", dataset="d", config={}) as run_a:
        lake.write_files("embeddings", run_a.run_id, [_emb(run_a.run_id)])
        lake.write_artifact(run_a.run_id, "index.faiss", b"x")
    with runs.track(lake, brain_key="b", method="embeddings", dataset="d", config={}) as run_b:
        lake.write_files("embeddings", run_b.run_id, [_emb(run_b.run_id)])
    assert runs.delete_run(lake, "a") == run_a.run_id
    assert lake.read("embeddings")["run_id"].unique().to_pylist() == [run_b.run_id]
    assert runs.list_runs(lake)["brain_key"].to_pylist() == ["b"]
    with pytest.raises(FileNotFoundError):
        lake.read_artifact(run_a.run_id, "index.faiss")
    with pytest.raises(runs.RunNotFoundError, match="no run with key or id 'a'"):
        runs.delete_run(lake, "a")


def test_list_by_method(lake):
    for key, method in (("e", "embeddings"), ("n", "neighbors")):
        with runs.track(lake, brain_key=key, method=method, dataset="d", config={}):
            pass
    assert runs.list_runs(lake, method="neighbors")["brain_key"].to_pylist() == ["n"]
