"""A predictions run's logits for one dataset's samples, checked: what hardness and mistakenness score."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from brain import runs
from brain.lake import Lake, plain_strings
from brain.vectors import to_matrix


@dataclass
class ScoredSet:
    """The predictions of one run for one dataset's labelled samples, as arrays."""

    sample_ids: list[str]
    labels: list[str | None]
    logits: np.ndarray  # [N, C]
    classes: list[str]
    run_id: str  # the predictions run they come from


def read_predictions(lake: Lake, predictions_key: str, dataset: str) -> ScoredSet:
    run = runs.latest_succeeded(lake, predictions_key)
    try:
        classes = json.loads(lake.read_artifact(run["run_id"], "classes.json"))
    except FileNotFoundError:
        raise ValueError(f"predictions run {predictions_key!r} has no classes.json: it holds no class logits "
                         f"(a detector's, or stored without store_logits)") from None
    preds = lake.read("predictions", columns=["sample_id", "logits"], filter=pc.field("run_id") == run["run_id"])
    samples = lake.read("samples", columns=["sample_id", "label"], filter=pc.field("dataset") == dataset)
    # Arrow's hash join cannot carry list columns: select by membership, then look labels up.
    preds = plain_strings(preds)
    joined = preds.filter(pc.is_in(preds["sample_id"], plain_strings(samples)["sample_id"])).sort_by("sample_id")
    if joined.num_rows == 0:
        raise ValueError(f"predictions run {predictions_key!r} has no rows for dataset {dataset!r}")
    ids = joined["sample_id"].to_pylist()
    label_of = dict(zip(samples["sample_id"].to_pylist(), samples["label"].to_pylist()))
    missing = pc.is_null(joined["logits"]).to_numpy(zero_copy_only=False)
    if missing.any():
        raise ValueError(f"predictions run {predictions_key!r}: field 'logits' is missing for sample "
                         f"{ids[int(np.flatnonzero(missing)[0])]} (store predictions with store_logits)")
    matrix = to_matrix(joined["logits"], ids, what="row of logits", width=len(classes),
                       context=f"predictions run {predictions_key!r} ({len(classes)} classes)")
    return ScoredSet(ids, [label_of[i] for i in ids], matrix, list(classes), run["run_id"])
