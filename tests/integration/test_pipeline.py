"""ingest → embeddings (Ray Data) → kNN (FAISS on Ray) → uniqueness (Spark) → SQL, on real engines."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pytest

from brain import runs, sql
from brain.lake import Lake
from jobs.cli import main as brain_main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, small_pipeline):
    """The session's small pipeline in a lake of this module's own (its tests add and delete runs)."""
    mine = small_pipeline.copy(tmp_path_factory.mktemp("pipeline") / "lake")
    return mine.lake, mine.conf, mine.bad, mine.run_ids


def _uniqueness_by_uri(lake: Lake) -> dict[str, float]:
    rows = sql.query(lake, "SELECT s.uri, u.uniqueness FROM uniqueness u JOIN samples s USING (sample_id)")
    return dict(zip(rows["uri"].to_pylist(), rows["uniqueness"].to_pylist()))


def test_bad_files_are_recorded_and_the_rest_ingested(pipeline):
    lake, _, bad, _ = pipeline
    errors = lake.read("ingest_errors")
    assert sorted(errors["uri"].to_pylist()) == sorted([str(bad["corrupt"]), str(bad["text"])])
    assert set(errors["stage"].to_pylist()) == {"ingest"}
    assert lake.read("samples").num_rows == 46  # 45 images + the duplicate copy


def test_every_sample_is_embedded_and_has_k_neighbors(pipeline):
    lake, conf, _, run_ids = pipeline
    emb = lake.read("embeddings")
    assert emb.num_rows == 46 and set(emb["run_id"].to_pylist()) == {run_ids["embeddings"]}
    assert set(pc.list_value_length(emb["vector"]).to_pylist()) == {3 * 16 * 16}
    nbr = lake.read("neighbors")
    assert nbr.num_rows == 46
    for sample_id, ids, dists in zip(nbr["sample_id"].to_pylist(), nbr["neighbor_ids"].to_pylist(),
                                     nbr["distances"].to_pylist()):
        assert len(ids) == conf.neighbors.k and sample_id not in ids
        assert dists == sorted(dists)
    assert lake.read_artifact(run_ids["neighbors"], "index-0.faiss")


def test_uniqueness_values(pipeline):
    lake, _, bad, _ = pipeline
    scores = _uniqueness_by_uri(lake)
    values = np.array(list(scores.values()))
    assert len(scores) == 46 and values.min() >= 0.0 and values.max() == pytest.approx(1.0)
    # the injected exact duplicate and its original are the least unique samples (distance 0)
    least = sorted(scores, key=scores.get)[:2]
    assert set(least) == {str(bad["duplicate"]), str(bad["original"])}
    assert scores[str(bad["duplicate"])] < 0.5 * np.median(values)


def test_runs_rows_are_complete(pipeline):
    lake, _, _, run_ids = pipeline
    catalog = {r["method"]: r for r in runs.list_runs(lake).to_pylist()}
    assert set(catalog) == {"ingest", "embeddings", "neighbors", "uniqueness"}
    for method, row in catalog.items():
        assert row["run_id"] == run_ids[method] and row["status"] == "succeeded"
        assert row["finished_at"] is not None and row["git_sha"]
        assert row["samples_version"] >= (0 if method == "ingest" else 1)
        assert json.loads(row["config"])["dataset"] == "pets"
    assert dict(catalog["embeddings"]["rows_written"]) == {"embeddings": 46}  # no decode errors: no such table written
    assert dict(catalog["ingest"]["rows_written"]) == {"samples": 46, "ingest_errors": 2}
    assert "ray=" in catalog["embeddings"]["executed_on"] and "spark=local" in catalog["uniqueness"]["executed_on"]
    assert "pyspark" in dict(catalog["uniqueness"]["engine_versions"])
    assert catalog["uniqueness"]["input_key"] == "knn" and catalog["neighbors"]["input_key"] == "embeddings"


def test_sql_with_duckdb_and_spark_agree(pipeline, spark):
    from jobs.spark_lake import register_tables

    lake, _, _, _ = pipeline
    query = "SELECT s.label, count(*) AS n FROM uniqueness u JOIN samples s USING (sample_id) GROUP BY s.label ORDER BY s.label"
    duck = sql.query(lake, query).to_pylist()
    register_tables(spark, lake)
    assert [r.asDict() for r in spark.sql(query).collect()] == duck
    assert duck == [{"label": "cat", "n": 15}, {"label": "dog", "n": 15}, {"label": "fish", "n": 16}]


def test_cli_sql_and_runs(pipeline, capsys, tmp_path):
    lake, _, _, _ = pipeline
    assert brain_main(["sql", "--lake", lake.uri, "select count(*) as n from uniqueness", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"n": 46}
    out = tmp_path / "u.parquet"
    assert brain_main(["sql", "--lake", lake.uri, "select * from uniqueness", "--format", "parquet", "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    assert brain_main(["runs", "--lake", lake.uri, "list"]) == 0
    assert "succeeded" in capsys.readouterr().out
    assert brain_main(["sql", "--lake", lake.uri, "select * from nope"]) == 2
    assert "SQL failed" in capsys.readouterr().err


def test_a_failing_spark_job_leaves_no_rows_and_is_recorded(pipeline):
    from jobs import uniqueness

    lake, conf, _, _ = pipeline
    broken = conf.model_copy(deep=True)
    broken.uniqueness.brain_key = "uniqueness_broken"
    broken.uniqueness.weights = [0.1] * 6  # needs 6 neighbours, the kNN run has 5
    with pytest.raises(Exception, match="6"):
        uniqueness.run(broken)
    row = runs.get_run(lake, "uniqueness_broken")
    assert row["status"] == "failed" and "6" in row["error"]
    assert sql.query(lake, "SELECT count(*) AS n FROM uniqueness WHERE brain_key = 'uniqueness_broken'")["n"][0].as_py() == 0
    assert sql.query(lake, "SELECT count(*) AS n FROM uniqueness")["n"][0].as_py() == 46


def test_a_corrupt_image_after_ingest_is_recorded_at_decode(pipeline, tmp_path):
    """An image that breaks between ingest and embedding: its error row, the others embedded."""
    from jobs import embed

    lake, conf, _, _ = pipeline
    victim = lake.read("samples", columns=["uri"])["uri"][0].as_py()
    original = open(victim, "rb").read()
    try:
        with open(victim, "wb") as f:
            f.write(b"broken")
        other = conf.model_copy(deep=True)
        other.embed.brain_key = "embeddings_after_damage"
        run_id = embed.run(other)
    finally:
        with open(victim, "wb") as f:
            f.write(original)
    assert lake.read("embeddings", filter=pc.field("run_id") == run_id).num_rows == 45
    errors = lake.read("ingest_errors", filter=pc.field("run_id") == run_id)
    assert errors["uri"].to_pylist() == [victim] and errors["stage"].to_pylist() == ["decode"]
    runs.delete_run(lake, "embeddings_after_damage")
    assert lake.read("ingest_errors", filter=pc.field("run_id") == run_id).num_rows == 0


def test_delete_run_removes_its_rows(pipeline):
    lake, _, _, run_ids = pipeline
    runs.delete_run(lake, "knn")
    assert lake.read("neighbors").num_rows == 0
    assert run_ids["neighbors"] not in runs.list_runs(lake)["run_id"].to_pylist()
    assert lake.read("uniqueness").num_rows == 46  # other runs' rows stay
