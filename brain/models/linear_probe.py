"""A classifier the lake trains itself: multinomial logistic regression on an embeddings run.

For samples with vectors ``x_i`` and labels ``y_i``, a logistic regression
(scikit-learn, L2-regularised, ``C`` = 1) gives logits ``z_i = W x_i + b``.
Out-of-fold: the samples are split into ``folds`` stratified folds and each
fold's logits come from the model fitted on the other folds, so every stored
prediction is for a sample its model never saw (what hardness and mistakenness
need). ``p = softmax(z)`` as in :class:`brain.models.Predictions`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def out_of_fold_logits(vectors: np.ndarray, labels: Sequence[str], *, folds: int = 5,
                       seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """(logits [N, C] out of fold, class names in column order)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(labels):
        raise ValueError(f"vectors must be [N, D] with one label per row, got {vectors.shape} and {len(labels)} labels")
    missing = [i for i, label in enumerate(labels) if label is None]
    if missing:
        raise ValueError(f"row {missing[0]} has no label ({len(missing)} unlabelled rows): label or drop them first")
    classes, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)
    if len(classes) < 2 or counts.min() < folds:
        raise ValueError(f"need at least 2 classes with >= {folds} samples each, got {dict(zip(classes, counts))}")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    logits = cross_val_predict(model, vectors, np.asarray(labels, dtype=str), method="decision_function",
                               cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return logits.astype(np.float32), [str(c) for c in classes]
