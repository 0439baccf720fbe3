"""Hardness: how uncertain a model is about each sample.

Given a model's logits ``z`` (one row per sample, one column per class), the
hardness of a sample is the Shannon entropy, in nats, of its softmax
distribution, as FiftyOne Brain's ``compute_hardness`` defines it:

.. math::

    p_j = \\frac{e^{z_j}}{\\sum_k e^{z_k}}, \\qquad
    \\mathrm{hardness} = H(p) = -\\sum_j p_j \\log p_j

Range ``[0, log C]``: 0 for a one-hot prediction (easy), ``log C`` for a
uniform one (hard); higher means harder. FiftyOne reports this raw entropy;
``normalize=True`` divides by ``log C`` so that scores from models with
different class counts share the range ``[0, 1]``.

The softmax is computed in log space (``log p = z - logsumexp(z)``), so large
logits neither overflow nor lose the small probabilities.

This module also holds the logits validation, log-softmax and entropy that
:mod:`brain.methods.mistakenness` shares.
"""

from __future__ import annotations

import numpy as np

__all__ = ["entropy", "hardness", "log_softmax", "validate_logits"]


def validate_logits(logits: np.ndarray, *, name: str = "logits") -> np.ndarray:
    """Return ``logits`` as a float64 ``(N, C)`` array, or raise ``ValueError``.

    The message names the field (``name``) and, for non-finite values, the
    first offending row and column.
    """
    arr = np.asarray(logits)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, C); got shape {arr.shape}")
    if arr.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 classes (columns); got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) and not np.iscomplexobj(arr)):
        raise ValueError(f"{name} must be real numbers; got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{name} row {row} column {col} is {arr[row, col]} "
            f"({int(bad.any(axis=1).sum())} rows are not finite)"
        )
    return arr


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise ``log softmax(z) = z - logsumexp(z)`` of validated logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def entropy(logp: np.ndarray) -> np.ndarray:
    """Row-wise entropy in nats of normalized log-probabilities ``(N, C)``."""
    return np.clip(-(np.exp(logp) * logp).sum(axis=1), 0.0, None)  # no -0.0 from rounding


def hardness(logits: np.ndarray, *, normalize: bool = False) -> np.ndarray:
    """Entropy of ``softmax(logits)`` per sample; higher means harder.

    Parameters
    ----------
    logits : ndarray of shape (N, C)
        Raw model outputs (log-probabilities are fine too: softmax ignores a
        per-row constant). Must be finite.
    normalize : bool, default False
        Divide by ``log C`` to map the score to ``[0, 1]``. The default is
        FiftyOne's raw entropy in nats, range ``[0, log C]``.

    Returns
    -------
    ndarray of shape (N,), float64

    Raises
    ------
    ValueError
        If ``logits`` is not 2-D with at least 2 columns, or holds NaN/inf
        (the message names the first bad row).
    """
    logp = log_softmax(validate_logits(logits))
    if normalize:
        return entropy(logp) / np.log(logp.shape[1])
    return entropy(logp)
