"""What a run produced, read back: ``load_results(lake, key)`` for every kind of run.

FiftyOne's ``dataset.load_brain_results(key)`` returns a results object per method;
here a loader per run method (:data:`LOADERS`) returns

* one Arrow table: the run's rows of its result table (uniqueness, hardness,
  duplicates, unique, leaks, visualization, comparison, embeddings, similarity views);
* a dict ``{table: rows}`` for a method that writes several tables (mistakenness with
  its per-class and confusion tables, detection mistakenness);
* a small result object where rows alone would lose part of the result:
  :class:`PredictionsResults` (rows and the class order of the logits),
  :class:`FamiliarityResults` (scores, extremes, the reloaded density model);
* the FAISS index shards of a kNN (``neighbors``) run.

Add an entry to :data:`LOADERS` for a new method.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyarrow as pa
from pyarrow.dataset import field as pads_field

from brain import runs
from brain.lake import Lake

FAMILIARITY_MODEL_ARTIFACT = "familiarity.npz"  # the fitted density model (brain.methods.familiarity, no pickle)
FAMILIARITY_FIT_SCORES_ARTIFACT = "fit_scores.npy"  # sorted scores of the fit sample, for percentiles
CLASSES_ARTIFACT = "classes.json"  # class names of a predictions run, in logit order


@dataclass(frozen=True)
class PredictionsResults:
    rows: pa.Table  # `predictions` rows of the run
    classes: list[str] | None  # logit order; None for runs stored without logits


@dataclass(frozen=True)
class FamiliarityResults:
    scores: pa.Table  # `familiarity` rows
    extremes: pa.Table  # `familiarity_extremes` rows
    model: Any  # brain.methods.familiarity.FamiliarityModel, reloaded from the run's artifact
    fit_scores: np.ndarray  # sorted scores of the fit sample


def run_rows(lake: Lake, table: str, run_id: str) -> pa.Table:
    """The rows of ``table`` that run ``run_id`` wrote."""
    return lake.read(table, filter=pads_field("run_id") == run_id)


def _rows_of(table: str) -> Callable[[Lake, dict[str, Any]], pa.Table]:
    def load(lake: Lake, run: dict[str, Any]) -> pa.Table:
        return run_rows(lake, table, run["run_id"])
    return load


def _tables_of(*tables: str) -> Callable[[Lake, dict[str, Any]], dict[str, pa.Table]]:
    def load(lake: Lake, run: dict[str, Any]) -> dict[str, pa.Table]:
        return {table: run_rows(lake, table, run["run_id"]) for table in tables if lake.exists(table)}
    return load


def faiss_index(lake: Lake, run: dict[str, Any]) -> list:
    """A kNN run's index shards (``index-<i>.faiss``, as many as ``index.json`` says); search them
    together with :func:`brain.index.search`."""
    from brain import index

    meta = json.loads(lake.read_artifact(run["run_id"], "index.json"))
    return [index.deserialize(np.frombuffer(lake.read_artifact(run["run_id"], f"index-{i}.faiss"), dtype=np.uint8))
            for i in range(meta["shards"])]


def predictions_classes(lake: Lake, run_id: str) -> list[str] | None:
    try:
        return json.loads(lake.read_artifact(run_id, CLASSES_ARTIFACT))
    except FileNotFoundError:
        return None


def _predictions(lake: Lake, run: dict[str, Any]) -> PredictionsResults:
    return PredictionsResults(run_rows(lake, "predictions", run["run_id"]), predictions_classes(lake, run["run_id"]))


def familiarity_model(lake: Lake, run_id: str):
    """A familiarity run's model and sorted fit-sample scores, from its artifacts."""
    from brain.methods.familiarity import FamiliarityModel

    model = FamiliarityModel.load(io.BytesIO(lake.read_artifact(run_id, FAMILIARITY_MODEL_ARTIFACT)))
    fit_scores = np.load(io.BytesIO(lake.read_artifact(run_id, FAMILIARITY_FIT_SCORES_ARTIFACT)), allow_pickle=False)
    return model, fit_scores


def _familiarity(lake: Lake, run: dict[str, Any]) -> FamiliarityResults:
    model, fit_scores = familiarity_model(lake, run["run_id"])
    return FamiliarityResults(run_rows(lake, "familiarity", run["run_id"]),
                              run_rows(lake, "familiarity_extremes", run["run_id"]), model, fit_scores)


# What load_results returns, by run method.
LOADERS: dict[str, Callable[[Lake, dict[str, Any]], Any]] = {
    "embeddings": _rows_of("embeddings"),
    "patch_embeddings": _rows_of("patch_embeddings"),
    "neighbors": faiss_index,
    "uniqueness": _rows_of("uniqueness"),
    "duplicates_near": _rows_of("duplicates"),
    "duplicates_exact": _rows_of("duplicates"),
    "unique": _rows_of("unique"),
    "leaks": _rows_of("leaks"),
    "hardness": _rows_of("hardness"),
    "mistakenness": _tables_of("mistakenness", "label_quality_classes", "label_confusion"),
    "detection_mistakenness": _tables_of("detection_mistakenness", "detection_objects", "detection_labels"),
    "predictions": _predictions,
    "familiarity": _familiarity,
    "visualization": _rows_of("visualization"),
    "comparison": _rows_of("familiarity_comparison"),
    "similarity_view": _rows_of("similarity_views"),
}


def load_results(lake: Lake, key: str) -> Any:
    """The outputs of ``key``'s current run (or of the run with that id); see :data:`LOADERS`."""
    run = runs.readable_run(lake, key)
    if run["status"] not in ("succeeded", "superseded") or run["purged_at"] is not None:
        raise ValueError(f"run {run['run_id']} ({key!r}) is {run['status']}: it has no results to load")
    try:
        loader = LOADERS[run["method"]]
    except KeyError:
        raise ValueError(f"run {key!r} is a {run['method']!r} run, which stores no results to load; "
                         f"loadable methods: {sorted(LOADERS)}") from None
    return loader(lake, run)
