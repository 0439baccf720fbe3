"""The Python API (brain.open_lake) on real Ray, Spark, FAISS and Delta, checked against the CLI on the same lake.

The lake holds 200 of scikit-learn's digits (their 64 pixel values as registered embeddings, real
labels, a train/test split) and 4 near copies of the first 4 (the same pixels plus noise 1e-3):
the duplicates a threshold of 0.01 must find.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import brain
from brain.config import ConfError
from brain.lake import Lake
from brain.runs import RunNotFoundError
from jobs.cli import main as brain_main
from tests.conftest import local_conf, write_samples

pytestmark = pytest.mark.integration

N, COPIES = 200, 4


@pytest.fixture(scope="module")
def api_lake(tmp_path_factory, ray_session, spark):
    """The lake after compute_embeddings → similarity → uniqueness → duplicates → visualization, and what each returned."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    vectors = digits.data[:N]
    vectors = np.vstack([vectors, vectors[:COPIES] + np.random.default_rng(0).normal(0, 1e-3, (COPIES, 64))])
    labels = [str(t) for t in digits.target[:N]] + [str(t) for t in digits.target[:COPIES]]
    splits = ["test" if i % 5 == 0 else "train" for i in range(N + COPIES)]
    lake_path = tmp_path_factory.mktemp("python_api") / "lake"
    ids = write_samples(Lake(lake_path), "digits", labels, splits)
    conf = local_conf(lake_path)
    conf.neighbors.k = 5
    lake = brain.open_lake(lake_path, conf=conf, dataset="digits")
    returned = {"embeddings": lake.compute_embeddings(embeddings=vectors, sample_ids=ids),
                "knn": lake.compute_similarity(),
                "uniqueness": lake.compute_uniqueness(),
                "duplicates": lake.find_duplicates(thresh=0.01),
                "visualization": lake.compute_visualization(method="pca", brain_key="map")}
    return lake, ids, vectors, returned


def _cli(lake, *args: str) -> int:
    return brain_main([*args, "--set", f"lake={lake.lake.uri}", "--set", "dataset=digits"])


def test_each_compute_returns_its_runs_results(api_lake):
    lake, ids, vectors, returned = api_lake
    embeddings = returned["embeddings"]
    assert sorted(embeddings["sample_id"].to_pylist()) == ids
    assert np.allclose(np.stack(embeddings.sort_by("sample_id")["vector"].to_numpy(zero_copy_only=False)), vectors)
    assert sum(shard.ntotal for shard in returned["knn"]) == N + COPIES
    uniqueness = returned["uniqueness"]
    assert uniqueness.num_rows == N + COPIES and max(uniqueness["uniqueness"].to_pylist()) == pytest.approx(1.0)
    duplicates = returned["duplicates"].to_pylist()
    assert sorted((d["kept_sample_id"], d["sample_id"]) for d in duplicates) == \
        [(ids[i], ids[N + i]) for i in range(COPIES)]
    assert all(d["distance"] < 0.01 for d in duplicates)
    visualization = returned["visualization"]
    assert visualization.num_rows == N + COPIES and visualization["z"].null_count == N + COPIES
    assert lake.load_brain_results("map").sort_by("sample_id").equals(visualization.sort_by("sample_id"))


def test_the_cli_computes_the_same_results_on_the_same_lake(api_lake, capsys):
    lake, ids, _, returned = api_lake
    assert _cli(lake, "uniqueness", "--set", "uniqueness.brain_key=uniqueness_cli") == 0
    by_api = returned["uniqueness"].select(["sample_id", "uniqueness"]).sort_by("sample_id")
    by_cli = lake.load_brain_results("uniqueness_cli").select(["sample_id", "uniqueness"]).sort_by("sample_id")
    assert by_cli.equals(by_api)
    capsys.readouterr()
    assert _cli(lake, "similar", "--key", "knn", "--id", ids[7], "-k", "4", "--format", "json") == 0
    by_cli = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_api = lake.sort_by_similarity(ids[7], k=4).to_pylist()
    assert [r["sample_id"] for r in by_api] == [r["sample_id"] for r in by_cli] and ids[7] not in \
        [r["sample_id"] for r in by_api]
    assert lake.sql("SELECT count(*) AS n FROM uniqueness WHERE brain_key = 'uniqueness_cli'")["n"][0].as_py() == \
        N + COPIES


def test_sort_by_similarity_takes_ids_vectors_and_refuses_text_without_a_text_tower(api_lake):
    lake, ids, vectors, _ = api_lake
    nearest = lake.sort_by_similarity(vectors[3], k=2)["sample_id"].to_pylist()
    assert sorted(nearest) == sorted([ids[3], ids[N + 3]])  # the sample and its near copy
    far = lake.sort_by_similarity([ids[0], ids[1]], k=3, reverse=True)
    assert far.num_rows == 3 and not {ids[0], ids[1]} & set(far["sample_id"].to_pylist())
    with pytest.raises(ValueError, match="records no model"):  # a string that is no sample id is a text prompt
        lake.sort_by_similarity("a handwritten seven", k=3)


def test_the_run_catalog_verbs(api_lake):
    lake, ids, vectors, _ = api_lake
    assert {"embeddings", "knn", "uniqueness", "duplicates", "map"} <= set(lake.list_brain_runs())
    assert lake.list_brain_runs(method="neighbors") == ["knn"]
    info = lake.get_brain_info("uniqueness")
    assert info["method"] == "uniqueness" and info["input_key"] == "knn" and info["config"]["neighbors"]["k"] == 5
    assert lake.load_brain_view("knn")["sample_id"].to_pylist() == ids
    scratch = lake.compute_embeddings(embeddings=vectors[:3], sample_ids=ids[:3], brain_key="scratch")
    assert scratch["sample_id"].to_pylist() == ids[:3]
    lake.rename_brain_run("scratch", "scratch_old")
    assert "scratch_old" in lake.list_brain_runs() and "scratch" not in lake.list_brain_runs()
    lake.delete_brain_run("scratch_old")
    assert "scratch_old" not in lake.list_brain_runs()
    with pytest.raises(RunNotFoundError):
        lake.load_brain_results("scratch_old")


def test_keyword_arguments_are_config_fields(api_lake):
    lake, _, _, _ = api_lake
    with pytest.raises(ConfError, match="unknown argument 'neighbour_key'.*fields: brain_key, neighbors_key"):
        lake.compute_uniqueness(neighbour_key="knn")
    with pytest.raises(ConfError, match="neighbors.k"):
        lake.compute_similarity(k=0)
    with pytest.raises(ConfError, match="'nieghbors' is not a config section"):
        lake.compute_similarity(settings={"nieghbors.k": 3})


def test_registered_predictions_then_hardness(api_lake, tmp_path):
    lake, ids, _, _ = api_lake
    logits = np.random.default_rng(1).normal(0, 2, size=(len(ids), 10)).astype(np.float32)
    np.save(tmp_path / "logits.npy", logits)
    (tmp_path / "ids.txt").write_text("\n".join(ids))
    classes = [str(c) for c in range(10)]
    predictions = lake.register_predictions(tmp_path / "logits.npy", ids_file=str(tmp_path / "ids.txt"),
                                            classes=classes, brain_key="preds")
    assert predictions.classes == classes and predictions.rows.num_rows == len(ids)
    hardness = lake.compute_hardness(predictions_key="preds", brain_key="hard")  # brain_key: its hardness_key
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    entropy = dict(zip(ids, -(probabilities * np.log(probabilities)).sum(axis=1)))
    assert {row["brain_key"] for row in hardness.to_pylist()} == {"hard"}
    assert all(row["hardness"] == pytest.approx(entropy[row["sample_id"]], rel=1e-4) for row in hardness.to_pylist())
    assert lake.get_brain_info("hard")["input_key"] == "preds"
