"""Uniqueness: how far a sample lies from its nearest neighbours, in [0, 1].

As in FiftyOne Brain, a sample's raw score is the weighted sum of the distances to
its K nearest neighbours (self excluded), with weights w = (0.6, 0.3, 0.1) for the
3 nearest by default:

    r_i = Σ_j w_j · d_i,(j)          d_i,(1) ≤ d_i,(2) ≤ …

and uniqueness is the raw score normalised by the largest over the dataset:

    u_i = r_i / max_m r_m            (u = 0 for an exact duplicate, max u = 1)

If every raw score is 0 (all samples identical), every uniqueness is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_WEIGHTS = (0.6, 0.3, 0.1)


def weighted_knn_distance(distances: np.ndarray, *, weights: Sequence[float] = DEFAULT_WEIGHTS) -> np.ndarray:
    """Raw score r_i = Σ_j w_j d_i,(j) over the first len(weights) neighbours; [N, k] → [N]."""
    d = np.asarray(distances, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"distances must be [N, k], got shape {d.shape}")
    if d.shape[1] < len(w):
        raise ValueError(f"distances has {d.shape[1]} neighbours per sample, the weights need {len(w)}")
    bad = np.flatnonzero(~np.isfinite(d[:, :len(w)]).all(axis=1) | (d[:, :len(w)] < 0).any(axis=1))
    if bad.size:
        raise ValueError(f"distances must be finite and >= 0 (rows {bad[:5].tolist()})")
    return d[:, :len(w)] @ w


def normalize(raw: np.ndarray, max_raw: float) -> np.ndarray:
    """u_i = r_i / max_raw, with u = 0 when max_raw is 0."""
    raw = np.asarray(raw, dtype=np.float64)
    if max_raw <= 0:
        return np.zeros_like(raw)
    return raw / max_raw


def uniqueness(distances: np.ndarray, *, weights: Sequence[float] = DEFAULT_WEIGHTS) -> np.ndarray:
    """Uniqueness in [0, 1] of every sample from its sorted kNN distances [N, k]."""
    raw = weighted_knn_distance(distances, weights=weights)
    return normalize(raw, float(raw.max()) if raw.size else 0.0)
