"""Maps (PCA, t-SNE, UMAP) and the HTML / PNG scatter plots."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.decomposition import PCA

from brain import plots
from brain.methods import visualization as vis


def _clusters(n_per: int, dims: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, size=(3, dims))
    labels = np.repeat(np.arange(3), n_per)
    return centers[labels] + rng.normal(size=(3 * n_per, dims)), labels


def _nearest_centroid_accuracy(coords: np.ndarray, labels: np.ndarray, reference: np.ndarray) -> float:
    """Assign each row to the closest class centroid (centroids from the ``reference`` rows)."""
    centroids = np.stack([coords[reference & (labels == c)].mean(axis=0) for c in np.unique(labels)])
    guess = np.argmin(((coords[:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)
    return float(np.mean(guess == labels))


def _one_nn_accuracy(coords: np.ndarray, labels: np.ndarray) -> float:
    d = ((coords[:, None, :] - coords[None]) ** 2).sum(axis=2)
    np.fill_diagonal(d, np.inf)
    return float(np.mean(labels[np.argmin(d, axis=1)] == labels))


def _plotly_traces(path: Path) -> list[dict]:
    """The ``data`` argument of the page's ``Plotly.newPlot`` call."""
    html = path.read_text()
    decoder = json.JSONDecoder()
    at = html.index("Plotly.newPlot(") + len("Plotly.newPlot(")
    _, at = decoder.raw_decode(html, len(html[:at]) + len(html[at:]) - len(html[at:].lstrip()))
    at = html.index("[", at)
    traces, _ = decoder.raw_decode(html, at)
    return traces


def _values(field) -> np.ndarray:
    """A plotly array: a plain list, or a typed array {"dtype", "bdata"}."""
    if isinstance(field, dict):
        return np.frombuffer(base64.b64decode(field["bdata"]), dtype=np.dtype(field["dtype"]))
    return np.asarray(field)


def _check_png(path: Path, size: tuple[int, int]) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == size
        pixels = np.asarray(image.convert("RGB"))
    non_white = np.any(pixels < 240, axis=2).mean()
    assert 0.01 < non_white < 0.9  # something drawn, not a filled canvas
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


# -- maps -----------------------------------------------------------------------
@pytest.mark.parametrize("num_dims", [2, 3])
def test_pca_map_is_the_leading_components(num_dims):
    x, _ = _clusters(50, 8)
    coords = vis.compute_visualization(x, method="pca", num_dims=num_dims)
    assert coords.shape == (150, num_dims)
    np.testing.assert_allclose(np.abs(coords), np.abs(PCA(num_dims).fit_transform(x)), atol=1e-9)


@pytest.mark.parametrize(("num_dims", "n_per", "params"), [(2, 100, {"max_iter": 500}), (3, 60, {})])
def test_tsne_map_keeps_clusters_apart(num_dims, n_per, params):
    x, labels = _clusters(n_per, 60)  # D > 50: reduced by PCA first
    coords = vis.compute_visualization(x, method="tsne", num_dims=num_dims, seed=1, **params)
    assert coords.shape == (3 * n_per, num_dims) and coords.dtype == np.float64
    assert _one_nn_accuracy(coords, labels) > 0.97


def test_umap_fit_on_a_sample_places_the_other_rows():
    x, labels = _clusters(100, 10)
    coords, in_fit = vis.compute_visualization_sampled(x, max_fit_samples=150, method="umap", seed=0)
    assert coords.shape == (300, 2) and in_fit.dtype == bool and in_fit.sum() == 150
    assert np.isfinite(coords).all()
    # rows placed by transform land in their own class's region of the fitted map
    assert _nearest_centroid_accuracy(coords, labels, in_fit) == 1.0
    assert _one_nn_accuracy(coords[in_fit], labels[in_fit]) > 0.97
    assert os.environ["NUMBA_CACHE_DIR"]  # set before umap was imported, unless already set


def test_umap_three_dims_small_and_seeded():
    x, labels = _clusters(40, 5)
    coords = vis.compute_visualization(x, num_dims=3, n_neighbors=10, seed=5)
    assert coords.shape == (120, 3)
    assert _one_nn_accuracy(coords, labels) > 0.97
    np.testing.assert_array_equal(coords, vis.compute_visualization(x, num_dims=3, n_neighbors=10, seed=5))


def test_sampled_pca_projects_every_row_with_the_sample_fit():
    x, _ = _clusters(200, 6)
    coords, in_fit = vis.compute_visualization_sampled(x, max_fit_samples=100, method="pca", seed=3)
    assert in_fit.sum() == 100
    expected = PCA(2, random_state=3).fit(x[in_fit]).transform(x)
    np.testing.assert_allclose(coords, expected, atol=1e-9)
    # under the limit: every row is in the fit
    coords, in_fit = vis.compute_visualization_sampled(x, max_fit_samples=600, method="pca")
    assert in_fit.all()
    np.testing.assert_allclose(coords, vis.compute_visualization(x, method="pca"))


def test_sampled_tsne_refuses_rows_outside_its_fit():
    x, _ = _clusters(40, 5)
    with pytest.raises(ValueError, match="tsne' cannot place rows it was not fit on"):
        vis.compute_visualization_sampled(x, max_fit_samples=100, method="tsne")


def test_map_bad_inputs_name_the_field():
    x, _ = _clusters(10, 4)
    with pytest.raises(ValueError, match="method must be"):
        vis.compute_visualization(x, method="mds")
    with pytest.raises(ValueError, match="num_dims must be 2 or 3"):
        vis.compute_visualization(x, method="pca", num_dims=4)
    with pytest.raises(ValueError, match="vectors must be 2-D"):
        vis.compute_visualization(x[0], method="pca")
    with pytest.raises(ValueError, match=r"NaN or infinite values in rows \[2\]"):
        vis.compute_visualization(np.where(np.arange(30)[:, None] == 2, np.inf, x), method="pca")
    with pytest.raises(ValueError, match="vectors has 3 rows"):
        vis.compute_visualization(x[:3], method="pca")
    with pytest.raises(ValueError, match="max_fit_samples"):
        vis.compute_visualization_sampled(x, max_fit_samples=0, method="pca")


# -- plots ----------------------------------------------------------------------
def test_html_and_png_2d_categorical_sized_and_highlighted(tmp_path):
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(120, 2))
    ids = [f"sample-{i}" for i in range(120)]
    columns = {"label": np.repeat(["cat", "dog", "fish"], 40), "uniqueness": rng.random(120)}
    html, png = plots.write_scatter(
        coords, ids, html_path=tmp_path / "map.html", png_path=tmp_path / "map.png",
        columns=columns, color_by="label", size_by="uniqueness", highlight=[0, 50, 119], title="Map",
    )  # fmt: skip
    assert (html, png) == (tmp_path / "map.html", tmp_path / "map.png")
    page = html.read_text()
    assert "<script src=" not in page and len(page) > 1_000_000  # plotly.js is inline
    traces = _plotly_traces(html)
    assert [t["name"] for t in traces] == ["cat", "dog", "fish", "highlighted"]
    assert {t["type"] for t in traces} == {"scatter"}
    assert [len(_values(t["x"])) for t in traces] == [40, 40, 40, 3]
    shown = np.concatenate([_values(t["x"]) for t in traces[:3]])
    np.testing.assert_array_equal(np.sort(shown), np.sort(coords[:, 0]))
    assert sorted(sum((list(t["text"]) for t in traces[:3]), [])) == sorted(ids)
    assert list(traces[3]["text"]) == ["sample-0", "sample-50", "sample-119"]
    sizes = np.concatenate([_values(t["marker"]["size"]) for t in traces[:3]])
    assert sizes.min() == pytest.approx(4.0) and sizes.max() == pytest.approx(16.0)
    assert "uniqueness: %{customdata[1]:.4g}" in traces[0]["hovertemplate"]
    _check_png(png, (1000, 800))


def test_html_and_png_3d_continuous(tmp_path):
    rng = np.random.default_rng(1)
    coords = rng.normal(size=(80, 3))
    score = rng.random(80)
    score[5] = np.nan
    html, png = plots.write_scatter(
        coords, np.arange(80), html_path=tmp_path / "a" / "map3d.html", png_path=tmp_path / "map3d.png",
        columns={"mistakenness": score}, color_by="mistakenness", highlight=np.array([4, 9]), png_size=(600, 500),
    )  # fmt: skip
    traces = _plotly_traces(html)
    assert [t["type"] for t in traces] == ["scatter3d", "scatter3d"]
    np.testing.assert_array_equal(_values(traces[1]["z"]), coords[[4, 9], 2])
    assert len(_values(traces[0]["z"])) == 80
    assert traces[0]["marker"]["showscale"] is True
    colors = _values(traces[0]["marker"]["color"]) if isinstance(traces[0]["marker"]["color"], dict) else np.array(
        traces[0]["marker"]["color"], dtype=float)
    np.testing.assert_allclose(colors, score)
    _check_png(png, (600, 500))


def test_visualize_unique_overlays_the_subset(tmp_path):
    rng = np.random.default_rng(2)
    coords = rng.normal(size=(60, 2))
    unique = [3, 7, 7, 21]
    html, png = plots.visualize_unique(
        coords, [f"id{i}" for i in range(60)], unique, html_path=tmp_path / "u.html", png_path=tmp_path / "u.png"
    )
    traces = _plotly_traces(html)
    assert [t["name"] for t in traces] == ["", "unique"]
    assert len(_values(traces[0]["x"])) == 60
    np.testing.assert_array_equal(_values(traces[1]["x"]), coords[[3, 7, 21], 0])
    assert traces[1]["marker"]["symbol"] == "circle-open"
    _check_png(png, (1000, 800))


def test_many_categories_and_many_points(tmp_path):
    coords = np.random.default_rng(3).normal(size=(20_001, 2))
    labels = np.arange(20_001) % 100
    (html,) = plots.write_scatter(coords, np.arange(20_001), html_path=tmp_path / "big.html",
                                  columns={"label": labels}, color_by="label")  # fmt: skip
    traces = _plotly_traces(html)
    assert len(traces) == 1 and traces[0]["type"] == "scattergl"  # WebGL, no 100-entry legend
    assert len(_values(traces[0]["x"])) == 20_001
    assert len(set(traces[0]["marker"]["color"])) == len(plots.PALETTE)


def test_plot_bad_inputs_name_the_field(tmp_path):
    coords = np.zeros((5, 2))
    ids = list("abcde")
    with pytest.raises(ValueError, match="html_path, png_path"):
        plots.write_scatter(coords, ids)
    with pytest.raises(ValueError, match=r"coords must have shape \(N, 2\) or \(N, 3\)"):
        plots.write_scatter(np.zeros((5, 4)), ids, html_path=tmp_path / "x.html")
    with pytest.raises(ValueError, match="ids must hold 5 values"):
        plots.write_scatter(coords, ids[:4], html_path=tmp_path / "x.html")
    with pytest.raises(ValueError, match=r"color_by='label' is not in columns \['split'\]"):
        plots.write_scatter(coords, ids, html_path=tmp_path / "x.html", columns={"split": ["a"] * 5}, color_by="label")
    with pytest.raises(ValueError, match=r"columns\['split'\] must hold 5 values"):
        plots.write_scatter(coords, ids, html_path=tmp_path / "x.html", columns={"split": ["a"] * 4})
    with pytest.raises(ValueError, match="size_by column 'split' must be numeric"):
        plots.write_scatter(coords, ids, html_path=tmp_path / "x.html", columns={"split": ["a"] * 5}, size_by="split")
    with pytest.raises(ValueError, match=r"highlight indices must be in \[0, 5\)"):
        plots.visualize_unique(coords, ids, [5], html_path=tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()
