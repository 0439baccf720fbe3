"""Familiarity: how typical a sample is of a reference set of embeddings.

A density model ``p`` is fit on a reference set ``Df`` (optionally one model per
class). The **familiarity score** of a sample ``x`` is its negative
log-likelihood under that model, in nats::

    score(x) = -log p(x)

**Direction: a higher score means a LESS familiar sample** (lower density). The
scores are comparable only between samples scored by the same model.

Default density (:class:`PcaGmmDensity`, after DeepView's introspector): the
vectors are reduced by PCA to ``d = min(reduced_dims, n_samples, n_features)``
dimensions and a Gaussian mixture with ``K = gaussian_count`` components is fit
by EM (scikit-learn)::

    z = W (x - mu)                                  (PCA, W: d x D)
    p(z) = sum_k pi_k N(z; m_k, S_k)
    -log p(z) = -logsumexp_k [log pi_k - d/2 log(2 pi) + log|L_k|
                              - 1/2 ||L_k^T (z - m_k)||^2]

where ``L_k`` is the Cholesky factor of the precision ``S_k^-1``. The density
lives in the PCA subspace: variation orthogonal to the ``d`` kept directions is
not scored. Scores are computed here with NumPy from the learned arrays, so a
model reloaded with :meth:`FamiliarityModel.load` (an ``.npz`` of arrays plus a
JSON header, no pickle) scores bit-for-bit like the original. Any object with
``fit`` and ``score`` (the :class:`DensityStrategy` protocol) can replace it; to be
saved (and so used by the familiarity job, whose Spark workers reload the model) it
also needs ``save(file)`` writing its fitted state to a binary file object and a
classmethod ``load(file)`` reading it back: the model file then holds the class's
import path and those bytes, never a pickle.

**Dataset comparison.** ``L(f->p) = F(Df, Dp) / F(Df, Df)``. A raw ratio of mean
NLLs is ill-defined (NLL of a continuous density can be negative or zero, and
its scale depends on ``d``), so ``F`` is a rank statistic on the NLL. Let
``R`` be the fit set's **held-out** NLLs, obtained by cross-fitting: ``Df`` is
cut into ``folds`` parts; for each part ``k`` a model ``p_k`` is fit on the
other parts and scores part ``k`` (``R_k``) and every sample of ``D``. The
typicality of a sample is the fraction of held-out fit samples that are less
familiar than it (ties count one half)::

    t_k(x) = ( #{r in R_k : r > s_k(x)} + 1/2 #{r in R_k : r = s_k(x)} ) / |R_k|
    F(Df, D) = mean over x in D of  sum_k (|R_k| / |Df|) t_k(x)

``F(Df, D)`` is the Mann-Whitney probability that a sample of ``D`` looks more
familiar than a held-out sample of ``Df``: it lies in ``[0, 1]`` and
``F(Df, Df) = 1/2`` exactly (each ``R_k`` against itself). Hence
``L = 2 F(Df, Dp)`` in ``[0, 2]``; ``L ~ 1`` when ``Dp`` is as familiar as
unseen data from ``Df``'s distribution. Scoring the fit set out of sample
matters: in-sample NLLs are optimistically low and would make a fresh test split
look like a gap. Verdict bands (:func:`verdict`): ``L < 0.6`` "huge gap",
``0.6 <= L < 0.8`` "small gap", ``0.8 <= L <= 1.2`` "fine", ``L > 1.2`` "gap"
(``Dp`` is *more* typical than ``Df``, e.g. it covers only its dense modes).
Per class, ``Df`` and ``Dp`` are restricted to one label and the class's own
model is used; the overall per-class ratio pools every predict sample's
typicality under its class's model.
"""

from __future__ import annotations

import copy
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, Protocol, Self

import numpy as np
from scipy.special import logsumexp
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from brain.plugins import import_object, path_of

__all__ = [
    "check_storable",
    "ComparisonReport",
    "DensityStrategy",
    "FamiliarityModel",
    "PcaGmmDensity",
    "compare",
    "compare_per_class",
    "fit",
    "most_least_familiar",
    "verdict",
]

_FORMAT = "lakebrain.familiarity/1"
_LOG_2PI = float(np.log(2.0 * np.pi))


class DensityStrategy(Protocol):
    """A density model: ``fit`` learns from vectors, ``score`` returns NLLs.

    ``score`` must return one finite float per row, higher for less familiar
    rows. The library fits a ``copy.deepcopy`` of the strategy for every class
    and every cross-fitting fold, so one unfitted instance serves as a template.
    """

    def fit(self, vectors: np.ndarray, /) -> Self: ...

    def score(self, vectors: np.ndarray, /) -> np.ndarray: ...


class PcaGmmDensity:
    """PCA to ``reduced_dims`` then a ``gaussian_count``-component Gaussian mixture.

    Parameters
    ----------
    reduced_dims : PCA dimensions, clamped to ``min(n_samples, n_features)``.
    gaussian_count : mixture components (at most the number of fit rows).
    covariance_type : ``"full"`` or ``"diag"`` component covariances.
    convergence_threshold : EM stops when the lower bound gains less than this.
    max_iterations : EM iterations at most.
    regularization : added to covariance diagonals (scikit-learn's ``reg_covar``).
    seed : seeds PCA's randomized solver and the mixture's initialisation.

    Learned attributes: ``n_features_in_``, ``pca_mean_`` (D,),
    ``pca_components_`` (d, D), ``weights_`` (K,), ``means_`` (K, d),
    ``precisions_cholesky_`` ((K, d, d) full or (K, d) diag), ``converged_``.
    """

    def __init__(
        self,
        *,
        reduced_dims: int = 40,
        gaussian_count: int = 5,
        covariance_type: Literal["full", "diag"] = "full",
        convergence_threshold: float = 1e-3,
        max_iterations: int = 100,
        regularization: float = 1e-6,
        seed: int = 0,
    ) -> None:
        for name, value in (
            ("reduced_dims", reduced_dims),
            ("gaussian_count", gaussian_count),
            ("max_iterations", max_iterations),
        ):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if covariance_type not in ("full", "diag"):
            raise ValueError(f"covariance_type must be 'full' or 'diag', got {covariance_type!r}")
        if not convergence_threshold > 0:
            raise ValueError(f"convergence_threshold must be > 0, got {convergence_threshold!r}")
        if not regularization >= 0:
            raise ValueError(f"regularization must be >= 0, got {regularization!r}")
        self.reduced_dims = int(reduced_dims)
        self.gaussian_count = int(gaussian_count)
        self.covariance_type = covariance_type
        self.convergence_threshold = float(convergence_threshold)
        self.max_iterations = int(max_iterations)
        self.regularization = float(regularization)
        self.seed = int(seed)

    def params(self) -> dict[str, Any]:
        """The constructor's parameters, JSON-serializable."""
        return {
            "reduced_dims": self.reduced_dims,
            "gaussian_count": self.gaussian_count,
            "covariance_type": self.covariance_type,
            "convergence_threshold": self.convergence_threshold,
            "max_iterations": self.max_iterations,
            "regularization": self.regularization,
            "seed": self.seed,
        }

    def fit(self, vectors: np.ndarray) -> Self:
        """Fit PCA then the mixture on ``vectors`` (N, D); returns ``self``."""
        x = _check_vectors("vectors", vectors)
        if x.shape[0] < self.gaussian_count:
            raise ValueError(
                f"vectors has {x.shape[0]} rows, fewer than gaussian_count={self.gaussian_count}"
            )
        dims = min(self.reduced_dims, *x.shape)
        pca = PCA(n_components=dims, random_state=self.seed).fit(x)
        gmm = GaussianMixture(
            n_components=self.gaussian_count,
            covariance_type=self.covariance_type,
            tol=self.convergence_threshold,
            max_iter=self.max_iterations,
            reg_covar=self.regularization,
            random_state=self.seed,
        ).fit(pca.transform(x))
        self.n_features_in_ = x.shape[1]
        self.pca_mean_ = np.asarray(pca.mean_, dtype=np.float64)
        self.pca_components_ = np.asarray(pca.components_, dtype=np.float64)
        self.weights_ = np.asarray(gmm.weights_, dtype=np.float64)
        self.means_ = np.asarray(gmm.means_, dtype=np.float64)
        self.precisions_cholesky_ = np.asarray(gmm.precisions_cholesky_, dtype=np.float64)
        self.converged_ = bool(gmm.converged_)
        return self

    def score(self, vectors: np.ndarray) -> np.ndarray:
        """Negative log-likelihood (nats) of each row of ``vectors``; higher = less familiar."""
        if not hasattr(self, "weights_"):
            raise ValueError("PcaGmmDensity is not fitted; call fit first")
        x = _check_vectors("vectors", vectors, min_rows=0, features=self.n_features_in_)
        z = (x - self.pca_mean_) @ self.pca_components_.T
        dims = z.shape[1]
        log_joint = np.empty((z.shape[0], self.weights_.shape[0]))
        for k, (mean, chol) in enumerate(zip(self.means_, self.precisions_cholesky_)):
            if self.covariance_type == "full":
                y = (z - mean) @ chol
                log_det = np.sum(np.log(np.diag(chol)))
            else:
                y = (z - mean) * chol
                log_det = np.sum(np.log(chol))
            log_joint[:, k] = (
                np.log(self.weights_[k]) - 0.5 * (dims * _LOG_2PI + np.sum(y * y, axis=1)) + log_det
            )
        return -logsumexp(log_joint, axis=1)

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "pca_mean": self.pca_mean_,
            "pca_components": self.pca_components_,
            "weights": self.weights_,
            "means": self.means_,
            "precisions_cholesky": self.precisions_cholesky_,
            "converged": np.asarray(self.converged_),
        }

    @classmethod
    def _from_state(cls, params: dict[str, Any], state: dict[str, np.ndarray]) -> Self:
        density = cls(**params)
        density.pca_mean_ = state["pca_mean"]
        density.pca_components_ = state["pca_components"]
        density.n_features_in_ = density.pca_mean_.shape[0]
        density.weights_ = state["weights"]
        density.means_ = state["means"]
        density.precisions_cholesky_ = state["precisions_cholesky"]
        density.converged_ = bool(state["converged"])
        return density


class FamiliarityModel:
    """Fitted familiarity model: one density for all rows, or one per class.

    Learned attributes: ``classes_`` (the labels, sorted; ``None`` when not per
    class) and ``densities_`` (fitted strategies, aligned with ``classes_``).
    """

    def __init__(self, densities: list[DensityStrategy], classes: np.ndarray | None) -> None:
        self.densities_ = densities
        self.classes_ = classes

    def score(self, vectors: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Familiarity score (NLL, nats; higher = less familiar) of each row.

        A per-class model needs ``labels`` and scores each row under its class's
        density; labels unseen at fit time are a ``ValueError``.
        """
        if self.classes_ is None:
            if labels is not None:
                raise ValueError("labels given, but the model was fit without labels")
            return _scores_of(self.densities_[0], vectors, "vectors")
        if labels is None:
            raise ValueError("labels are required: the model was fit per class")
        x = _check_vectors("vectors", vectors, min_rows=0)
        y = _check_labels("labels", labels, x.shape[0])
        codes = np.searchsorted(self.classes_, y).clip(max=self.classes_.shape[0] - 1)
        unseen = self.classes_[codes] != y
        if unseen.any():
            raise ValueError(f"labels holds classes the model was not fit on: {np.unique(y[unseen]).tolist()}")
        out = np.empty(x.shape[0])
        for rows, density in zip(_groups(codes, self.classes_.shape[0]), self.densities_):
            if rows.size:
                out[rows] = _scores_of(density, x[rows], "vectors")
        return out

    def save(self, path: str | Path | IO[bytes]) -> Path | IO[bytes]:
        """Write the model to ``path`` (or a binary file object) as an ``.npz`` of arrays plus a JSON header (no pickle).

        :class:`PcaGmmDensity` densities are stored as their arrays; a custom
        strategy as its class's import path and the bytes of its own ``save``
        (see :func:`check_storable`).
        """
        custom = not all(isinstance(d, PcaGmmDensity) for d in self.densities_)
        header = {
            "format": _FORMAT,
            "params": None if custom else self.densities_[0].params(),
            "strategy": path_of(type(self.densities_[0])) if custom else None,
            "classes": None if self.classes_ is None else self.classes_.tolist(),
        }
        arrays = {"header": np.asarray(json.dumps(header))}
        for i, density in enumerate(self.densities_):
            if custom:
                check_storable(density)
                blob = io.BytesIO()
                density.save(blob)
                arrays[f"density{i}.blob"] = np.frombuffer(blob.getvalue(), dtype=np.uint8)
                continue
            for key, value in density._state().items():
                arrays[f"density{i}.{key}"] = value
        if hasattr(path, "write"):
            np.savez(path, **arrays)
            return path
        path = Path(path)
        with path.open("wb") as f:
            np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path | IO[bytes]) -> FamiliarityModel:
        """Read a model written by :meth:`save` (from a path or a binary file object)."""
        with np.load(path if hasattr(path, "read") else Path(path), allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            if header.get("format") != _FORMAT:
                raise ValueError(f"{path} is not a {_FORMAT} file")
            classes = None if header["classes"] is None else np.asarray(header["classes"])
            count = 1 if classes is None else classes.shape[0]
            strategy = header.get("strategy")
            densities: list[DensityStrategy] = []
            for i in range(count):
                prefix = f"density{i}."
                if strategy:
                    loader = import_object(strategy, what="familiarity strategy")
                    densities.append(loader.load(io.BytesIO(data[f"{prefix}blob"].tobytes())))
                    continue
                state = {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}
                densities.append(PcaGmmDensity._from_state(header["params"], state))
        return cls(densities, classes)


def check_storable(strategy: Any) -> None:
    """Refuse, naming the class, a custom strategy that cannot be saved without pickle.

    It needs ``save(file)`` (its fitted state to a binary file object), a ``load(file)``
    classmethod, and a class importable by its path (not defined inside a function).
    """
    if isinstance(strategy, PcaGmmDensity):
        return
    cls = type(strategy)
    missing = [name for name in ("save", "load") if not callable(getattr(cls, name, None))]
    if missing:
        raise TypeError(f"familiarity strategy {path_of(cls)} has no {' or '.join(missing)}: a fitted model is "
                        "stored without pickle, so the strategy must write its state with save(file) and read it "
                        "back with a classmethod load(file)")
    if "<locals>" in cls.__qualname__:
        raise TypeError(f"familiarity strategy {path_of(cls)} is defined inside a function: it cannot be imported "
                        "back by its path when the model is loaded")


@dataclass(frozen=True)
class ComparisonReport:
    """``L(f->p)`` overall and per class (classes of the predict set)."""

    ratio: float
    per_class: dict[Any, float]

    @property
    def verdict(self) -> str:
        return verdict(self.ratio)

    @property
    def per_class_verdict(self) -> dict[Any, str]:
        return {cls: verdict(ratio) for cls, ratio in self.per_class.items()}


def fit(
    vectors: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    strategy: DensityStrategy | None = None,
    **density_params: Any,
) -> FamiliarityModel:
    """Fit a familiarity model on ``vectors`` (N, D), one density per label if ``labels``.

    ``density_params`` configure the default :class:`PcaGmmDensity`
    (``reduced_dims``, ``gaussian_count``, ``covariance_type``,
    ``convergence_threshold``, ``max_iterations``, ``regularization``, ``seed``);
    pass ``strategy`` instead to use another density model.
    """
    template = _template(strategy, density_params)
    x = _check_vectors("vectors", vectors)
    if labels is None:
        return FamiliarityModel([_fit_copy(template, x, "vectors")], None)
    y = _check_labels("labels", labels, x.shape[0])
    classes, codes = np.unique(y, return_inverse=True)
    densities = [
        _fit_copy(template, x[rows], f"vectors of class {cls.item()!r}")
        for cls, rows in zip(classes, _groups(codes, classes.shape[0]))
    ]
    return FamiliarityModel(densities, classes)


def compare(
    fit_vectors: np.ndarray,
    predict_vectors: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    strategy: DensityStrategy | None = None,
    **density_params: Any,
) -> float:
    """``L(f->p) = F(Df, Dp) / F(Df, Df)`` in ``[0, 2]``; see the module docstring.

    ``seed`` shuffles the cross-fitting folds and seeds the default density;
    ``density_params`` configure it as in :func:`fit`.
    """
    template = _template(strategy, {"seed": seed, **density_params} if strategy is None else density_params)
    f = _check_vectors("fit_vectors", fit_vectors)
    p = _check_vectors("predict_vectors", predict_vectors, features=f.shape[1])
    _check_folds(folds, f.shape[0], "fit_vectors")
    typicality, reference = _cross_fit_typicality(template, f, p, folds, seed)
    return float(typicality.mean() / reference)


def compare_per_class(
    fit_vectors: np.ndarray,
    fit_labels: np.ndarray,
    predict_vectors: np.ndarray,
    predict_labels: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    strategy: DensityStrategy | None = None,
    **density_params: Any,
) -> ComparisonReport:
    """``L(f->p)`` per class of ``predict_labels`` (each class against its own model) and pooled.

    Every predict class must occur in ``fit_labels`` with at least ``folds`` rows.
    """
    template = _template(strategy, {"seed": seed, **density_params} if strategy is None else density_params)
    f = _check_vectors("fit_vectors", fit_vectors)
    p = _check_vectors("predict_vectors", predict_vectors, features=f.shape[1])
    fy = _check_labels("fit_labels", fit_labels, f.shape[0])
    py = _check_labels("predict_labels", predict_labels, p.shape[0])
    missing = np.setdiff1d(py, fy)
    if missing.size:
        raise ValueError(f"predict_labels has classes absent from fit_labels: {missing.tolist()}")
    classes, predict_codes = np.unique(py, return_inverse=True)
    fit_codes = np.searchsorted(classes, fy).clip(max=classes.shape[0] - 1)
    fit_codes[classes[fit_codes] != fy] = classes.shape[0]  # fit classes absent from the predict set
    groups = list(zip(classes, _groups(fit_codes, classes.shape[0]), _groups(predict_codes, classes.shape[0])))
    for cls, fit_rows, _ in groups:
        _check_folds(folds, fit_rows.shape[0], f"fit_vectors of class {cls.item()!r}")
    per_class: dict[Any, float] = {}
    typicality = np.empty(p.shape[0])
    reference = 0.0  # F(Df, Df) pooled over the fit rows of the compared classes
    for cls, fit_rows, predict_rows in groups:
        typicality[predict_rows], class_reference = _cross_fit_typicality(
            template, f[fit_rows], p[predict_rows], folds, seed
        )
        per_class[cls.item()] = float(typicality[predict_rows].mean() / class_reference)
        reference += class_reference * fit_rows.shape[0]
    reference /= np.isin(fy, classes).sum()
    return ComparisonReport(float(typicality.mean() / reference), per_class)


def verdict(ratio: float) -> str:
    """Band of ``L(f->p)``: <0.6 "huge gap", [0.6, 0.8) "small gap", [0.8, 1.2] "fine", >1.2 "gap"."""
    if not np.isfinite(ratio) or ratio < 0:
        raise ValueError(f"ratio must be finite and >= 0, got {ratio!r}")
    if ratio < 0.6:
        return "huge gap"
    if ratio < 0.8:
        return "small gap"
    if ratio <= 1.2:
        return "fine"
    return "gap"


def most_least_familiar(
    scores: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    count: int = 10,
) -> dict[str, np.ndarray]:
    """The ``count`` most and least familiar samples of each class, as columns.

    Returns ``label``, ``rank`` (0 = most familiar at the "most" end, least
    familiar at the "least" end), ``index`` (row in ``scores``), ``score`` and
    ``which_end`` ("most" or "least"); ``pyarrow.table(result)`` makes a table.
    Ties break by index. A class with fewer than ``2 * count`` rows lists some
    rows at both ends. Without ``labels`` the label column is ``None``.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"scores has non-finite values at rows {np.flatnonzero(~np.isfinite(s))[:10].tolist()}")
    if not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    if labels is None:
        y, groups = np.full(s.shape[0], None, dtype=object), [np.arange(s.shape[0])]
    else:
        y = _check_labels("labels", labels, s.shape[0])
        classes, codes = np.unique(y, return_inverse=True)
        groups = _groups(codes, classes.shape[0])
    parts: list[tuple[np.ndarray, np.ndarray, str]] = []
    for rows in groups:
        most = rows[np.lexsort((rows, s[rows]))][:count]
        least = rows[np.lexsort((rows, -s[rows]))][:count]
        parts += [(most, y[most], "most"), (least, y[least], "least")]
    index = np.concatenate([rows for rows, _, _ in parts])
    return {
        "label": np.concatenate([group for _, group, _ in parts]),
        "rank": np.concatenate([np.arange(rows.shape[0]) for rows, _, _ in parts]),
        "index": index,
        "score": s[index],
        "which_end": np.concatenate([np.full(rows.shape[0], end) for rows, _, end in parts]),
    }


def _groups(codes: np.ndarray, count: int) -> list[np.ndarray]:
    """Row indices of each code ``0 .. count - 1``, ascending."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(count + 1))
    return [order[bounds[k] : bounds[k + 1]] for k in range(count)]


def _template(strategy: DensityStrategy | None, density_params: dict[str, Any]) -> DensityStrategy:
    if strategy is None:
        return PcaGmmDensity(**density_params)
    if density_params:
        raise ValueError(f"pass density parameters {sorted(density_params)} to the strategy, not with it")
    return strategy


def _cross_fit_typicality(
    template: DensityStrategy, fit: np.ndarray, predict: np.ndarray, folds: int, seed: int
) -> tuple[np.ndarray, float]:
    """Per predict row ``sum_k (|R_k|/n) t_k(x)``, and ``F(Df, Df)`` (1/2 up to ties)."""
    order = np.random.default_rng(seed).permutation(fit.shape[0])
    typicality = np.zeros(predict.shape[0])
    reference = 0.0
    for held_out in np.array_split(order, folds):
        train = np.setdiff1d(order, held_out, assume_unique=True)
        density = _fit_copy(template, fit[train], "a cross-fitting fold of fit_vectors")
        held_scores = np.sort(_scores_of(density, fit[held_out], "held-out fit_vectors"))
        weight = held_out.shape[0] / fit.shape[0]
        typicality += weight * _typicality(held_scores, _scores_of(density, predict, "predict_vectors"))
        reference += weight * _typicality(held_scores, held_scores).mean()
    return typicality, reference


def _typicality(sorted_reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Fraction of the reference with a higher NLL than each score, ties counting 1/2."""
    below = np.searchsorted(sorted_reference, scores, side="left")
    not_above = np.searchsorted(sorted_reference, scores, side="right")
    return (sorted_reference.shape[0] - 0.5 * (below + not_above)) / sorted_reference.shape[0]


def _fit_copy(template: DensityStrategy, vectors: np.ndarray, name: str) -> DensityStrategy:
    try:
        return copy.deepcopy(template).fit(vectors)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from error


def _scores_of(density: DensityStrategy, vectors: np.ndarray, name: str) -> np.ndarray:
    scores = np.asarray(density.score(vectors), dtype=np.float64)
    if scores.shape != (len(vectors),) or not np.isfinite(scores).all():
        raise ValueError(f"the density's scores of {name} must be {len(vectors)} finite floats")
    return scores


def _check_folds(folds: int, rows: int, name: str) -> None:
    if not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    if rows < folds:
        raise ValueError(f"{name} has {rows} rows, fewer than folds={folds}")


def _check_vectors(name: str, vectors: np.ndarray, *, min_rows: int = 1, features: int | None = None) -> np.ndarray:
    x = np.asarray(vectors)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, features), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ValueError(f"{name} must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float64, copy=False)
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} has {x.shape[0]} rows, needs at least {min_rows}")
    if features is not None and x.shape[1] != features:
        raise ValueError(f"{name} has {x.shape[1]} features, expected {features}")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise ValueError(f"{name} has NaN or infinite values in rows {bad[:10].tolist()}")
    return x


def _check_labels(name: str, labels: np.ndarray, rows: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (rows,):
        raise ValueError(f"{name} must be 1-D with {rows} entries, got shape {y.shape}")
    if y.dtype == object:
        kinds = {type(v) for v in y}
        if kinds <= {str}:
            return y.astype(str)
        if kinds <= {int, np.int64, np.int32}:
            return y.astype(np.int64)
        raise ValueError(f"{name} must hold only strings or only integers, got {sorted(k.__name__ for k in kinds)}")
    if y.dtype.kind not in "iuUb":
        raise ValueError(f"{name} must hold integers or strings, got dtype {y.dtype}")
    return y
