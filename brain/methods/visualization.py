"""Low-dimensional maps of embeddings: UMAP, t-SNE or PCA to 2 or 3 dimensions.

* ``umap`` (default): a fuzzy k-nearest-neighbour graph (``n_neighbors=15``, or
  ``N - 1`` when smaller) laid out so that nearby points stay nearby;
  ``min_dist=0.1`` sets how tightly points may pack. Fitted maps can place new
  rows (``transform``). A seeded UMAP runs single-threaded.
* ``tsne``: Barnes-Hut t-SNE (``perplexity`` 30, or ``(N - 1) / 3`` when that is
  smaller), after a PCA to 50 dimensions when ``D > 50``. It has no
  ``transform``: it can only place the rows it was fit on.
* ``pca``: the ``num_dims`` leading principal components (linear, exact).

At lake scale, :func:`compute_visualization_sampled` fits on a random sample of
``max_fit_samples`` rows and places every other row with the fitted map's
``transform``. t-SNE cannot do that, so it raises above ``max_fit_samples``.

UMAP import and compile cost: umap is imported lazily (importing it takes tens
of seconds). Before the first import, ``NUMBA_CACHE_DIR`` is set, unless
already set, to ``$XDG_CACHE_HOME/lakebrain/numba`` (default
``~/.cache/lakebrain/numba``), and numba's on-disk caching is switched on for
every module-level jitted function of umap and pynndescent (umap declares
almost none of them ``cache=True``), so later processes load compiled code
instead of recompiling it: a small fit drops from ~15 s to ~1 s. numba
invalidates the cache when the library's source files change. If numba was
imported before with no ``NUMBA_CACHE_DIR``, numba's own default location is used.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

__all__ = ["compute_visualization", "compute_visualization_sampled", "fit_map", "import_umap", "numba_cache_dir"]

Method = Literal["umap", "tsne", "pca"]
_TSNE_PCA_DIMS = 50


def compute_visualization(
    vectors: np.ndarray,
    *,
    method: Method = "umap",
    num_dims: Literal[2, 3] = 2,
    seed: int = 0,
    **params: Any,
) -> np.ndarray:
    """Coordinates (N, ``num_dims``) of ``vectors`` (N, D) by ``method``.

    ``params`` go to ``umap.UMAP``, ``sklearn.manifold.TSNE`` or
    ``sklearn.decomposition.PCA``. Runs are deterministic for a given ``seed``
    (UMAP then runs single-threaded).
    """
    x = _check(vectors, method, num_dims)
    if method == "tsne":
        return _tsne(x, num_dims, seed, params)
    return fit_map(x, method, num_dims, seed, params)[1]


def compute_visualization_sampled(
    vectors: np.ndarray,
    *,
    max_fit_samples: int = 100_000,
    method: Method = "umap",
    num_dims: Literal[2, 3] = 2,
    seed: int = 0,
    **params: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit the map on at most ``max_fit_samples`` random rows, then place the rest.

    Returns ``(coordinates (N, num_dims), in_fit (N,) bool)``: which rows the map
    was fit on (all of them when ``N <= max_fit_samples``). Fit rows keep their
    fitted coordinates; the others come from ``transform``. ``method="tsne"``
    has no ``transform`` and raises ``ValueError`` when ``N > max_fit_samples``.
    """
    x = _check(vectors, method, num_dims)
    if not isinstance(max_fit_samples, (int, np.integer)) or max_fit_samples < num_dims + 2:
        raise ValueError(f"max_fit_samples must be an integer >= {num_dims + 2}, got {max_fit_samples!r}")
    in_fit = np.zeros(x.shape[0], dtype=bool)
    if x.shape[0] <= max_fit_samples:
        in_fit[:] = True
        return compute_visualization(x, method=method, num_dims=num_dims, seed=seed, **params), in_fit
    if method == "tsne":
        raise ValueError(
            f"method='tsne' cannot place rows it was not fit on, and vectors has {x.shape[0]} rows "
            f"> max_fit_samples={max_fit_samples}; use method='umap' or 'pca', or raise max_fit_samples"
        )
    in_fit[np.random.default_rng(seed).choice(x.shape[0], size=max_fit_samples, replace=False)] = True
    model, fitted = fit_map(x[in_fit], method, num_dims, seed, params)
    coords = np.empty((x.shape[0], num_dims))
    coords[in_fit] = fitted
    coords[~in_fit] = model.transform(x[~in_fit])
    return coords, in_fit


def numba_cache_dir() -> Path:
    """Where numba caches compiled umap code unless ``NUMBA_CACHE_DIR`` says otherwise."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lakebrain" / "numba"


def fit_map(
    x: np.ndarray, method: Method, num_dims: int, seed: int, params: dict[str, Any]
) -> tuple[Any, np.ndarray]:
    """A fitted UMAP or PCA (its ``transform`` places new rows) and the coordinates of ``x``.

    t-SNE has no ``transform``: use :func:`compute_visualization` for it.
    """
    if method == "tsne":
        raise ValueError("method='tsne' has no transform; use compute_visualization")
    x = _check(x, method, num_dims)
    if method == "pca":
        model = PCA(n_components=num_dims, random_state=seed, **params)
        return model, model.fit_transform(x)
    umap = import_umap()
    options = {"n_neighbors": min(15, x.shape[0] - 1), "min_dist": 0.1, "n_jobs": 1, **params}
    model = umap.UMAP(n_components=num_dims, random_state=seed, **options)
    return model, np.asarray(model.fit_transform(x), dtype=np.float64)


def _tsne(x: np.ndarray, num_dims: int, seed: int, params: dict[str, Any]) -> np.ndarray:
    if x.shape[1] > _TSNE_PCA_DIMS:
        x = PCA(n_components=min(_TSNE_PCA_DIMS, x.shape[0]), random_state=seed).fit_transform(x)
    options = {"perplexity": min(30.0, (x.shape[0] - 1) / 3), "init": "pca", "n_jobs": 1, **params}
    return TSNE(n_components=num_dims, random_state=seed, **options).fit_transform(x).astype(np.float64)


@functools.cache
def import_umap() -> ModuleType:
    """Import umap with numba's on-disk cache on for its jitted functions (module docstring)."""
    os.environ.setdefault("NUMBA_CACHE_DIR", str(numba_cache_dir()))
    import umap
    from numba.core.dispatcher import Dispatcher

    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in ("umap", "pynndescent"):
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, Dispatcher):
                try:
                    obj.enable_caching()
                except RuntimeError:  # numba found no cache locator for this function
                    continue
    return umap


def _check(vectors: np.ndarray, method: str, num_dims: int) -> np.ndarray:
    if method not in ("umap", "tsne", "pca"):
        raise ValueError(f"method must be 'umap', 'tsne' or 'pca', got {method!r}")
    if num_dims not in (2, 3):
        raise ValueError(f"num_dims must be 2 or 3, got {num_dims!r}")
    x = np.asarray(vectors)
    if x.ndim != 2:
        raise ValueError(f"vectors must be 2-D (rows, features), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"vectors must be numeric, got dtype {x.dtype}")
    if x.shape[0] < num_dims + 2:
        raise ValueError(f"vectors has {x.shape[0]} rows; {method} to {num_dims} dims needs at least {num_dims + 2}")
    if x.shape[1] < num_dims:
        raise ValueError(f"vectors has {x.shape[1]} features, fewer than num_dims={num_dims}")
    x = x.astype(np.float64, copy=False)
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise ValueError(f"vectors has NaN or infinite values in rows {bad[:10].tolist()}")
    return x
