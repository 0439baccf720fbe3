"""Similarity queries against a kNN run's saved index: the k samples nearest (or farthest) to a query.

``similar(lake, key, sample_id=… | vector=…, k=15, reverse=False, where=None)``:

* the query is a sample's embedding (from the embeddings run the kNN run indexed;
  the sample itself is left out of the results) or a given vector;
* plain queries search the run's saved FAISS index shards (``index-<i>.faiss``,
  reloaded; approximate for IVF, with the recall recorded in the run's metrics);
* ``where`` (a SQL condition over ``samples``, run by DuckDB) restricts the
  results to that subset, and ``reverse`` returns the farthest samples: both are
  computed exactly over the subset's vectors (an IVF index cannot answer
  "farthest", and a filtered IVF probe may find fewer than k of a small subset).

Returns an Arrow table (sample_id, distance), nearest first (farthest first when
``reverse``). Distances are in the kNN run's metric (cosine: 1 − cos).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from brain import index as knn_index
from brain import runs
from brain.lake import Lake, plain_strings
from brain.sql_expr import UnsafeSQLError, check_condition, rows_where
from brain.vectors import to_matrix


def _embeddings(lake: Lake, run_id: str, sample_ids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    flt = pc.field("run_id") == run_id
    if sample_ids is not None:
        flt &= pc.field("sample_id").isin(sample_ids)
    table = plain_strings(lake.read("embeddings", columns=["sample_id", "vector"], filter=flt))
    if table.num_rows == 0:
        return [], np.zeros((0, 0), np.float32)
    return table["sample_id"].to_pylist(), to_matrix(table["vector"], table["sample_id"],
                                                     context=f"embeddings run {run_id}", dtype=np.float32)


def _where(lake: Lake, where: str) -> list[str]:
    """Sample ids matching a SQL condition over ``samples``."""
    try:
        return rows_where(lake, "samples", where, columns="sample_id", what="--where")["sample_id"].to_pylist()
    except UnsafeSQLError:
        raise
    except ValueError as err:
        raise ValueError(f"--where {where!r} is not a valid condition over samples: {err}") from None


def similar(lake: Lake, key: str, *, sample_id: str | None = None, vector: np.ndarray | None = None, k: int = 15,
            reverse: bool = False, where: str | None = None) -> pa.Table:
    """The ``k`` samples most similar to the query (least similar when ``reverse``); see the module docstring."""
    if (sample_id is None) == (vector is None):
        raise ValueError("give exactly one of sample_id or vector")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if where is not None:
        where = check_condition(where, what="--where")  # refused before anything is read
    if vector is not None:
        vector = np.asarray(vector, dtype=np.float64)
        if vector.ndim > 2 or (vector.ndim == 2 and vector.shape[0] != 1) or not np.isfinite(vector).all():
            raise ValueError(f"the query vector must be one row of finite numbers, got shape {vector.shape}"
                             + ("" if np.isfinite(vector).all() else " with NaN or infinite values"))
    run = runs.latest_succeeded(lake, key)
    if run["method"] != "neighbors":
        raise ValueError(f"run {key!r} is a {run['method']} run; similarity needs a kNN (neighbors) run")
    meta = json.loads(lake.read_artifact(run["run_id"], "index.json"))
    metric = meta["metric"]
    if sample_id is not None:
        found, vecs = _embeddings(lake, meta["embeddings_run_id"], [sample_id])
        if not found:
            raise ValueError(f"sample {sample_id!r} has no embedding in the run indexed by {key!r}")
        query = vecs[0]
    else:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
    if where is None and not reverse:
        ids = pq.read_table(io.BytesIO(lake.read_artifact(run["run_id"], "sample_ids.parquet")))["sample_id"]
        shards = [knn_index.deserialize(np.frombuffer(lake.read_artifact(run["run_id"], f"index-{i}.faiss"), np.uint8))
                  for i in range(meta["shards"])]
        dist, rows = knn_index.search(shards, query[None], k + 1, metric=metric)
        ok = rows[0] >= 0
        names, dist = ids.take(pa.array(rows[0][ok])).to_pylist(), dist[0][ok]
    else:
        subset = None
        if where is not None:
            subset = _where(lake, where)
        names, vecs = _embeddings(lake, meta["embeddings_run_id"], subset)
        if not names:
            return pa.table({"sample_id": pa.array([], pa.string()), "distance": pa.array([], pa.float32())})
        dist = knn_index.exact_distances(query, vecs, metric=metric)
        order = np.lexsort((np.asarray(names), -dist if reverse else dist))
        names, dist = [names[i] for i in order], dist[order]
    keep = [i for i, name in enumerate(names) if name != sample_id][:k]
    return pa.table({"sample_id": pa.array([names[i] for i in keep], pa.string()),
                     "distance": pa.array(np.asarray(dist)[keep], pa.float32())})
