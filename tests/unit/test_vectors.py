"""Vector sets (brain.vectors) and plot column specs (brain.lake_plots) on a real Delta lake, no engine."""

from __future__ import annotations

import numpy as np
import pytest
from tests.conftest import write_embeddings_run

from brain import lake_plots, runs, vectors


@pytest.fixture
def two_runs(lake):
    rng = np.random.default_rng(0)
    write_embeddings_run(lake, "digits", "embeddings", rng.normal(size=(20, 4)), ["a", "b"] * 10,
                         ["train"] * 15 + ["test"] * 5)
    write_embeddings_run(lake, "other", "other_emb", rng.normal(size=(6, 4)), [None] * 6, [None] * 6)
    with runs.track(lake, brain_key="knn", method="neighbors", dataset="digits", config={}):
        pass
    return lake


def test_resolve_by_key_dataset_and_split(two_runs):
    lake = two_runs
    by_key, by_dataset = vectors.resolve(lake, "embeddings@test"), vectors.resolve(lake, "digits@test")
    assert by_key.run_id == by_dataset.run_id and by_key.split == "test" and by_key.dataset == "digits"
    rows = vectors.members(lake, by_key)
    assert rows.num_rows == 5 and set(rows["split"].to_pylist()) == {"test"}
    assert vectors.members(lake, vectors.resolve(lake, "other_emb"))["label"].null_count == 6
    chosen = vectors.sample(vectors.members(lake, vectors.resolve(lake, "embeddings")), 7, seed=1)
    assert chosen.num_rows == 7 and chosen["sample_id"].to_pylist() == sorted(chosen["sample_id"].to_pylist())
    x = vectors.read_vectors(lake, by_key.run_id, chosen["sample_id"].to_pylist()[::-1])
    first = vectors.read_vectors(lake, by_key.run_id, [chosen["sample_id"][-1].as_py()])
    assert x.shape == (7, 4) and np.array_equal(x[0], first[0])


def test_resolve_errors(two_runs):
    lake = two_runs
    with pytest.raises(ValueError, match=r"'knn' is the brain key of a neighbors run, not of an embeddings run"):
        vectors.resolve(lake, "knn")
    with pytest.raises(ValueError, match=r"'nope' is neither an embeddings brain key \['embeddings', 'other_emb'\] "
                                         r"nor an embedded dataset \['digits', 'other'\]"):
        vectors.resolve(lake, "nope")
    with pytest.raises(ValueError, match=r"no samples of split 'val' .* its splits: \['test', 'train'\]"):
        vectors.members(lake, vectors.resolve(lake, "embeddings@val"))
    run_id = vectors.resolve(lake, "embeddings").run_id
    with pytest.raises(ValueError, match="has no vector for sample missing-1"):
        vectors.read_vectors(lake, run_id, ["missing-1"])


def test_plot_column_specs(two_runs):
    lake = two_runs
    with pytest.raises(ValueError, match=r"column 'colour' is neither a samples column"):
        lake_plots._column(lake, "colour", 0)
    with pytest.raises(ValueError, match=r"table 'uniqueness' has no value column 'nope'"):
        lake_plots._column(lake, "uniqueness.nope", 0)
    with pytest.raises(runs.RunNotFoundError, match="no succeeded run with key 'familiarity'"):
        lake_plots._column(lake, "familiarity", 0)  # column defaults to `score`, the key to the table's name
    with pytest.raises(ValueError, match="is a neighbors run, not a visualization run"):
        lake_plots.map_table(lake, "knn")


def test_patch_ids_round_trip_and_a_plain_sample_id_is_refused_by_name():
    import pyarrow as pa

    ids = vectors.patch_ids(pa.array(["a1", "b#2"]), pa.array([0, 11], pa.int32()))
    assert ids.to_pylist() == ["a1#0", "b#2#11"]
    sample_ids, index = vectors.split_patch_ids(ids)
    assert sample_ids.to_pylist() == ["a1", "b#2"] and index.to_pylist() == [0, 11]
    with pytest.raises(ValueError, match="'a1' is not a patch id SAMPLE_ID#PATCH_INDEX"):
        vectors.split_patch_ids(["b#1", "a1"])
