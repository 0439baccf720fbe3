"""Similarity queries against a kNN run's saved index: the k samples nearest (or farthest) to a query.

``similar(lake, key, sample_id=… | vector=… | text=…, k=15, reverse=False, where=None, save_as=None)``:

* the query is a sample's embedding (from the embeddings run the kNN run indexed;
  the sample itself is left out of the results), the mean of several samples'
  embeddings (``sample_id=[a, b]``, as FiftyOne's ``sort_by_similarity`` with
  several ids; all of them are left out), a given vector, or a text prompt
  embedded by the text tower of the model that made the indexed embeddings
  (CLIP: :class:`brain.models.zoo.OpenClipModel`; a model without ``embed_text``
  is refused by name);
* plain queries search the run's saved FAISS index shards (``index-<i>.faiss``,
  reloaded; approximate for IVF, with the recall recorded in the run's metrics);
* ``where`` (a SQL condition over ``samples``, run by DuckDB) restricts the
  results to that subset, and ``reverse`` returns the farthest samples: both are
  computed exactly over the subset's vectors (an IVF index cannot answer
  "farthest", and a filtered IVF probe may find fewer than k of a small subset).

Returns an Arrow table (sample_id, uri, label, split, distance), nearest first
(farthest first when ``reverse``). Distances are in the kNN run's metric (cosine: 1 − cos).
**Patches** (FiftyOne's ``patches_field``): a kNN run over a patch embeddings run indexes boxes.
Queries and results name a box by its patch id ``SAMPLE_ID#PATCH_INDEX``; ``where`` keeps the boxes
of the matching samples; results gain ``patch_id``, ``patch_index``, ``patch_label`` and ``patch_bbox``
(``label`` stays the sample's).

``save_as=KEY`` also stores the result as a view run (method ``similarity_view``,
rows in ``similarity_views``) whose sample filter is the result's ids, so SQL and
``runs.load_view(lake, KEY)`` read it (FiftyOne: saving a sorted view).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from brain import index as knn_index
from brain import runs, sql
from brain.lake import Lake, plain_strings
from brain.sql_expr import UnsafeSQLError, check_condition, rows_where
from brain.vectors import (
    PATCH_TABLE,
    id_columns,
    item_ids,
    patch_boxes,
    split_patch_ids,
    to_matrix,
)


def _embeddings(lake: Lake, run_id: str, table: str, *, sample_ids: list[str] | None = None,
                items: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Item ids (sample ids, or patch ids) and vectors of a run: of ``sample_ids``' samples, or only ``items``."""
    flt = pc.field("run_id") == run_id
    if items is not None:
        sample_ids = split_patch_ids(items)[0].to_pylist() if table == PATCH_TABLE else items
    if sample_ids is not None:
        flt &= pc.field("sample_id").isin(sample_ids)
    rows = plain_strings(lake.read(table, columns=id_columns(table) + ["vector"], filter=flt))
    ids = item_ids(rows, table)
    if items is not None:
        asked = pc.is_in(ids, pa.array(items, pa.string()))
        rows, ids = rows.filter(asked), ids.filter(asked)
    if rows.num_rows == 0:
        return [], np.zeros((0, 0), np.float32)
    return ids.to_pylist(), to_matrix(rows["vector"], ids, context=f"embeddings run {run_id}", dtype=np.float32)


def _where(lake: Lake, where: str) -> list[str]:
    """Sample ids matching a SQL condition over ``samples``."""
    try:
        return rows_where(lake, "samples", where, columns="sample_id", what="--where")["sample_id"].to_pylist()
    except UnsafeSQLError:
        raise
    except ValueError as err:
        raise ValueError(f"--where {where!r} is not a valid condition over samples: {err}") from None


def text_model(lake: Lake, embeddings_run_id: str):
    """The model (not loaded) that made an embeddings run, if it has a text tower; a clear error if not."""
    from brain.models import DEFAULT_MODEL, get_model

    run = runs.get_run(lake, embeddings_run_id)
    settings = json.loads(run["config"]).get("_resume_settings") or {}
    if "model" not in settings:
        raise ValueError(f"embeddings run {run['brain_key']!r} records no model (registered vectors?): text search "
                         "needs the embeddings of a model with a text tower, e.g. embed.model=clip-vit-b-32")
    name = settings["model"] or DEFAULT_MODEL
    model = get_model(name, **settings.get("kwargs", {}))
    if not hasattr(model, "embed_text"):
        raise ValueError(f"text search needs a model with a text tower, but the index's embeddings run "
                         f"{run['brain_key']!r} was made by model {name!r}, which has none; embed with a CLIP model "
                         "(e.g. embed.model=clip-vit-b-32) and build the kNN index on that run")
    return model


def similar(lake: Lake, key: str, *, sample_id: str | list[str] | None = None, vector: np.ndarray | None = None,
            text: str | None = None, k: int = 15, reverse: bool = False, where: str | None = None,
            save_as: str | None = None) -> pa.Table:
    """The ``k`` samples most similar to the query (least similar when ``reverse``); see the module docstring."""
    given = (sample_id not in (None, []), vector is not None, text is not None)  # `vector != []` is elementwise
    if sum(given) != 1:
        raise ValueError("give exactly one query: sample id(s), a vector or a text prompt")
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
    metric, table = meta["metric"], meta.get("embeddings_table", "embeddings")
    query_ids = [sample_id] if isinstance(sample_id, str) else list(sample_id or [])
    if query_ids:
        if table == PATCH_TABLE:
            try:
                split_patch_ids(query_ids)
            except ValueError as err:
                raise ValueError(f"{key!r} indexes patches: query by patch id SAMPLE_ID#PATCH_INDEX ({err})") from None
        found, vecs = _embeddings(lake, meta["embeddings_run_id"], table, items=query_ids)
        missing = sorted(set(query_ids) - set(found))
        if missing:
            what = "patch" if table == PATCH_TABLE else "sample"
            raise ValueError(f"{what} {missing[0]!r} has no embedding in the run indexed by {key!r}")
        query = vecs.mean(axis=0)
    elif text is not None:
        with text_model(lake, meta["embeddings_run_id"]) as model:
            query = model.embed_text([text])[0]
    else:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
    if where is None and not reverse:
        ids = pq.read_table(io.BytesIO(lake.read_artifact(run["run_id"], "sample_ids.parquet")))["sample_id"]
        shards = [knn_index.deserialize(np.frombuffer(lake.read_artifact(run["run_id"], f"index-{i}.faiss"), np.uint8))
                  for i in range(meta["shards"])]
        dist, rows = knn_index.search(shards, query[None], k + len(query_ids), metric=metric)
        ok = rows[0] >= 0
        names, dist = ids.take(pa.array(rows[0][ok])).to_pylist(), dist[0][ok]
    else:
        subset = None
        if where is not None:
            subset = _where(lake, where)
        names, vecs = _embeddings(lake, meta["embeddings_run_id"], table, sample_ids=subset)
        dist = knn_index.exact_distances(query, vecs, metric=metric) if names else np.zeros(0, np.float32)
        order = np.lexsort((np.asarray(names), -dist if reverse else dist))
        names, dist = [names[i] for i in order], dist[order]
    excluded = set(query_ids)
    keep = [i for i, name in enumerate(names) if name not in excluded][:k]
    found = pa.table({"sample_id": pa.array([names[i] for i in keep], pa.string()),
                      "distance": pa.array(np.asarray(dist)[keep], pa.float32())})
    result = with_samples(lake, found, patch_run=meta["embeddings_run_id"] if table == PATCH_TABLE else None)
    if save_as:
        save_view(lake, save_as, result, knn_run=run, query=dict(sample_ids=query_ids or None, text=text,
                  vector=None if vector is None else np.asarray(vector, np.float32).reshape(-1).tolist(),
                  k=k, reverse=reverse, where=where))
    return result


def with_samples(lake: Lake, found: pa.Table, *, patch_run: str | None = None) -> pa.Table:
    """(sample_id, distance) in result order → (sample_id, uri, label, split, distance), same order
    (nulls for vectors whose sample is not in ``samples``, e.g. registered from elsewhere).

    With ``patch_run`` (the patch embeddings run indexed), ``found``'s ids are patch ids: the result
    starts with ``patch_id`` and gains the box's ``patch_index``, ``patch_label``, ``patch_bbox``."""
    ids = found["sample_id"]
    if patch_run is not None:
        ids, patch_index = split_patch_ids(ids)
    wanted = ", ".join(runs.sql_literal(s) for s in set(ids.to_pylist())) or "NULL"
    samples = plain_strings(sql.query(lake, f"SELECT sample_id, uri, label, split FROM samples "
                                            f"WHERE sample_id IN ({wanted})"))
    row_of = {sid: i for i, sid in enumerate(samples["sample_id"].to_pylist())}
    rows = pa.array([row_of.get(s) for s in ids.to_pylist()], pa.int64())
    columns = {"sample_id": ids}
    if patch_run is not None:
        boxes = patch_boxes(lake, patch_run)
        at = pc.index_in(found["sample_id"], item_ids(boxes, PATCH_TABLE))
        columns = {"patch_id": found["sample_id"], "sample_id": ids, "patch_index": patch_index,
                   "patch_label": boxes["patch_label"].take(at), "patch_bbox": boxes["patch_bbox"].take(at)}
    return pa.table({**columns, "uri": samples["uri"].take(rows), "label": samples["label"].take(rows),
                     "split": samples["split"].take(rows), "distance": found["distance"]})


def save_view(lake: Lake, key: str, table: pa.Table, *, knn_run: dict, query: dict) -> str:
    """Store a similarity result as a view run ``key``: its rows in ``similarity_views``, its samples as the
    run's sample filter (what ``runs.load_view`` re-applies)."""
    ids = table["sample_id"].to_pylist()
    view = "sample_id IN (" + ", ".join(runs.sql_literal(i) for i in sorted(set(ids))) + ")" if ids else "FALSE"
    with runs.track(lake, brain_key=key, method="similarity_view", dataset=knn_run["dataset"],
                    config={"similarity": {**query, "neighbors_key": knn_run["brain_key"]}},
                    inputs={"neighbors": knn_run["run_id"]}, sample_filter=view) as run:
        rows = pa.table({"run_id": pa.array([run.run_id] * len(ids), pa.string()),
                         "brain_key": pa.array([key] * len(ids), pa.string()), "sample_id": table["sample_id"],
                         "rank": pa.array(range(len(ids)), pa.int32()),
                         "distance": table["distance"].cast(pa.float64()),
                         "patch_index": (table["patch_index"] if "patch_index" in table.column_names
                                         else pa.nulls(len(ids), pa.int32()))})
        run.write("similarity_views", rows)
    return run.run_id
