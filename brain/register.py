"""Embeddings you already have: read precomputed vectors and check them against the dataset's samples.

Sources: a Parquet file (an id column and a list<float> vector column), a NumPy ``.npz``
(arrays ``sample_id`` and ``vector``), a ``.npy`` [N, D] array with an ids file (one
sample id per line, same order), or a column of ``samples`` (a list<float> column, or a
field of the ``attributes`` JSON holding a list of numbers).
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


def check_ids(ids: Sequence[str], known: set[str], *, dataset: str) -> None:
    seen = set()
    for sample_id in ids:
        if sample_id in seen:
            raise ValueError(f"sample {sample_id}: appears twice in the embeddings")
        seen.add(sample_id)
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise ValueError(f"sample {unknown[0]}: not a sample of dataset {dataset!r} "
                         f"({len(unknown)} of {len(ids)} ids unknown; ids must be the lake's sample_id)")
