"""Embeddings and predictions you already have: read them and check them against the dataset's samples.

Sources: a Parquet file (an id column and a list<float> vector column), a NumPy ``.npz``
(arrays ``sample_id`` and ``vector``), a ``.npy`` [N, D] array with an ids file (one
sample id per line, same order), or a column of ``samples`` (a list<float> column, or a
field of the ``attributes`` JSON holding a list of numbers). Predictions: see
:func:`read_predictions_file` and :func:`check_predictions`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from brain.vectors import to_list_array
from brain.vectors import to_matrix as to_arrow_matrix


def read_vector_file(path: str | Path, *, ids_path: str | Path | None = None, id_column: str = "sample_id",
                     vector_column: str = "vector") -> tuple[list[str], np.ndarray]:
    """(sample ids, float32 [N, D]) from a Parquet, .npz or .npy (+ ids file) file."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embeddings file not found: {path}")
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        for name in (id_column, vector_column):
            if name not in table.column_names:
                raise ValueError(f"{path}: no column {name!r} (columns: {table.column_names})")
        ids = [str(v) for v in table[id_column].to_pylist()]
        return ids, to_matrix(table[vector_column].to_pylist(), ids)
    if path.suffix == ".npz":
        data = np.load(path, allow_pickle=False)
        for name in ("sample_id", "vector"):
            if name not in data:
                raise ValueError(f"{path}: no array {name!r} (arrays: {list(data)})")
        ids = [str(v) for v in data["sample_id"]]
        return ids, to_matrix(data["vector"], ids)
    if path.suffix == ".npy":
        if ids_path is None:
            raise ValueError(f"{path}: a .npy file holds no sample ids: give an ids file (one sample id per line)")
        ids = [line.strip() for line in Path(ids_path).read_text().splitlines() if line.strip()]
        return ids, to_matrix(np.load(path, allow_pickle=False), ids)
    raise ValueError(f"{path}: expected a .parquet, .npz or .npy file")


def vectors_from_attributes(attributes: Sequence[str | None], field: str, ids: Sequence[str]) -> np.ndarray:
    values = []
    for sample_id, text in zip(ids, attributes):
        value = json.loads(text).get(field) if text else None
        if isinstance(value, str):
            value = json.loads(value)
        values.append(value)
    return to_matrix(values, ids)


def to_matrix(vectors, ids: Sequence[str]) -> np.ndarray:
    """Rows (an [N, D] array or N lists) → float32 [N, D]; a missing, ragged or non-finite row is named by its
    sample id, a vector that cannot be normalised (norm overflowing float32) too."""
    if isinstance(vectors, np.ndarray) and vectors.dtype != object:
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be a 2-D array [samples, dimensions], got shape {vectors.shape}")
        matrix = vectors
    else:
        try:
            column = pa.array(list(vectors), pa.list_(pa.float64()))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as err:
            raise ValueError(f"vectors must be lists of numbers: {err}") from None
        if len(column) != len(ids):
            raise ValueError(f"{len(column)} vectors but {len(ids)} sample ids")
        matrix = to_arrow_matrix(column, ids)
    if len(matrix) != len(ids):
        raise ValueError(f"{len(matrix)} vectors but {len(ids)} sample ids")
    if matrix.shape[1] == 0:
        raise ValueError("vectors have no values (dimension 0)")
    to_list_array(matrix, ids)  # NaN, inf and overflowing norms, named by sample
    return matrix.astype(np.float32)


def check_ids(ids: Sequence[str], known: set[str], *, dataset: str, what: str = "the embeddings") -> None:
    seen = set()
    for sample_id in ids:
        if sample_id in seen:
            raise ValueError(f"sample {sample_id}: appears twice in {what}")
        seen.add(sample_id)
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise ValueError(f"sample {unknown[0]}: not a sample of dataset {dataset!r} "
                         f"({len(unknown)} of {len(ids)} ids unknown; ids must be the lake's sample_id)")


PREDICTION_COLUMNS = ("label", "confidence", "logits", "detections")


def read_predictions_file(path: str | Path, *, ids_path: str | Path | None = None,
                          id_column: str = "sample_id") -> pa.Table:
    """A table of predictions from a Parquet or CSV file, or a ``.npy`` of logits [N, C] with an ids file.

    Columns used: the id column (sample ids or uris), and any of ``label``, ``confidence``,
    ``logits`` (a list of floats; in CSV a JSON list) and ``detections`` (a list of
    ``{label, bbox: [x, y, w, h] relative, confidence}``; in CSV a JSON list).
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file not found: {path}")
    if path.suffix == ".npy":
        if ids_path is None:
            raise ValueError(f"{path}: a .npy file holds no sample ids: give an ids file (one sample id per line)")
        ids = [line.strip() for line in Path(ids_path).read_text().splitlines() if line.strip()]
        logits = np.load(path, allow_pickle=False)
        if logits.ndim != 2 or len(logits) != len(ids):
            raise ValueError(f"{path}: logits must be [N, C] with one row per id of {ids_path} ({len(ids)}), "
                             f"got shape {logits.shape}")
        return pa.table({id_column: ids, "logits": list(logits.astype(np.float32))})
    if path.suffix == ".parquet":
        table = pq.read_table(path)
    elif path.suffix == ".csv":
        table = pacsv.read_csv(path)
        for name in ("logits", "detections"):
            if name in table.column_names:
                texts = table[name].to_pylist()
                table = table.set_column(table.schema.get_field_index(name), name,
                                         pa.array([json.loads(t) if t else None for t in texts]))
    else:
        raise ValueError(f"{path}: expected a .parquet, .csv or .npy file")
    if not set(PREDICTION_COLUMNS) & set(table.column_names):
        raise ValueError(f"{path}: none of the columns {list(PREDICTION_COLUMNS)} (columns: {table.column_names})")
    return table


def check_predictions(table: pa.Table, ids: Sequence[str], classes: Sequence[str] | None):
    """The file's predictions as :class:`~brain.models.Predictions`, checked; errors name the sample.

    Logits need ``classes`` (their order) and must be as wide; a given label must be one of
    ``classes`` when they are known; confidences lie in [0, 1]; boxes are ``[x, y, w, h]`` inside
    the image in relative coordinates. Without a label or confidence column they come from the
    logits (argmax, max softmax) or from the most confident detection, as for a model's predictions.
    """
    from brain.models import Detection, Predictions

    columns = set(table.column_names)
    logits = None
    if "logits" in columns:
        if not classes:
            raise ValueError("the predictions have logits: give their class names in logit order "
                             "(register_predictions.classes or classes_file)")
        logits = to_matrix(table["logits"].to_pylist(), ids)
        if logits.shape[1] != len(classes):
            raise ValueError(f"sample {ids[0]}: {logits.shape[1]} logits, but {len(classes)} class names given")
        preds = Predictions.from_logits(logits, list(classes))
    detections = None
    if "detections" in columns:
        detections = [[_detection(sample_id, d) for d in (dets or [])]
                      for sample_id, dets in zip(ids, table["detections"].to_pylist())]
        preds = Predictions.from_detections([[Detection(**d) for d in dets] for dets in detections])
    if logits is None and detections is None:
        preds = Predictions([None] * len(ids), np.full(len(ids), np.nan, np.float32))  # NaN: stored as null
    labels = table["label"].to_pylist() if "label" in columns else preds.labels
    if "label" in columns and classes:
        known = set(classes)
        for sample_id, label in zip(ids, labels):
            if label is not None and label not in known:
                raise ValueError(f"sample {sample_id}: label {label!r} is not one of the classes {list(classes)}")
    confidence = preds.confidence
    if "confidence" in columns:
        values = table["confidence"].to_pylist()
        for sample_id, value in zip(ids, values):
            if value is not None and not (np.isfinite(value) and 0 <= value <= 1):
                raise ValueError(f"sample {sample_id}: confidence {value} is not in [0, 1]")
        confidence = np.array([np.nan if v is None else v for v in values], np.float32)
    return Predictions([None if v is None else str(v) for v in labels], confidence, logits,
                       preds.detections if detections is not None else None)


def _detection(sample_id: str, value) -> dict:
    if not isinstance(value, dict) or not {"label", "bbox"} <= set(value):
        raise ValueError(f"sample {sample_id}: a detection must be {{label, bbox, confidence}}, got {value!r}")
    bbox = value["bbox"]
    if (bbox is None or len(bbox) != 4 or not np.isfinite(bbox).all() or min(bbox) < 0
            or bbox[0] + bbox[2] > 1 + 1e-6 or bbox[1] + bbox[3] > 1 + 1e-6):
        raise ValueError(f"sample {sample_id}: bbox {bbox} of {value['label']!r} must be [x, y, w, h] relative "
                         "to the image, inside [0, 1]")
    confidence = 1.0 if value.get("confidence") is None else float(value["confidence"])
    if not (np.isfinite(confidence) and 0 <= confidence <= 1):
        raise ValueError(f"sample {sample_id}: detection {value['label']!r} has confidence {confidence}, not in [0, 1]")
    return dict(label=str(value["label"]), bbox=tuple(float(v) for v in bbox), confidence=confidence)


def resolve_ids(keys: Sequence[str], *, by: str, samples: pa.Table, dataset: str) -> list[str]:
    """Sample ids of ``keys``: themselves (``by="sample_id"``), or the samples with those uris (``by="uri"``)."""
    if by == "sample_id":
        return [str(k) for k in keys]
    id_of = dict(zip(samples["uri"].to_pylist(), samples["sample_id"].to_pylist()))
    missing = [k for k in keys if k not in id_of]
    if missing:
        raise ValueError(f"uri {missing[0]}: not a sample of dataset {dataset!r} ({len(missing)} of {len(keys)} "
                         "uris unknown)")
    return [id_of[k] for k in keys]
