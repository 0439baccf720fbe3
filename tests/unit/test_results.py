"""load_results for every kind of run: each method's loader returns that run's rows (and only them)."""

import io
import json

import numpy as np
import pyarrow as pa
import pytest

from brain import index, results, runs
from jobs.cli import main as brain_main
from brain.methods import familiarity as fam
from brain.schemas import TABLES


def _rows(table: str, run_id: str, n: int = 3) -> pa.Table:
    """``n`` rows of ``table`` for ``run_id``: each column holds values of its own type."""
    schema = TABLES[table]
    columns = {}
    for f in schema:
        if f.name == "run_id":
            values = [run_id] * n
        elif f.name == "sample_id":
            values = [f"s{i}" for i in range(n)]
        elif pa.types.is_string(f.type):
            values = [f"{f.name}-{i}" for i in range(n)]
        elif pa.types.is_floating(f.type):
            values = [0.25 * i for i in range(n)]
        elif pa.types.is_integer(f.type):
            values = list(range(n))
        elif pa.types.is_boolean(f.type):
            values = [i % 2 == 0 for i in range(n)]
        elif pa.types.is_list(f.type) and pa.types.is_floating(f.type.value_type):
            values = [[0.5, 1.5]] * n
        else:
            values = [None] * n
        columns[f.name] = pa.array(values, f.type)
    return pa.table(columns, schema=schema)


def _run(lake, key: str, method: str, tables: list[str]) -> str:
    with runs.track(lake, brain_key=key, method=method, dataset="d", config={}) as run:
        for table in tables:
            run.write(table, _rows(table, run.run_id))
    return run.run_id


@pytest.mark.parametrize("method, table", [
    ("embeddings", "embeddings"), ("patch_embeddings", "patch_embeddings"), ("uniqueness", "uniqueness"),
    ("duplicates_near", "duplicates"), ("duplicates_exact", "duplicates"), ("unique", "unique"),
    ("leaks", "leaks"), ("hardness", "hardness"), ("visualization", "visualization"),
    ("comparison", "familiarity_comparison"), ("similarity_view", "similarity_views"),
])
def test_one_table_methods_give_the_runs_rows(lake, method, table):
    _run(lake, "other", method, [table])  # another run's rows in the same table are not returned
    run_id = _run(lake, "key", method, [table])
    loaded = results.load_results(lake, "key")
    assert isinstance(loaded, pa.Table) and loaded.num_rows == 3
    assert set(loaded["run_id"].to_pylist()) == {run_id}
    assert loaded.schema.names == TABLES[table].names


@pytest.mark.parametrize("method, tables", [
    ("mistakenness", ["mistakenness", "label_quality_classes", "label_confusion"]),
    ("detection_mistakenness", ["detection_mistakenness", "detection_objects", "detection_labels"]),
])
def test_several_table_methods_give_a_dict_of_tables(lake, method, tables):
    run_id = _run(lake, "key", method, tables)
    loaded = results.load_results(lake, "key")
    assert sorted(loaded) == sorted(tables)
    for table in tables:
        assert loaded[table]["run_id"].to_pylist() == [run_id] * 3


def test_predictions_carry_their_class_order(lake):
    run_id = _run(lake, "preds", "predictions", ["predictions"])
    lake.write_artifact(run_id, "classes.json", json.dumps(["cat", "dog"]).encode())
    loaded = results.load_results(lake, "preds")
    assert loaded.classes == ["cat", "dog"] and loaded.rows.num_rows == 3
    _run(lake, "boxes", "predictions", ["predictions"])
    assert results.load_results(lake, "boxes").classes is None  # a detector's run has no logits


def test_familiarity_reloads_its_model(lake):
    x = np.random.default_rng(0).normal(size=(60, 4))
    model = fam.fit(x, reduced_dims=2, gaussian_count=2, seed=0)
    run_id = _run(lake, "fam", "familiarity", ["familiarity", "familiarity_extremes"])
    lake.write_artifact(run_id, results.FAMILIARITY_MODEL_ARTIFACT, model.save(io.BytesIO()).getvalue())
    blob = io.BytesIO()
    np.save(blob, np.sort(model.score(x)))
    lake.write_artifact(run_id, results.FAMILIARITY_FIT_SCORES_ARTIFACT, blob.getvalue())
    loaded = results.load_results(lake, "fam")
    assert loaded.scores.num_rows == 3 and loaded.extremes.num_rows == 3
    np.testing.assert_array_equal(loaded.model.score(x), model.score(x))
    np.testing.assert_array_equal(loaded.fit_scores, np.sort(model.score(x)))


def test_knn_run_gives_its_index(lake):
    vectors = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    with runs.track(lake, brain_key="knn", method="neighbors", dataset="d", config={}) as run:
        lake.write_artifact(run.run_id, "index-0.faiss", index.serialize(index.build_index(vectors, gpu=False)).tobytes())
        lake.write_artifact(run.run_id, "index.json", json.dumps({"shards": 1}).encode())
    (loaded,) = results.load_results(lake, "knn")
    assert loaded.ntotal == 5


def test_runs_without_results_are_refused_by_name(lake):
    with runs.track(lake, brain_key="w", method="walkthrough", dataset="d", config={}):
        pass
    with pytest.raises(ValueError, match="'walkthrough' run, which stores no results"):
        results.load_results(lake, "w")
    with pytest.raises(RuntimeError):
        with runs.track(lake, brain_key="f", method="hardness", dataset="d", config={}):
            raise RuntimeError("boom")
    with pytest.raises(ValueError, match="is failed"):
        results.load_results(lake, "f")


def test_the_results_verb_prints_a_runs_rows(lake, tmp_path, capsys):
    run_id = _run(lake, "u", "uniqueness", ["uniqueness"])
    assert brain_main(["results", "u", "--lake", lake.uri, "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["run_id"] for r in rows] == [run_id] * 3
    _run(lake, "m", "mistakenness", ["mistakenness", "label_quality_classes", "label_confusion"])
    assert brain_main(["results", "m", "--lake", lake.uri]) == 2
    assert "choose one with --table" in capsys.readouterr().err
    assert brain_main(["results", "m", "--lake", lake.uri, "--table", "label_confusion", "--format", "csv",
                       "--out", str(tmp_path / "c.csv")]) == 0
    assert len((tmp_path / "c.csv").read_text().splitlines()) == 4  # header + 3 rows
