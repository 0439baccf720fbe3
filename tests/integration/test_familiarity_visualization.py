"""Familiarity (Spark), dataset comparison, visualization (Ray) and `brain plot` on real engines and Delta tables.

The lake holds 300 of scikit-learn's digits (64 pixel values as the embedding vector, real labels,
a train/test split) and the same digits rotated by 90 degrees as a second dataset.
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pyarrow.compute as pc
import pytest
from PIL import Image
from tests.conftest import local_conf, write_embeddings_run

from brain import runs, sql, vectors
from jobs.cli import main as brain_main
from brain.lake import Lake
from brain.methods.familiarity import FamiliarityModel

pytestmark = pytest.mark.integration

N = 300


@pytest.fixture(scope="module")
def digits_lake(tmp_path_factory):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images[:N], [str(t) for t in digits.target[:N]]
    splits = np.where(np.arange(N) % 5 == 0, "test", "train").tolist()
    lake = Lake(tmp_path_factory.mktemp("familiarity") / "lake")
    write_embeddings_run(lake, "digits", "embeddings", images.reshape(N, -1), labels, splits)
    rotated = np.rot90(images, axes=(1, 2)).reshape(N, -1)
    write_embeddings_run(lake, "rotated", "rotated", rotated, labels, ["test"] * N)
    conf = local_conf(lake.uri)
    conf.dataset = "digits"
    conf.familiarity.reduced_dims = 10
    conf.familiarity.gaussian_count = 2
    return lake, conf


def _cli(lake: Lake, *args: str) -> int:
    return brain_main([*args, "--set", f"lake={lake.uri}"])


@pytest.fixture(scope="module")
def familiarity_run(digits_lake, spark):
    from jobs import familiarity

    lake, conf = digits_lake
    conf = conf.model_copy(deep=True)
    conf.familiarity.fit_split = "train"
    conf.familiarity.extremes_count = 3
    return familiarity.run(conf)


def test_familiarity_scores_every_sample_with_the_saved_model(digits_lake, familiarity_run):
    lake, _ = digits_lake
    table = lake.read("familiarity").sort_by("sample_id")
    assert table.num_rows == N and set(table["run_id"].to_pylist()) == {familiarity_run}
    assert table["sample_id"].to_pylist() == sorted(f"digits-{i:04d}" for i in range(N))
    run = runs.get_run(lake, "familiarity")
    assert run["status"] == "succeeded" and dict(run["metrics"])["fit_samples"] == N - N // 5  # the train split
    model = FamiliarityModel.load(io.BytesIO(lake.read_artifact(familiarity_run, "familiarity.npz")))
    ids = table["sample_id"].combine_chunks()
    x = vectors.read_vectors(lake, runs.latest_succeeded(lake, "embeddings")["run_id"], ids)
    np.testing.assert_allclose(table["score"].to_numpy(), model.score(x), rtol=1e-12)
    percentile = table["percentile"].to_numpy()
    assert percentile.min() >= 0 and percentile.max() == pytest.approx(100.0)


def test_familiarity_extremes_per_label(digits_lake, familiarity_run):
    lake, _ = digits_lake
    ends = sql.query(lake, "SELECT e.label, e.which_end, e.rank, e.score, e.sample_id, f.score AS f_score "
                           "FROM familiarity_extremes e JOIN familiarity f USING (run_id, sample_id) "
                           "ORDER BY label, which_end, rank").to_pylist()
    assert len(ends) == 10 * 2 * 3
    assert all(e["score"] == e["f_score"] for e in ends)
    by_label = sql.query(lake, "SELECT s.label, min(f.score) AS lo, max(f.score) AS hi FROM familiarity f "
                               "JOIN samples s USING (sample_id) GROUP BY s.label").to_pylist()
    for row in by_label:
        first = {e["which_end"]: e["score"] for e in ends if e["label"] == row["label"] and e["rank"] == 0}
        assert first == {"most": row["lo"], "least": row["hi"]}


def test_comparison_verdicts(digits_lake, capsys):
    lake, _ = digits_lake
    flags = ["--set", "familiarity.reduced_dims=10", "--set", "familiarity.gaussian_count=2"]
    assert _cli(lake, "compare", "--fit", "embeddings@train", "--predict", "rotated", *flags) == 0
    out = capsys.readouterr().out
    ratio = dict(runs.get_run(lake, "comparison")["metrics"])["ratio"]
    assert ratio < 0.6 and f"{ratio:.3f}: huge gap" in out
    rows = sql.query(lake, "SELECT label, ratio, verdict FROM familiarity_comparison").to_pylist()
    assert len(rows) == 11 and {r["label"] for r in rows} == {None, *map(str, range(10))}
    assert [r["verdict"] for r in rows if r["label"] is None] == ["huge gap"]

    assert _cli(lake, "compare", "--fit", "digits@train", "--predict", "embeddings@test", *flags) == 0
    ratio = dict(runs.get_run(lake, "comparison")["metrics"])["ratio"]
    assert 0.8 <= ratio <= 1.2, ratio
    assert sql.query(lake, "SELECT count(DISTINCT run_id) AS n FROM familiarity_comparison")["n"][0].as_py() == 1


def _plotly_traces(html: str) -> list[dict]:
    start = html.index("Plotly.newPlot(")
    body = html[start + len("Plotly.newPlot("):]
    body = body[body.index(",") + 1:].lstrip()
    traces, _ = json.JSONDecoder().raw_decode(body)
    return traces


def test_visualization_and_plot(digits_lake, ray_session, familiarity_run, tmp_path):
    lake, _ = digits_lake
    assert _cli(lake, "visualize", "--set", "visualization.method=pca",
                "--set", "visualization.max_fit_samples=100") == 0
    coords = lake.read("visualization")
    assert coords.num_rows == N and coords["z"].null_count == N
    assert np.isfinite(coords["x"].to_numpy()).all() and np.isfinite(coords["y"].to_numpy()).all()
    metrics = dict(runs.get_run(lake, "visualization")["metrics"])
    assert metrics["fit_samples"] == 100 and metrics["projected"] == N - 100

    out = tmp_path / "map.html"
    highlight = "SELECT sample_id FROM familiarity_extremes WHERE which_end = 'least'"
    assert _cli(lake, "plot", "visualization", "--color-by", "label", "--size-by", "familiarity.percentile",
                "--out", str(out), "--highlight-sql", highlight) == 0
    traces = _plotly_traces(out.read_text())
    points = [t for t in traces if t["name"] != "highlighted"]
    assert [t["name"] for t in points] == [str(d) for d in range(10)]
    assert sum(len(t["text"]) for t in points) == N
    assert [len(t["text"]) for t in traces if t["name"] == "highlighted"] == [30]
    png = Image.open(out.with_suffix(".png"))
    assert png.size == (1000, 800) and len(np.unique(np.asarray(png.convert("L")))) > 10


def test_visualization_3d(digits_lake, ray_session):
    from jobs import visualization

    lake, conf = digits_lake
    conf = conf.model_copy(deep=True)
    conf.visualization.method, conf.visualization.num_dims, conf.visualization.brain_key = "pca", 3, "map3d"
    run_id = visualization.run(conf)
    coords = lake.read("visualization", filter=pc.field("run_id") == run_id)
    assert coords.num_rows == N and coords["z"].null_count == 0


def test_unknown_key_is_a_clear_error(digits_lake, capsys):
    lake, _ = digits_lake
    assert _cli(lake, "familiarity", "--set", "familiarity.embeddings_key=nope") == 2
    err = capsys.readouterr().err
    assert "'nope' is neither an embeddings brain key ['embeddings', 'rotated']" in err
    assert _cli(lake, "plot", "nope") == 2
    assert "no succeeded run with key 'nope'" in capsys.readouterr().err


def test_too_few_samples_for_gaussian_count(digits_lake):
    from jobs import familiarity

    lake, conf = digits_lake
    conf = conf.model_copy(deep=True)
    conf.familiarity.per, conf.familiarity.gaussian_count, conf.familiarity.brain_key = "label", 40, "few"
    with pytest.raises(ValueError, match=r"vectors of class '0': vectors has \d+ rows, fewer than gaussian_count=40"):
        familiarity.run(conf)
    assert runs.get_run(lake, "few")["status"] == "failed"


def test_nan_vector_names_the_sample(tmp_path):
    from jobs import familiarity

    lake = Lake(tmp_path / "lake")
    x = np.random.default_rng(0).normal(size=(40, 8))
    x[17, 3] = np.nan
    write_embeddings_run(lake, "pets", "embeddings", x, ["a"] * 40, ["train"] * 40)
    conf = local_conf(lake.uri)
    with pytest.raises(ValueError, match="sample pets-0017 has NaN or infinite values in its vector"):
        familiarity.run(conf)
    assert runs.get_run(lake, "familiarity")["status"] == "failed"
    assert not lake.exists("familiarity") or lake.read("familiarity").num_rows == 0
    assert re.search("NaN", runs.get_run(lake, "familiarity")["error"])


def test_umap_fit_on_a_sample_places_the_rest_by_class(digits_lake, ray_session):
    """The fitted UMAP travels to Ray tasks and places unseen digits next to fitted digits of their class."""
    from jobs import visualization

    lake, conf = digits_lake
    conf = conf.model_copy(deep=True)
    conf.visualization.method, conf.visualization.max_fit_samples, conf.visualization.brain_key = "umap", 150, "umap"
    run_id = visualization.run(conf)
    assert dict(runs.get_run(lake, "umap")["metrics"])["projected"] == N - 150
    rows = sql.query(lake, f"SELECT v.x, v.y, s.label FROM visualization v JOIN samples s USING (sample_id) "
                           f"WHERE v.run_id = '{run_id}' ORDER BY sample_id")
    xy = np.column_stack([rows["x"].to_numpy(), rows["y"].to_numpy()])
    labels = np.asarray(rows["label"].to_pylist())
    assert xy.shape == (N, 2) and np.isfinite(xy).all()
    # leave-one-out 1-NN label agreement in the map: digits classes stay together
    distance = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.diag(np.full(N, np.inf))
    assert (labels[distance.argmin(axis=1)] == labels).mean() > 0.8
