import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from brain.lake import Lake, SchemaMismatchError
from brain.schemas import EMBEDDINGS, RUN_RESULT_TABLES, TABLES


def _emb(run_id: str, ids: list[str]) -> pa.Table:
    return pa.table({"run_id": [run_id] * len(ids), "sample_id": ids,
                     "vector": pa.array([[float(i), 1.0] for i in range(len(ids))], pa.list_(pa.float32()))})


def test_every_table_is_created_with_its_schema(lake):
    for name, schema in TABLES.items():
        assert lake.read(name).schema == schema
        assert lake.version(name) == 0


def test_staged_files_are_invisible_until_committed(lake):
    lake.stage("embeddings", "r1", _emb("r1", ["a", "b"]))
    assert lake.read("embeddings").num_rows == 0
    assert lake.commit_files("embeddings", "r1") == 2
    assert sorted(lake.read("embeddings")["sample_id"].to_pylist()) == ["a", "b"]


def test_discarded_staging_is_never_seen(lake):
    lake.stage("embeddings", "r2", _emb("r2", ["x"]))
    lake.discard_staged("embeddings", "r2")
    assert lake.staged_files("embeddings", "r2") == []
    assert lake.commit_files("embeddings", "r2") == 0
    assert lake.read("embeddings").num_rows == 0


def test_a_file_with_the_wrong_schema_is_refused_and_nothing_is_lost(lake):
    lake.stage("embeddings", "good", _emb("good", ["a"]))
    lake.commit_files("embeddings", "good")
    bad = pa.table({"run_id": ["bad"], "sample_id": ["b"], "vector": pa.array([["oops"]])})
    base = lake.staging_dir("embeddings", "bad")
    lake._fs.create_dir(base, recursive=True)
    pq.write_table(bad, f"{base}/part-0.parquet")
    with pytest.raises(SchemaMismatchError, match="column 'vector' is list<element: string>"):
        lake.commit_files("embeddings", "bad")
    assert lake.read("embeddings")["sample_id"].to_pylist() == ["a"]


def test_append_refuses_rows_with_missing_columns(lake):
    with pytest.raises(SchemaMismatchError, match="missing columns \\['vector'\\]"):
        lake.append("embeddings", pa.table({"run_id": ["r"], "sample_id": ["s"]}))


def test_delete_where_removes_only_matching_rows(lake):
    lake.append("embeddings", _emb("r1", ["a", "b"]))
    lake.append("embeddings", _emb("r2", ["a"]))
    assert lake.delete_where("embeddings", "run_id = 'r1'") == 2
    assert lake.read("embeddings")["run_id"].to_pylist() == ["r2"]


def test_artifacts_round_trip_and_delete(lake):
    lake.write_artifact("r1", "index.faiss", b"abc")
    assert lake.read_artifact("r1", "index.faiss") == b"abc"
    lake.delete_artifacts("r1")
    with pytest.raises(FileNotFoundError):
        lake.read_artifact("r1", "index.faiss")


def test_unknown_table_is_named():
    with pytest.raises(ValueError, match="unknown lake table 'nope'"):
        Lake("/tmp/unused").table_uri("nope")


def test_run_result_tables_are_keyed_by_run():
    assert "runs" not in RUN_RESULT_TABLES and "samples" not in RUN_RESULT_TABLES
    assert {"embeddings", "neighbors", "uniqueness", "ingest_errors"} <= set(RUN_RESULT_TABLES)
    assert EMBEDDINGS.field("vector").type == pa.list_(pa.float32())


def test_a_table_made_before_the_patch_columns_gains_them_at_its_next_commit(lake):
    from deltalake import write_deltalake

    old_schema = pa.schema([f for f in TABLES["uniqueness"] if not f.name.startswith("patch_")])
    write_deltalake(lake.table_uri("uniqueness"), pa.table(  # as an older lakebrain wrote it
        {"run_id": ["old"], "brain_key": ["u"], "sample_id": ["a"], "uniqueness": [0.5]}, old_schema))
    lake.stage("uniqueness", "new", pa.table({  # whole-image rows may leave the patch columns out
        "run_id": ["new"], "brain_key": ["u"], "sample_id": ["b"], "uniqueness": [1.0]}))
    lake.stage("uniqueness", "patches", pa.table({
        "run_id": ["patches"], "brain_key": ["p"], "sample_id": ["c"], "uniqueness": [0.2],
        "patch_index": pa.array([3], pa.int32()), "patch_label": ["car"],
        "patch_bbox": pa.array([[0.1, 0.2, 0.3, 0.4]], pa.list_(pa.float32()))}))
    lake.commit_files("uniqueness", "new")
    lake.commit_files("uniqueness", "patches")
    rows = {r["sample_id"]: r for r in lake.read("uniqueness").to_pylist()}
    assert rows["a"]["patch_index"] is None and rows["b"]["patch_label"] is None
    assert (rows["c"]["patch_index"], rows["c"]["patch_label"]) == (3, "car")
    assert rows["c"]["patch_bbox"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
