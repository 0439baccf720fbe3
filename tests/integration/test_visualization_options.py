"""Visualization options: a subset to map (--where, FiftyOne's use_view) on Ray, and precomputed points
registered as a visualization run (FiftyOne's points=)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from tests.conftest import local_conf, write_embeddings_run

from brain import results, runs
from jobs.cli import main as brain_main
from brain.lake import Lake

pytestmark = pytest.mark.integration


@pytest.fixture
def embedded(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 1.0, size=(30, 8)) for c in (-3, 0, 3)])
    lake = Lake(tmp_path / "lake")
    ids = write_embeddings_run(lake, "pets", "embeddings", x, labels=["a", "b", "c"] * 30,
                               splits=["train", "test", "train"] * 30)
    conf = local_conf(lake.uri)
    conf_file = tmp_path / "conf.yaml"
    conf_file.write_text(yaml.safe_dump(conf.model_dump()))
    return lake, conf, ids, str(conf_file)


def test_where_maps_only_the_matching_samples(embedded, ray_session):
    from jobs import visualization

    lake, conf, ids, _ = embedded
    conf.visualization = conf.visualization.model_copy(update=dict(method="pca", where="split = 'test'", shards=2))
    visualization.run(conf)
    points = results.load_results(lake, "visualization")
    test_ids = sorted(i for i, s in zip(ids, ["train", "test", "train"] * 30) if s == "test")
    assert sorted(points["sample_id"].to_pylist()) == test_ids
    assert sorted(runs.load_view(lake, "visualization")["sample_id"].to_pylist()) == test_ids
    conf.visualization.where = "split = 'validation'"
    with pytest.raises(ValueError, match="no sample of 'embeddings' matches"):
        visualization.run(conf)


def test_precomputed_points_become_a_visualization_run(embedded, tmp_path, capsys):
    lake, _, ids, conf_file = embedded
    coords = np.random.default_rng(1).normal(size=(len(ids), 2))
    np.save(tmp_path / "points.npy", coords)
    (tmp_path / "ids.txt").write_text("\n".join(ids))
    assert brain_main(["visualize", "--conf", conf_file, "--set", "dataset=pets", "--set",
                       "visualization.brain_key=mine", "--points", str(tmp_path / "points.npy"),
                       "--points-ids", str(tmp_path / "ids.txt")]) == 0
    rows = results.load_results(lake, "mine").sort_by("sample_id")
    np.testing.assert_allclose(np.c_[rows["x"].to_numpy(), rows["y"].to_numpy()], coords[np.argsort(ids)])
    assert rows["z"].null_count == len(ids)
    # 3-D from Parquet, by sample id
    pq.write_table(pa.table({"sample_id": ids[:5], "points": [[1.0, 2.0, 3.0]] * 5}), tmp_path / "p3.parquet")
    assert brain_main(["visualize", "--conf", conf_file, "--set", "dataset=pets", "--set",
                       "visualization.brain_key=three", "--points", str(tmp_path / "p3.parquet")]) == 0
    assert results.load_results(lake, "three")["z"].to_pylist() == [3.0] * 5
    # bad input names the sample or the shape
    np.save(tmp_path / "wide.npy", np.zeros((len(ids), 4)))
    assert brain_main(["visualize", "--conf", conf_file, "--set", "dataset=pets", "--points",
                       str(tmp_path / "wide.npy"), "--points-ids", str(tmp_path / "ids.txt")]) == 2
    assert "2 or 3 coordinates" in capsys.readouterr().err
    pq.write_table(pa.table({"sample_id": ["stranger"], "points": [[1.0, 2.0]]}), tmp_path / "x.parquet")
    assert brain_main(["visualize", "--conf", conf_file, "--set", "dataset=pets", "--points",
                       str(tmp_path / "x.parquet")]) == 2
    assert "sample stranger: not a sample of dataset 'pets'" in capsys.readouterr().err
