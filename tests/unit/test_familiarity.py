"""Familiarity: density ordering, save/load, dataset comparison bands on digits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, spearmanr
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from brain.methods import familiarity as fam


def _true_mixture(seed: int, dims: int = 6):
    rng = np.random.default_rng(seed)
    weights = np.array([0.6, 0.4])
    means = np.stack([np.zeros(dims), np.full(dims, 3.0)])
    covs = []
    for scale in (1.0, 0.5):
        a = rng.normal(size=(dims, dims))
        covs.append(scale * (a @ a.T / dims + 0.5 * np.eye(dims)))

    def sample(n: int) -> np.ndarray:
        which = rng.choice(2, size=n, p=weights)
        return np.stack([rng.multivariate_normal(means[k], covs[k]) for k in which])

    def nll(x: np.ndarray) -> np.ndarray:
        parts = [np.log(w) + multivariate_normal(m, c).logpdf(x) for w, m, c in zip(weights, means, covs)]
        return -logsumexp(np.stack(parts, axis=1), axis=1)

    return sample, nll


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return x.astype(np.float64), y


def _split(x, y, seed):
    order = np.random.default_rng(seed).permutation(x.shape[0])
    cut = int(0.7 * x.shape[0])
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def _rotate(x):
    return np.rot90(x.reshape(-1, 8, 8), axes=(1, 2)).reshape(-1, 64)


def _hflip(x):
    return x.reshape(-1, 8, 8)[:, :, ::-1].reshape(-1, 64)


# -- scores -----------------------------------------------------------------
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_score_orders_samples_like_the_true_density(covariance_type):
    sample, true_nll = _true_mixture(seed=1)
    model = fam.fit(sample(2000), gaussian_count=2, covariance_type=covariance_type)
    probe = sample(1000)
    scores = model.score(probe)
    assert scores.shape == (1000,)
    rho = spearmanr(scores, true_nll(probe)).statistic
    assert rho > (0.95 if covariance_type == "full" else 0.9)


def test_score_is_the_negative_log_likelihood_of_the_fitted_pca_and_mixture():
    x = np.random.default_rng(0).normal(size=(400, 12))
    model = fam.fit(x, reduced_dims=5, gaussian_count=3, seed=7)
    pca = PCA(n_components=5, random_state=7).fit(x)
    gmm = GaussianMixture(3, covariance_type="full", tol=1e-3, reg_covar=1e-6, random_state=7).fit(pca.transform(x))
    np.testing.assert_allclose(model.score(x), -gmm.score_samples(pca.transform(x)), rtol=1e-10, atol=1e-10)
    density = model.densities_[0]
    assert density.pca_components_.shape == (5, 12)
    assert density.precisions_cholesky_.shape == (3, 5, 5)
    assert density.converged_


def test_reduced_dims_is_clamped_to_the_data():
    x = np.random.default_rng(0).normal(size=(30, 8))
    density = fam.fit(x, gaussian_count=2).densities_[0]
    assert density.pca_components_.shape == (8, 8)
    density = fam.fit(x[:6], gaussian_count=2).densities_[0]
    assert density.pca_components_.shape == (6, 8)


def test_per_class_model_scores_each_row_under_its_class():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, size=(300, 4)), rng.normal(10, 1, size=(300, 4))
    x, labels = np.vstack([a, b]), np.array(["a"] * 300 + ["b"] * 300)
    model = fam.fit(x, labels, gaussian_count=1)
    assert model.classes_.tolist() == ["a", "b"]
    probe = np.zeros((1, 4))
    # The origin is typical of class "a" and far out in class "b".
    assert model.score(probe, np.array(["a"]))[0] < model.score(probe, np.array(["b"]))[0] - 20
    # object-dtype labels (e.g. from Arrow) work too
    np.testing.assert_array_equal(model.score(x, labels.astype(object)), model.score(x, labels))


def test_per_class_model_equals_one_model_per_class():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(240, 5))
    labels = rng.permutation(np.repeat([2, 7, 9], 80))
    model = fam.fit(x, labels, gaussian_count=2, seed=3)
    scores = model.score(x, labels)
    for cls in (2, 7, 9):
        rows = labels == cls
        np.testing.assert_array_equal(scores[rows], fam.fit(x[rows], gaussian_count=2, seed=3).score(x[rows]))


def test_custom_strategy_plugs_in():
    class DistanceToMean:
        def fit(self, vectors):
            self.mean_ = vectors.mean(axis=0)
            return self

        def score(self, vectors):
            return np.linalg.norm(vectors - self.mean_, axis=1)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    model = fam.fit(x, strategy=DistanceToMean())
    np.testing.assert_allclose(model.score(x), np.linalg.norm(x - x.mean(axis=0), axis=1))
    assert 0.8 <= fam.compare(x[:200], x[200:], strategy=DistanceToMean()) <= 1.2
    assert fam.compare(x[:200], x[200:] + 3, strategy=DistanceToMean()) < 0.6
    with pytest.raises(TypeError, match="has no save or load"):
        model.save("unused.npz")


# -- save / load ------------------------------------------------------------
@pytest.mark.parametrize("per_class", [False, True])
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_saved_model_loads_without_pickle_and_scores_identically(tmp_path, digits, per_class, covariance_type):
    x, y = digits
    labels = y if per_class else None
    model = fam.fit(x, labels, covariance_type=covariance_type, gaussian_count=3)
    path = model.save(tmp_path / "familiarity.npz")
    with np.load(path, allow_pickle=False) as data:
        assert all(data[key].dtype != object for key in data.files)
    loaded = fam.FamiliarityModel.load(path)
    args = (x, y) if per_class else (x,)
    np.testing.assert_array_equal(loaded.score(*args), model.score(*args))
    assert loaded.densities_[0].params() == model.densities_[0].params()
    if per_class:
        assert loaded.classes_.tolist() == list(range(10))


def test_load_rejects_other_npz_files(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, header=np.asarray('{"format": "something/1"}'))
    with pytest.raises(ValueError, match="lakebrain.familiarity/1"):
        fam.FamiliarityModel.load(path)


# -- dataset comparison -------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_digits_train_vs_test_is_fine(digits, seed):
    train, _, test, _ = _split(*digits, seed)
    ratio = fam.compare(train, test, seed=seed)
    assert 0.8 <= ratio <= 1.2
    assert fam.verdict(ratio) == "fine"


def test_digits_rotated_is_a_huge_gap(digits):
    train, _, test, _ = _split(*digits, 0)
    ratio = fam.compare(train, _rotate(test))
    assert ratio < 0.6
    assert fam.verdict(ratio) == "huge gap"


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda x, rng: np.clip(x + rng.normal(0, 2.0, x.shape), 0, 16), id="noise"),
        pytest.param(lambda x, rng: _hflip(x), id="hflip"),
        pytest.param(lambda x, rng: 16 - x, id="inverted"),
    ],
)
def test_digits_corruptions_show_a_gap(digits, corrupt):
    train, _, test, _ = _split(*digits, 0)
    ratio = fam.compare(train, corrupt(test, np.random.default_rng(0)))
    assert ratio < 0.8
    assert fam.verdict(ratio) in ("small gap", "huge gap")


def test_fit_set_is_scored_out_of_sample(digits):
    # The fit set against itself is not "fine" in-sample: its own rows trained the
    # fold models that score them, so they look MORE familiar than held-out rows.
    train, _, test, _ = _split(*digits, 0)
    assert fam.compare(train, train) > fam.compare(train, test)


def test_per_class_comparison_on_digits(digits):
    train, train_y, test, test_y = _split(*digits, 0)
    fine = fam.compare_per_class(train, train_y, test, test_y)
    assert sorted(fine.per_class) == list(range(10))
    assert 0.8 <= fine.ratio <= 1.2 and fine.verdict == "fine"
    assert 0.8 <= np.median(list(fine.per_class.values())) <= 1.2
    rotated = fam.compare_per_class(train, train_y, _rotate(test), test_y)
    assert rotated.ratio < 0.6
    assert set(rotated.per_class_verdict.values()) == {"huge gap"}
    # horizontally symmetric digits (0, 8) survive a flip better than 2, 3, 5, 6, 7
    flipped = fam.compare_per_class(train, train_y, _hflip(test), test_y).per_class
    assert min(flipped[0], flipped[8]) > max(flipped[d] for d in (2, 3, 5, 6, 7))


def test_per_class_comparison_needs_fit_classes(digits):
    x, y = digits
    with pytest.raises(ValueError, match=r"absent from fit_labels: \[9\]"):
        fam.compare_per_class(x[y < 9], y[y < 9], x, y)
    few = np.flatnonzero(y == 3)[:4]
    keep = np.concatenate([np.flatnonzero(y != 3), few])
    with pytest.raises(ValueError, match="fit_vectors of class 3 has 4 rows, fewer than folds=5"):
        fam.compare_per_class(x[keep], y[keep], x, y)


def test_per_class_comparison_ignores_fit_classes_absent_from_the_predict_set(digits):
    train, train_y, test, test_y = _split(*digits, 1)
    report = fam.compare_per_class(train, train_y, _rotate(test[test_y < 3]), test_y[test_y < 3])
    assert sorted(report.per_class) == [0, 1, 2]
    assert report.ratio == pytest.approx(np.average(list(report.per_class.values()),
                                                    weights=np.bincount(test_y[test_y < 3])), abs=1e-12)  # fmt: skip
    assert report.verdict == "huge gap"


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [(0.0, "huge gap"), (0.59, "huge gap"), (0.6, "small gap"), (0.79, "small gap"), (0.8, "fine"),
     (1.0, "fine"), (1.2, "fine"), (1.21, "gap"), (2.0, "gap")],
)  # fmt: skip
def test_verdict_bands(ratio, expected):
    assert fam.verdict(ratio) == expected


# -- most / least familiar ---------------------------------------------------
def test_most_and_least_familiar_per_class():
    scores = np.array([5.0, 1.0, 3.0, 9.0, 2.0, 7.0, 4.0, 0.5])
    labels = np.array(["a", "a", "a", "a", "b", "b", "b", "b"])
    table = fam.most_least_familiar(scores, labels, count=2)
    rows = list(zip(*(table[k].tolist() for k in ("label", "which_end", "rank", "index", "score"))))
    assert rows == [
        ("a", "most", 0, 1, 1.0),
        ("a", "most", 1, 2, 3.0),
        ("a", "least", 0, 3, 9.0),
        ("a", "least", 1, 0, 5.0),
        ("b", "most", 0, 7, 0.5),
        ("b", "most", 1, 4, 2.0),
        ("b", "least", 0, 5, 7.0),
        ("b", "least", 1, 6, 4.0),
    ]


def test_most_and_least_familiar_without_labels_and_small_classes():
    table = fam.most_least_familiar(np.array([2.0, 1.0, 2.0]), count=5)
    assert table["index"].tolist() == [1, 0, 2, 0, 2, 1]  # ties break by index
    assert table["which_end"].tolist() == ["most"] * 3 + ["least"] * 3
    assert table["label"].tolist() == [None] * 6


# -- bad inputs ---------------------------------------------------------------
def test_bad_inputs_name_the_field():
    x = np.random.default_rng(0).normal(size=(50, 4))
    with pytest.raises(ValueError, match=r"vectors has NaN or infinite values in rows \[3\]"):
        fam.fit(np.where(np.arange(50)[:, None] == 3, np.nan, x))
    with pytest.raises(ValueError, match="vectors must be 2-D"):
        fam.fit(x[0])
    with pytest.raises(ValueError, match="fewer than gaussian_count=5"):
        fam.fit(x[:4])
    with pytest.raises(ValueError, match="class 1: vectors has 2 rows, fewer than gaussian_count=5"):
        fam.fit(x[:22], np.array([0] * 20 + [1] * 2))
    with pytest.raises(ValueError, match="covariance_type"):
        fam.fit(x, covariance_type="tied")
    with pytest.raises(ValueError, match="gaussian_count"):
        fam.fit(x, gaussian_count=0)
    with pytest.raises(TypeError):
        fam.fit(x, n_components=3)
    with pytest.raises(ValueError, match="labels must be 1-D with 50 entries"):
        fam.fit(x, np.zeros(49, dtype=int))
    with pytest.raises(ValueError, match="labels must hold integers or strings"):
        fam.fit(x, np.zeros(50))
    with pytest.raises(ValueError, match="not with it"):
        fam.fit(x, strategy=fam.PcaGmmDensity(), gaussian_count=2)
    model = fam.fit(x)
    with pytest.raises(ValueError, match="vectors has 3 features, expected 4"):
        model.score(x[:, :3])
    with pytest.raises(ValueError, match="fit without labels"):
        model.score(x, np.zeros(50, dtype=int))
    per_class = fam.fit(x, np.arange(50) % 2)
    with pytest.raises(ValueError, match="labels are required"):
        per_class.score(x)
    with pytest.raises(ValueError, match=r"not fit on: \[7\]"):
        per_class.score(x[:1], np.array([7]))
    with pytest.raises(ValueError, match="predict_vectors has 3 features"):
        fam.compare(x, x[:, :3])
    with pytest.raises(ValueError, match="folds must be an integer >= 2"):
        fam.compare(x, x, folds=1)
    with pytest.raises(ValueError, match="a cross-fitting fold of fit_vectors: vectors has 4 rows"):
        fam.compare(x[:5], x, folds=5, gaussian_count=5)
    with pytest.raises(ValueError, match="ratio must be finite"):
        fam.verdict(float("nan"))
    with pytest.raises(ValueError, match="scores has non-finite values at rows"):
        fam.most_least_familiar(np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="not fitted"):
        fam.PcaGmmDensity().score(x)
