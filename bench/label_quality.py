"""Label-quality benchmark: our mistakenness vs FiftyOne's formula vs cleanlab.

Input (the walkthrough): sklearn's digits (1,797 images, 64 pixels), a share of
labels flipped (seeded), logits = log of 5-fold cross-validated probabilities
of a model fit on the noisy labels, neighbours = 10 nearest in PCA-32 of the
pixels (self excluded). The standard setting: 20% uniform flips (each flipped
label moves to another class uniformly), LogisticRegression (lbfgs) on the
pixels scaled to [0, 1] (``X / 16``). Other rows vary the seed, the noise
(10% and 40% uniform; confusable pairs: a flipped 1 becomes 7 and back, 3 and 8,
4 and 9, 5 and 6, 0 and 2; class-conditional: every flipped label of class j
becomes pi(j) for a random derangement pi) and the model (unscaled pixels, a
small MLP, a kNN classifier). Target per row: ours+knn >= ours >= cleanlab's
self-confidence in both AUROC and precision@k (checked in the last column).

Scores, higher = more likely mislabelled: ours (``mistakenness.classification``
default "margin", without and with neighbours), FiftyOne's ``(s c + 1) / 2``
with ``c = exp(-entropy)``, cleanlab's ``get_label_quality_scores``
self_confidence and normalized_margin (flipped). Metrics: AUROC of the score
against "label was flipped" and precision@k with k = number flipped. The
second table compares the confident-learning flags (``label_issues``) with
cleanlab's ``find_label_issues(filter_by="confident_learning")``.

Run: ``.venv/bin/python bench/label_quality.py`` (about a minute). BLAS is
limited to one thread: on a busy 2-core machine, threaded OpenBLAS makes the
logistic-regression fits 50x slower.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from brain.methods import mistakenness

NUM_CLASSES = 10
K_NEIGHBORS = 10

MODELS: dict[str, Callable[[int], tuple[object, bool]]] = {
    # name -> seed -> (estimator, scale pixels to [0, 1])
    "logreg": lambda seed: (LogisticRegression(max_iter=1000), True),
    "logreg_unscaled": lambda seed: (LogisticRegression(max_iter=5000), False),
    "mlp": lambda seed: (MLPClassifier((64,), max_iter=300, random_state=seed), True),
    "knn_clf": lambda seed: (KNeighborsClassifier(K_NEIGHBORS), False),
}

SETTINGS = [  # (noise kind, rate, model, seed); the first is the standard one
    *(("uniform", 0.2, "logreg", seed) for seed in range(5)),
    ("uniform", 0.1, "logreg", 0),
    ("uniform", 0.4, "logreg", 0),
    ("uniform", 0.4, "logreg", 1),
    ("pairs", 0.2, "logreg", 0),
    ("classcond", 0.2, "logreg", 0),
    ("classcond", 0.2, "logreg", 1),
    ("uniform", 0.2, "logreg_unscaled", 0),
    ("uniform", 0.2, "mlp", 0),
    ("pairs", 0.2, "mlp", 0),
    ("classcond", 0.2, "mlp", 0),
    ("uniform", 0.2, "knn_clf", 0),
    ("uniform", 0.4, "knn_clf", 0),
    ("pairs", 0.2, "knn_clf", 0),
    ("classcond", 0.2, "knn_clf", 0),
]
CONFUSABLE_PAIRS = ((1, 7), (3, 8), (4, 9), (5, 6), (0, 2))  # pairs: a flipped label moves to its partner


def flip_labels(labels: np.ndarray, rate: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Flip ``round(rate * N)`` labels, chosen uniformly, to a different class."""
    noisy = labels.copy()
    flipped = rng.choice(len(labels), round(rate * len(labels)), replace=False)
    if kind == "uniform":
        noisy[flipped] = (labels[flipped] + rng.integers(1, NUM_CLASSES, len(flipped))) % NUM_CLASSES
    elif kind == "pairs":
        partner = np.arange(NUM_CLASSES)
        for a, b in CONFUSABLE_PAIRS:
            partner[a], partner[b] = b, a
        noisy[flipped] = partner[labels[flipped]]
    else:
        derangement = rng.permutation(NUM_CLASSES)
        while (derangement == np.arange(NUM_CLASSES)).any():
            derangement = rng.permutation(NUM_CLASSES)
        noisy[flipped] = derangement[labels[flipped]]
    return noisy


def nearest_neighbors(points: np.ndarray, k: int) -> np.ndarray:
    """``(N, k)`` indices of each point's k nearest others (self removed even on ties)."""
    _, index = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    keep = index != np.arange(len(points))[:, None]
    keep[keep.all(axis=1), -1] = False
    return index[keep].reshape(len(points), k)


def make_input(kind: str, rate: float, model: str, seed: int):
    """Return (true labels, noisy labels, probabilities, logits, knn indices)."""
    pixels, labels = load_digits(return_X_y=True)
    noisy = flip_labels(labels, rate, kind, np.random.default_rng(seed))
    estimator, scale = MODELS[model](seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probs = cross_val_predict(
            estimator, pixels / 16.0 if scale else pixels, noisy, cv=5, method="predict_proba"
        )
    logits = np.log(np.maximum(probs, np.finfo(np.float64).tiny))
    knn = nearest_neighbors(PCA(32, random_state=0).fit_transform(pixels), K_NEIGHBORS)
    return labels, noisy, probs, logits, knn


def auroc_precision_at_k(score: np.ndarray, is_flipped: np.ndarray) -> tuple[float, float]:
    k = int(is_flipped.sum())
    top = np.argsort(-score, kind="stable")[:k]
    return float(roc_auc_score(is_flipped, score)), float(is_flipped[top].mean())


def rankings(
    noisy: np.ndarray, probs: np.ndarray, logits: np.ndarray, knn: np.ndarray
) -> dict[str, np.ndarray]:
    return {
        "ours": mistakenness.classification(logits, noisy),
        "ours+knn": mistakenness.classification(logits, noisy, knn),
        "fiftyone": mistakenness.classification(logits, noisy, method="fiftyone"),
        "cl_self_conf": 1.0 - get_label_quality_scores(noisy, probs, method="self_confidence"),
        "cl_norm_margin": 1.0 - get_label_quality_scores(noisy, probs, method="normalized_margin"),
    }


def flag_quality(flags: np.ndarray, is_flipped: np.ndarray) -> str:
    precision = is_flipped[flags].mean() if flags.any() else float("nan")
    return f"{precision:.3f}/{flags[is_flipped].mean():.3f}"


def main() -> None:
    started = time.perf_counter()
    names = ["ours", "ours+knn", "fiftyone", "cl_self_conf", "cl_norm_margin"]
    print("AUROC / precision@k (k = number flipped); higher is better")
    print(f"{'noise':>9} {'rate':>4} {'model':>15} {'seed':>4} " + " ".join(f"{n:>15}" for n in names)
          + f" {'target':>7}")
    flag_rows = []
    targets: list[tuple[bool, bool]] = []
    standard_runs = []
    for kind, rate, model, seed in SETTINGS:
        labels, noisy, probs, logits, knn = make_input(kind, rate, model, seed)
        is_flipped = noisy != labels
        metrics = {
            name: auroc_precision_at_k(score, is_flipped)
            for name, score in rankings(noisy, probs, logits, knn).items()
        }
        if (kind, rate, model) == SETTINGS[0][:3]:
            standard_runs.append(metrics)
        cells = " ".join(f"{m[0]:.4f}/{m[1]:.3f}".rjust(15) for m in metrics.values())
        met = all(metrics["ours+knn"][i] >= metrics["ours"][i] >= metrics["cl_self_conf"][i] for i in (0, 1))
        knn_met = all(metrics["ours+knn"][i] >= metrics["ours"][i] for i in (0, 1))
        targets.append((met, knn_met))
        print(f"{kind:>9} {rate:>4} {model:>15} {seed:>4} {cells} {'yes' if met else 'NO':>7}")
        flag_rows.append(
            (
                kind,
                rate,
                model,
                seed,
                flag_quality(mistakenness.label_issues(logits, noisy).is_issue, is_flipped),
                flag_quality(mistakenness.label_issues(logits, noisy, knn).is_issue, is_flipped),
                flag_quality(find_label_issues(noisy, probs, filter_by="confident_learning"), is_flipped),
            )
        )
    means = {name: np.mean([run[name] for run in standard_runs], axis=0) for name in names}
    cells = " ".join(f"{m[0]:.4f}/{m[1]:.3f}".rjust(15) for m in means.values())
    print(f"{'mean of the 5 standard seeds':>36} {cells}")

    print("\nlabel_issues (confident learning) precision/recall of the is_issue flags")
    header = f"{'noise':>9} {'rate':>4} {'model':>15} {'seed':>4}"
    print(f"{header} {'ours':>12} {'ours+knn':>12} {'cleanlab':>12}")
    for kind, rate, model, seed, ours, ours_knn, cleanlab in flag_rows:
        print(f"{kind:>9} {rate:>4} {model:>15} {seed:>4} {ours:>12} {ours_knn:>12} {cleanlab:>12}")

    first = standard_runs[0]
    print(f"\n({time.perf_counter() - started:.0f} s; RESULT is the standard setting, seed 0)")
    print(
        f"RESULT auroc={first['ours'][0]:.4f} precision_at_k={first['ours'][1]:.4f} "
        f"auroc_knn={first['ours+knn'][0]:.4f} precision_at_k_knn={first['ours+knn'][1]:.4f} "
        f"cleanlab_auroc={first['cl_self_conf'][0]:.4f} "
        f"cleanlab_precision_at_k={first['cl_self_conf'][1]:.4f} "
        f"fiftyone_auroc={first['fiftyone'][0]:.4f} "
        f"knn_not_below_logits={sum(k for _, k in targets)}/{len(targets)} "
        f"target_met={sum(m for m, _ in targets)}/{len(targets)}"
    )


if __name__ == "__main__":
    with threadpool_limits(limits=1):
        main()
