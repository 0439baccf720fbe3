"""Mistakenness: how likely each given label is wrong.

Classification
==============

Inputs: logits ``z`` of shape ``(N, C)`` (out-of-sample, e.g. cross-validated),
given labels ``y`` of shape ``(N,)`` in ``0..C-1`` and, optionally, each
sample's nearest neighbours in an embedding space, ``knn_indices`` of shape
``(N, k)`` (self excluded; ``-1`` pads rows with fewer neighbours, as FAISS
does).

Posterior. ``p = softmax(z)``. With neighbours, the model's posterior is mixed
with the neighbours' label vote::

    q_i(j) = (#{n in nbrs(i) : y_n = j} + 1/C) / (k_i + 1)
    p~_i   = (1 - w) p_i + w q_i

``q`` counts one extra, uniform pseudo-neighbour so that it is never 0. The
neighbour weight ``w`` (``knn_weight``) is by default fitted by maximum
likelihood on the given labels, ``w = argmax_w sum_i log p~_i(y_i)`` (concave
in ``w``). ``p`` and ``q`` are both out-of-sample, so the fit rewards whichever
predicts held-out labels better: neighbours from a poor embedding get a weight
near 0 and cost almost nothing, informative ones dominate. Without neighbours
``p~ = p``.

Confident learning. Per-class thresholds ``t_j = mean_{i : y_i = j} p~_i(j)``
(``+inf`` for a class nobody carries); a sample's confident class is
``c_i = argmax_{j : p~_i(j) >= t_j} p~_i(j)`` (none when no class reaches its
threshold; ``>=`` allows cleanlab's 1e-6 for rounding). :func:`label_issues`
flags ``c_i != y_i`` (the off-diagonal of cleanlab's confident joint, its
``filter_by="confident_learning"``) and suggests ``c_i``.

Scores (``method=``; higher means more likely a wrong label):

- ``"margin"`` (default), a noise-aware logit margin::

      score_i = max_{j != y_i} [log w[y_i, j] + log p~_i(j)] - log p~_i(y_i)

  ``w[y, j]`` measures how often label errors of class ``j`` land on ``y``.
  From the confident joint's off-diagonal counts ``n[y, j] = #{i : y_i = y,
  c_i = j}`` (``j != y``, ``n_j = sum_y n[y, j]``)::

      w[y, j] = (C - 1) (n[y, j] + beta / (C - 1)) / (n_j + beta)

  i.e. ``C - 1`` times the posterior mean of a Dirichlet-multinomial whose
  prior is uniform over the ``C - 1`` wrong labels, with the concentration
  ``beta`` fitted by maximum marginal likelihood (empirical Bayes). Under
  uniform noise ``beta`` comes out large, ``w ~ 1`` and the score is the plain
  logit margin ``max_{j != y} z_j - z_y`` (the negated margin of Pleiss et al.,
  "Area Under the Margin", 2020). Under class-conditional noise (class ``j``
  is mislabelled as one particular ``pi(j)``) ``beta`` comes out small and the
  score approximates the posterior log-odds ``log P(true = j | x, y) -
  log P(true = y | x, y)`` with the noise transition ``T[j -> y]`` taken
  proportional to ``w[y, j]`` and ``p~`` standing in for the clean posterior. Range: all reals; ``> 0`` when another class is preferred. It
  is not squashed into ``[0, 1]``: a sigmoid saturates near 37 nats and would
  tie the most confident mistakes of an over-confident model.
- ``"self_confidence"``: ``1 - p~(y)``, range ``[0, 1]``; cleanlab's
  ``self_confidence`` quality score, flipped.
- ``"fiftyone"``: FiftyOne Brain's ``(s c + 1) / 2`` with ``s = -1`` when
  ``argmax p~ = y`` and ``+1`` otherwise, and ``c = exp(-H(p~))``; range
  ``[0, 1]``.
- ``"fiftyone_confidence"``: the same with ``c = max_j p~(j)`` (FiftyOne's
  score when only a confidence is known).

Why this score. Self-confidence ranks by ``p(y)`` alone; the margin also asks
how strongly one specific other class is preferred, which is what a flipped
label looks like, and the weights ``w`` tell which other classes errors
actually come from. Measured with ``bench/label_quality.py`` (digits, 5-fold
logistic-regression logits): under 20% uniform flips it beats cleanlab's
self-confidence and normalized margin in AUROC and precision@k on each of 5
seeds; under class-conditional flips it gains 2-4 AUROC points over both;
under 40% noise and with MLP or kNN-classifier logits its AUROC is at least
cleanlab's best; with an over-confident model (logistic regression on
unscaled pixels) it ties self-confidence (within 0.001 AUROC). With
neighbours, on all 19 variants of the bench (uniform 10/20/40%, confusable-pair
and class-conditional flips; logistic-regression, MLP and kNN-classifier
logits) the mixed score is at least the logits-only score in AUROC and
precision@k: the fitted ``w`` follows what the neighbours add to the logits'
likelihood of the given labels (0.37 under 40% noise, 0.99 with kNN-classifier
probabilities, whose hard zeros the vote's pseudo-count repairs). Neighbour
votes bring what the logits lack (a flipped sample's neighbours keep its true
class); mixing them into the posterior, not adding a separate term, keeps
every scorer and :func:`label_issues` usable with and without neighbours.

Detection
=========

Per sample, ground-truth and predicted boxes (``[x, y, w, h]``, relative
coordinates) are matched as in COCO evaluation, class-agnostic: predictions in
decreasing confidence order each take the still-unmatched ground-truth box of
highest IoU, if that IoU is ``>= iou_threshold``. Per matched ground-truth
object, with ``c`` the prediction's confidence (or ``exp(-H(softmax(logits)))``
when it has logits), ``s = -1`` if the class names agree and ``+1`` otherwise,
and ``u = (1 - IoU) / (1 - iou_threshold)`` in ``[0, 1]``::

    mistakenness     = (s c + 1) / 2           in [0, 1]
    mistakenness_loc = (c (2u - 1) + 1) / 2    in [0, 1]

(FiftyOne Brain's formulas: a confident prediction pulls the score towards 1
on disagreement / a loose box and towards 0 on agreement / a tight box; an
unsure one leaves it near 0.5.) An unmatched prediction with confidence
``> missing_confidence`` is ``possible_missing`` (an object the annotators
missed); an unmatched ground-truth object is ``possible_spurious``. Per
sample: the max of each score over matched objects (``-1`` when there are
none, as in FiftyOne, so it sorts last) and the two counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import gammaln

from brain.methods.hardness import entropy, log_softmax, validate_logits

__all__ = [
    "DetectionMistakenness",
    "Detections",
    "LabelIssues",
    "classification",
    "detection",
    "iou_matrix",
    "label_issues",
]


# --------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------

_Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (log p~, labels) -> score
_THRESHOLD_SLACK = 1e-6  # as cleanlab: a class mean may round above all its equal members
_LOG_BETA_BOUNDS = (-5.0, 15.0)  # Dirichlet concentration: ~0.007 (w follows the counts) to ~3e6 (w = 1)


def _confident_class(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confident learning: per-class thresholds ``t_j`` and each sample's
    confident class (-1 where no class reaches its threshold)."""
    num_classes = probs.shape[1]
    sums = np.bincount(labels, weights=probs[np.arange(len(labels)), labels], minlength=num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        thresholds = np.where(counts > 0, sums / counts, np.inf)
    confident = np.where(probs >= thresholds - _THRESHOLD_SLACK, probs, -1.0)
    return thresholds, np.where(confident.max(axis=1) >= 0.0, confident.argmax(axis=1), -1)


def _noise_weights(labels: np.ndarray, confident: np.ndarray, num_classes: int) -> np.ndarray:
    """``w[y, j]``: (C-1) x the estimated share of class-j label errors that
    carry label y, Dirichlet-smoothed towards uniform (w = 1)."""
    errors = (confident >= 0) & (confident != labels)
    counts = np.zeros((num_classes, num_classes))  # [given, confident], zero diagonal
    np.add.at(counts, (labels[errors], confident[errors]), 1.0)
    per_class = counts.sum(axis=0)
    off_diagonal = ~np.eye(num_classes, dtype=bool)

    def neg_log_marginal_likelihood(log_beta: float) -> float:
        beta = np.exp(log_beta)
        alpha = beta / (num_classes - 1)
        cells = np.where(off_diagonal, gammaln(alpha + counts) - gammaln(alpha), 0.0).sum(axis=0)
        return -float((gammaln(beta) - gammaln(beta + per_class) + cells).sum())

    log_beta = minimize_scalar(neg_log_marginal_likelihood, bounds=_LOG_BETA_BOUNDS, method="bounded").x
    beta = np.exp(log_beta)
    return (num_classes - 1) * (counts + beta / (num_classes - 1)) / (per_class + beta)


def _margin(logp: np.ndarray, labels: np.ndarray) -> np.ndarray:
    rows = np.arange(len(labels))
    _, confident = _confident_class(np.exp(logp), labels)
    competitors = logp + np.log(_noise_weights(labels, confident, logp.shape[1]))[labels]
    competitors[rows, labels] = -np.inf
    return competitors.max(axis=1) - logp[rows, labels]


def _self_confidence(logp: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return 1.0 - np.exp(logp[np.arange(len(labels)), labels])


def _fiftyone(confidence: Callable[[np.ndarray], np.ndarray]) -> _Scorer:
    def score(logp: np.ndarray, labels: np.ndarray) -> np.ndarray:
        sign = np.where(logp.argmax(axis=1) == labels, -1.0, 1.0)
        return (sign * confidence(logp) + 1.0) / 2.0

    return score


_SCORERS: dict[str, _Scorer] = {
    "margin": _margin,
    "self_confidence": _self_confidence,
    "fiftyone": _fiftyone(lambda logp: np.exp(-entropy(logp))),
    "fiftyone_confidence": _fiftyone(lambda logp: np.exp(logp.max(axis=1))),
}


def _validate_labels(labels: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"labels must have shape ({n},) to match logits; got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers; got dtype {arr.dtype}")
    bad = np.flatnonzero((arr < 0) | (arr >= num_classes))
    if len(bad):
        raise ValueError(
            f"labels row {bad[0]} is {arr[bad[0]]}, outside [0, {num_classes}) "
            f"(logits have {num_classes} columns; {len(bad)} labels out of range)"
        )
    return arr.astype(np.intp, copy=False)


def _validate_knn(knn_indices: np.ndarray, n: int) -> np.ndarray:
    arr = np.asarray(knn_indices)
    if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] < 1:
        raise ValueError(f"knn_indices must have shape ({n}, k) with k >= 1; got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"knn_indices must be integers; got dtype {arr.dtype}")
    bad = np.argwhere((arr < -1) | (arr >= n))
    if len(bad):
        row, col = bad[0]
        raise ValueError(
            f"knn_indices row {row} column {col} is {arr[row, col]}, outside [0, {n}) "
            "(-1 marks a missing neighbour)"
        )
    own = np.flatnonzero((arr == np.arange(n)[:, None]).any(axis=1))
    if len(own):
        raise ValueError(f"knn_indices row {own[0]} lists the sample itself; exclude self")
    return arr


def _neighbor_vote(knn: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``q_i(j)``: label counts of the valid neighbours plus one uniform pseudo-neighbour."""
    valid = knn >= 0
    counts = np.zeros((len(knn), num_classes))
    rows = np.repeat(np.arange(len(knn)), knn.shape[1])[valid.ravel()]
    np.add.at(counts, (rows, labels[knn[valid]]), 1.0)
    return (counts + 1.0 / num_classes) / (valid.sum(axis=1, keepdims=True) + 1.0)


def _fit_knn_weight(logp_given: np.ndarray, logq_given: np.ndarray) -> float:
    """Maximum-likelihood neighbour weight ``w``: maximizes ``sum log p~(y)``."""

    def neg_log_likelihood(w: float) -> float:
        with np.errstate(divide="ignore"):
            mix = np.logaddexp(np.log1p(-w) + logp_given, np.log(w) + logq_given)
        return -float(mix.sum())

    return float(minimize_scalar(neg_log_likelihood, bounds=(0.0, 1.0), method="bounded").x)


def _posterior(
    logits: np.ndarray,
    labels: np.ndarray,
    knn_indices: np.ndarray | None,
    knn_weight: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate the inputs; return ``(log p~, labels)``."""
    logits = validate_logits(logits)
    n, num_classes = logits.shape
    labels = _validate_labels(labels, n, num_classes)
    logp = log_softmax(logits)
    if knn_indices is None:
        return logp, labels
    if knn_weight is not None and not 0.0 <= knn_weight <= 1.0:
        raise ValueError(f"knn_weight must be in [0, 1] or None; got {knn_weight}")
    logq = np.log(_neighbor_vote(_validate_knn(knn_indices, n), labels, num_classes))
    rows = np.arange(n)
    if knn_weight is None:
        knn_weight = _fit_knn_weight(logp[rows, labels], logq[rows, labels])
    with np.errstate(divide="ignore"):
        return np.logaddexp(np.log1p(-knn_weight) + logp, np.log(knn_weight) + logq), labels


def classification(
    logits: np.ndarray,
    labels: np.ndarray,
    knn_indices: np.ndarray | None = None,
    *,
    method: str = "margin",
    knn_weight: float | None = None,
) -> np.ndarray:
    """Score each sample's given label; higher means more likely wrong.

    Parameters
    ----------
    logits : ndarray of shape (N, C)
        Out-of-sample model logits (log-probabilities work too). Finite.
    labels : ndarray of shape (N,), int
        Given labels in ``0..C-1``.
    knn_indices : ndarray of shape (N, k), int, optional
        Each sample's nearest neighbours in embedding space, self excluded;
        ``-1`` marks a missing neighbour. Their labels are mixed into the
        posterior (see the module docstring).
    method : {"margin", "self_confidence", "fiftyone", "fiftyone_confidence"}
        Scorer; see the module docstring for formulas and ranges.
    knn_weight : float in [0, 1], optional
        Weight ``w`` of the neighbour vote; by default fitted by maximum
        likelihood. Ignored without ``knn_indices``.

    Returns
    -------
    ndarray of shape (N,), float64

    Raises
    ------
    ValueError
        On a bad shape, dtype or value (the message names the field and row),
        or an unknown ``method``.
    """
    try:
        scorer = _SCORERS[method]
    except KeyError:
        raise ValueError(f"method must be one of {sorted(_SCORERS)}; got {method!r}") from None
    logp, labels = _posterior(logits, labels, knn_indices, knn_weight)
    return scorer(logp, labels)


@dataclass(frozen=True)
class LabelIssues:
    """Result of :func:`label_issues`.

    Attributes
    ----------
    is_issue : ndarray of shape (N,), bool
        The sample's confident class exists and differs from its given label.
    suggested_label : ndarray of shape (N,), int
        The confident class where ``is_issue``, else the given label.
    thresholds : ndarray of shape (C,), float
        Per-class thresholds ``t_j`` (``inf`` for a class no sample carries).
    """

    is_issue: np.ndarray
    suggested_label: np.ndarray
    thresholds: np.ndarray


def label_issues(
    logits: np.ndarray,
    labels: np.ndarray,
    knn_indices: np.ndarray | None = None,
    *,
    knn_weight: float | None = None,
) -> LabelIssues:
    """Flag label issues with confident learning's per-class thresholds.

    Inputs as in :func:`classification`. ``t_j`` is the mean of ``p~(j)`` over
    the samples labelled ``j``; a sample is an issue when its most probable
    class among those reaching their threshold is not its given label.
    """
    logp, labels = _posterior(logits, labels, knn_indices, knn_weight)
    thresholds, confident = _confident_class(np.exp(logp), labels)
    is_issue = (confident >= 0) & (confident != labels)
    return LabelIssues(is_issue, np.where(is_issue, confident, labels), thresholds)


# --------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------


def _validate_boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be an (n, 4) array of numbers: {err}") from None
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (n, 4) as [x, y, w, h]; got {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1) | (arr[:, 2:] < 0).any(axis=1))
    if len(bad):
        raise ValueError(f"{name} row {bad[0]} is {arr[bad[0]].tolist()}; need finite values, w >= 0, h >= 0")
    return arr


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``[x, y, w, h]`` boxes: ``(n, 4), (m, 4) -> (n, m)``.

    IoU = area(A and B) / area(A or B), in ``[0, 1]``; 0 where both boxes have
    zero area. Either input may be empty.
    """
    a = _validate_boxes(boxes_a, "boxes_a")[:, None, :]
    b = _validate_boxes(boxes_b, "boxes_b")[None, :, :]
    width = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    height = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.clip(width, 0.0, None) * np.clip(height, 0.0, None)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@dataclass(frozen=True)
class Detections:
    """The objects of one sample (image).

    Attributes
    ----------
    boxes : ndarray of shape (n, 4)
        ``[x, y, w, h]`` in relative coordinates; ``n`` may be 0.
    labels : sequence of n str
        Class names, each one of ``classes`` given to :func:`detection`.
    confidence : ndarray of shape (n,), optional
        Required for predictions (matching order, missing objects); ignored
        for ground truth.
    logits : ndarray of shape (n, len(classes)), optional
        Per-prediction class logits; when given, ``c = exp(-entropy)`` replaces
        ``confidence`` in ``mistakenness`` and ``mistakenness_loc`` (FiftyOne's
        ``use_logits``); matching and ``possible_missing`` still use
        ``confidence``.
    """

    boxes: np.ndarray
    labels: Sequence[str]
    confidence: np.ndarray | None = None
    logits: np.ndarray | None = None


@dataclass(frozen=True)
class DetectionMistakenness:
    """Result of :func:`detection`: per-sample arrays of length N, and per-object
    lists holding one array per sample.

    Attributes
    ----------
    mistakenness, mistakenness_loc : ndarray (N,), float
        Max over the sample's matched ground-truth objects; -1 when none.
    num_missing, num_spurious : ndarray (N,), int
        Counts of ``possible_missing`` predictions / ``possible_spurious``
        ground-truth objects.
    gt_mistakenness, gt_mistakenness_loc : list of ndarray (n_i,), float
        Per ground-truth object; -1 where unmatched.
    gt_iou : list of ndarray (n_i,), float
        IoU with the matched prediction; 0 where unmatched.
    gt_match : list of ndarray (n_i,), int
        Index of the matched prediction in the sample; -1 where unmatched.
    possible_spurious : list of ndarray (n_i,), bool
        Per ground-truth object: no prediction matched it.
    possible_missing : list of ndarray (m_i,), bool
        Per prediction: unmatched and confidence > ``missing_confidence``.
    """

    mistakenness: np.ndarray
    mistakenness_loc: np.ndarray
    num_missing: np.ndarray
    num_spurious: np.ndarray
    gt_mistakenness: list[np.ndarray]
    gt_mistakenness_loc: list[np.ndarray]
    gt_iou: list[np.ndarray]
    gt_match: list[np.ndarray]
    possible_spurious: list[np.ndarray]
    possible_missing: list[np.ndarray]


def _validate_detections(
    dets: Detections, name: str, classes: set[str], num_classes: int, is_pred: bool
) -> tuple[np.ndarray, list[str], np.ndarray | None, np.ndarray | None]:
    boxes = _validate_boxes(dets.boxes, f"{name}.boxes")
    n = len(boxes)
    labels = list(dets.labels)
    if len(labels) != n:
        raise ValueError(f"{name}.labels has {len(labels)} entries but {name}.boxes has {n} rows")
    for j, label in enumerate(labels):
        if label not in classes:
            raise ValueError(f"{name}.labels[{j}] = {label!r} is not one of the classes")
    if not is_pred:
        return boxes, labels, None, None
    if dets.confidence is None:
        raise ValueError(f"{name}.confidence is required for predictions")
    conf = np.asarray(dets.confidence, dtype=np.float64).reshape(-1)
    if len(conf) != n:
        raise ValueError(f"{name}.confidence has {len(conf)} entries but {name}.boxes has {n} rows")
    bad = np.flatnonzero(~((conf >= 0.0) & (conf <= 1.0)))
    if len(bad):
        raise ValueError(f"{name}.confidence[{bad[0]}] is {conf[bad[0]]}, outside [0, 1]")
    logits = None
    if dets.logits is not None:
        logits = np.asarray(dets.logits, dtype=np.float64)
        if logits.size == 0 and n == 0:
            logits = logits.reshape(0, num_classes)
        if logits.shape != (n, num_classes):
            raise ValueError(f"{name}.logits must have shape ({n}, {num_classes}); got {logits.shape}")
        logits = validate_logits(logits, name=f"{name}.logits")
    return boxes, labels, conf, logits


def _match(iou: np.ndarray, conf: np.ndarray, iou_threshold: float) -> np.ndarray:
    """COCO-style greedy matching; ``iou`` is (preds, gts). Returns the matched
    prediction of each ground-truth object, -1 if none."""
    gt_match = np.full(iou.shape[1], -1, dtype=np.intp)
    free = np.ones(iou.shape[1], dtype=bool)
    for p in np.argsort(-conf, kind="stable"):
        candidates = np.where(free, iou[p], -1.0)
        if len(candidates) and candidates.max() >= iou_threshold:
            g = int(candidates.argmax())
            gt_match[g] = p
            free[g] = False
    return gt_match


def _score_sample(
    gt_boxes: np.ndarray,
    gt_labels: list[str],
    boxes: np.ndarray,
    labels: list[str],
    conf: np.ndarray,
    logits: np.ndarray | None,
    iou_threshold: float,
    missing_confidence: float,
) -> tuple[np.ndarray, ...]:
    """One sample's per-object (mistakenness, mistakenness_loc, iou, match,
    spurious) over ground truth and (missing) over predictions."""
    iou = iou_matrix(boxes, gt_boxes)
    gt_match = _match(iou, conf, iou_threshold)
    gts = np.flatnonzero(gt_match >= 0)
    preds = gt_match[gts]
    c = (conf if logits is None else np.exp(-entropy(log_softmax(logits))))[preds]
    sign = np.array([1.0 if labels[p] != gt_labels[g] else -1.0 for g, p in zip(gts, preds, strict=True)])
    gt_iou = np.zeros(len(gt_boxes))
    gt_iou[gts] = iou[preds, gts]
    u = (1.0 - gt_iou[gts]) / (1.0 - iou_threshold)
    mistakenness = np.full(len(gt_boxes), -1.0)
    mistakenness_loc = np.full(len(gt_boxes), -1.0)
    mistakenness[gts] = (sign * c + 1.0) / 2.0
    mistakenness_loc[gts] = (c * (2.0 * u - 1.0) + 1.0) / 2.0
    unmatched_pred = np.ones(len(boxes), dtype=bool)
    unmatched_pred[preds] = False
    return (
        mistakenness,
        mistakenness_loc,
        gt_iou,
        gt_match,
        gt_match < 0,
        unmatched_pred & (conf > missing_confidence),
    )


def detection(
    ground_truth: Sequence[Detections],
    predictions: Sequence[Detections],
    *,
    classes: Sequence[str],
    iou_threshold: float = 0.5,
    missing_confidence: float = 0.95,
) -> DetectionMistakenness:
    """Detection mistakenness, possibly missing and possibly spurious objects.

    Parameters
    ----------
    ground_truth, predictions : sequence of Detections, one per sample
        Same length N. Samples may have no objects (``boxes`` of shape
        ``(0, 4)``, empty ``labels``). Predictions need ``confidence``.
    classes : sequence of str
        The class vocabulary; every label must be in it, and ``logits``
        columns follow its order.
    iou_threshold : float in (0, 1)
        Minimum IoU of a match (COCO's 0.5 by default).
    missing_confidence : float in [0, 1]
        An unmatched prediction above this confidence is ``possible_missing``
        (FiftyOne's 0.95).

    Returns
    -------
    DetectionMistakenness
        Formulas in the module docstring. A sample without ground-truth
        objects has mistakenness -1 and counts only its confident
        predictions as missing; one without predictions has every
        ground-truth object spurious.

    Raises
    ------
    ValueError
        On mismatched lengths or shapes, unknown class names, missing or
        out-of-range confidences, non-finite logits or boxes; the message
        names the field, e.g. ``predictions[3].labels[1]``.
    """
    if len(ground_truth) != len(predictions):
        raise ValueError(
            f"ground_truth has {len(ground_truth)} samples but predictions has {len(predictions)}"
        )
    if not 0.0 < iou_threshold < 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1); got {iou_threshold}")
    if not 0.0 <= missing_confidence <= 1.0:
        raise ValueError(f"missing_confidence must be in [0, 1]; got {missing_confidence}")
    vocabulary = set(classes)
    samples = [
        (
            _validate_detections(gt, f"ground_truth[{i}]", vocabulary, len(classes), False),
            _validate_detections(pred, f"predictions[{i}]", vocabulary, len(classes), True),
        )
        for i, (gt, pred) in enumerate(zip(ground_truth, predictions, strict=True))
    ]

    scored = [
        _score_sample(gt_boxes, gt_labels, *pred, iou_threshold, missing_confidence)
        for (gt_boxes, gt_labels, _, _), pred in samples
    ]
    columns = ([sample[i] for sample in scored] for i in range(6))
    mistakenness, mistakenness_loc, gt_iou, gt_match, spurious, missing = columns
    return DetectionMistakenness(
        mistakenness=np.array([m.max(initial=-1.0) for m in mistakenness]),
        mistakenness_loc=np.array([m.max(initial=-1.0) for m in mistakenness_loc]),
        num_missing=np.array([m.sum() for m in missing], dtype=np.int64),
        num_spurious=np.array([s.sum() for s in spurious], dtype=np.int64),
        gt_mistakenness=mistakenness,
        gt_mistakenness_loc=mistakenness_loc,
        gt_iou=gt_iou,
        gt_match=gt_match,
        possible_spurious=spurious,
        possible_missing=missing,
    )
