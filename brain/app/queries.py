"""What the lake browser shows, as plain data: each view is one function over a lake returning JSON-ready dicts.

The server (:mod:`brain.app.server`) returns these as JSON and the static report
(:mod:`brain.app.report`) embeds them, so both show the same thing. Everything is
read-only: SQL through :func:`brain.sql.connect` (one snapshot of the run catalog,
with DuckDB's access to files outside the registered tables turned off). A view
shows each brain key's current run, whose rows are selected by ``run_id``.

A *score* is a numeric per-sample column of a current run's table (see
:data:`SCORE_TABLES`), named after the column (``uniqueness``, ``hardness``) or
``TABLE_COLUMN`` when the column is not named like its table
(``familiarity_percentile``), with ``_KEY`` appended when several current runs
wrote the table (except for the run whose key is the table's name, the jobs'
default). Scores are columns in grid WHERE expressions and sort keys. A run over patches (a
patch embeddings run's boxes) scores a sample by its highest-scoring box; the sample page and
similar-sample views use whole-image kNN runs unless a patch run's key is asked for.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from brain import runs, sql
from brain.lake import Lake
from brain.schemas import PATCH_COLUMNS, TABLES
from brain.sql_expr import check_condition

# Tables with one row per sample and run whose numeric columns are scores.
SCORE_TABLES = ("uniqueness", "hardness", "mistakenness", "detection_mistakenness", "familiarity", "predictions",
                "unique")
SAMPLE_FIELDS = ("sample_id", "dataset", "uri", "split", "label", "width", "height")
MAX_PER_PAGE = 500


class NotFound(LookupError):
    """A sample, run or key the lake does not hold; the message names it."""


@dataclass(frozen=True)
class Score:
    name: str
    table: str
    column: str
    brain_key: str
    run_id: str

    def json(self) -> dict[str, str]:
        return dict(name=self.name, table=self.table, column=self.column, brain_key=self.brain_key,
                    run_id=self.run_id)


def _quote(text: str) -> str:
    return runs.sql_literal(text)


def _ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


VERSION_CHECK_S = 1.0  # how often the app looks for a new catalog version (a run that finished)
_CONNECTIONS: dict[str, tuple[int, float, duckdb.DuckDBPyConnection]] = {}
_CONNECTIONS_LOCK = threading.RLock()


def _connection(lake: Lake) -> duckdb.DuckDBPyConnection:
    """The lake's tables in DuckDB, with no access to any other file (the app runs user expressions).

    Its views are one snapshot of the catalog (:func:`brain.sql.connect`: each table shows its
    current runs' rows). Registering every table costs about 0.3 s, so a connection is kept while
    the catalog's version (of ``run_events``) stays the same, checked at most every
    ``VERSION_CHECK_S``; a new version (a run finished) opens a new one, which sees the new rows.
    Call with ``_CONNECTIONS_LOCK`` held:
    a DuckDB connection is used by one thread at a time.
    """
    now = time.monotonic()
    cached = _CONNECTIONS.get(lake.uri)
    if cached is not None and now - cached[1] < VERSION_CHECK_S:
        return cached[2]
    version = lake.version("run_events") if lake.exists("run_events") else -1
    if cached is None or cached[0] != version:
        con = sql.connect(lake)  # external file access off, configuration locked
        cached = (version, now, con)
    _CONNECTIONS[lake.uri] = (version, now, cached[2])
    return cached[2]


def _query(lake: Lake, text: str, params: list | None = None) -> pa.Table:
    with _CONNECTIONS_LOCK:
        try:
            return _connection(lake).sql(text, params=params).to_arrow_table()
        except duckdb.Error as err:
            raise ValueError(f"query failed: {err}") from None


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return [{k: _jsonable(v) for k, v in row.items()} for row in table.to_pylist()]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return dict(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _as_dict(value: Any) -> dict:
    """A map column's value (a list of pairs in pyarrow, or None) as a dict."""
    return dict(value or [])


def current_runs(lake: Lake) -> list[dict[str, Any]]:
    """The current run of every brain key (the run whose rows the table views show), oldest first."""
    return [run for run in catalog(lake) if run["current"]]


def catalog(lake: Lake) -> list[dict[str, Any]]:
    """Every run of the catalog snapshot, not deleted, oldest first."""
    return _query(lake, "SELECT * FROM runs WHERE status <> 'deleted' ORDER BY started_at, run_id").to_pylist()


def _current(lake: Lake, method: str | tuple[str, ...], key: str | None, *,
             dataset: str | None = None) -> dict[str, Any]:
    """The current run named ``key``; without a key, the newest current run of ``method`` (over ``dataset``;
    for kNN runs, one over whole images, not patches)."""
    methods = (method,) if isinstance(method, str) else method
    candidates = [r for r in current_runs(lake) if r["method"] in methods]
    if key is not None:
        candidates = [r for r in candidates if r["brain_key"] == key]
    else:
        if dataset is not None:
            candidates = [r for r in candidates if r["dataset"] == dataset]
        if methods == ("neighbors",):  # per-sample views: a kNN run over patches lists boxes, not samples
            patch_runs = {r["run_id"] for r in catalog(lake) if r["method"] == "patch_embeddings"}
            candidates = [r for r in candidates
                          if dict(r["input_run_ids"] or []).get("embeddings") not in patch_runs]
    if not candidates:
        raise NotFound(f"no succeeded {'/'.join(methods)} run" + (f" with key {key!r}" if key else "")
                       + (f" over dataset {dataset!r}" if dataset and not key else "") + f" in {lake.uri}")
    return candidates[-1]


def scores(lake: Lake) -> list[Score]:
    """Every score of the current runs (see the module docstring for the names)."""
    found: list[tuple[str, str, dict]] = []
    for run in current_runs(lake):
        for table, count in _as_dict(run["rows_written"]).items():
            if table in SCORE_TABLES and count:
                found.append((table, run["brain_key"], run))
    per_table: dict[str, int] = {}
    for table, _, _ in found:
        per_table[table] = per_table.get(table, 0) + 1
    out = []
    for table, key, run in found:
        for field in TABLES[table]:
            numeric = pa.types.is_floating(field.type) or pa.types.is_integer(field.type)
            if not numeric or field.name in ("run_id", "sample_id") or field.name in PATCH_COLUMNS:
                continue
            name = field.name if field.name == table else f"{table}_{field.name}"
            if per_table[table] > 1 and key != table:  # the key named like its table keeps the plain name
                name += "_" + re.sub(r"\W", "_", key)
            out.append(Score(name, table, field.name, key, run["run_id"]))
    return out


def _score_by_name(lake: Lake, name: str) -> Score:
    known = scores(lake)
    for score in known:
        if score.name == name:
            return score
    raise NotFound(f"no score {name!r}; scores of the current runs: {[s.name for s in known]}")


def overview(lake: Lake) -> dict[str, Any]:
    """Datasets with their sample counts, splits and labels, and the whole run catalog."""
    datasets = []
    if lake.exists("samples"):
        table = _query(lake, "SELECT dataset, count(*) AS samples, count(DISTINCT label) AS labels, "
                             "list(DISTINCT split ORDER BY split) FILTER (WHERE split IS NOT NULL) AS splits "
                             "FROM samples GROUP BY dataset ORDER BY dataset")
        datasets = _rows(table)
    all_scores = scores(lake)
    listed = [dict(run_id=run["run_id"], brain_key=run["brain_key"], method=run["method"], dataset=run["dataset"],
                   status=run["status"], started_at=_jsonable(run["started_at"]),
                   finished_at=_jsonable(run["finished_at"]), rows_written=_as_dict(run["rows_written"]),
                   error=run["error"], current=run["current"],
                   view=run_view(run, [s.name for s in all_scores if s.run_id == run["run_id"]]))
              for run in catalog(lake)[::-1]]
    return dict(lake=lake.uri, datasets=datasets, runs=listed, scores=[s.json() for s in all_scores])


def run_view(run: dict[str, Any], run_scores: list[str]) -> str:
    """The app route (after ``#``) that shows a run's results; ``run_scores``: the names of its scores."""
    key = run["brain_key"]
    if run["method"].startswith("duplicates"):
        return f"/duplicates?key={key}"
    if run["method"] == "leaks":
        return f"/leaks?key={key}"
    if run["method"] in ("mistakenness", "detection_mistakenness"):
        return f"/mistakes?key={key}"
    if run["method"] == "visualization":
        return f"/map?key={key}"
    if run_scores:
        return f"/grid?sort={run_scores[0]}"
    return f"/run/{run['run_id']}"


def run_info(lake: Lake, run_id: str) -> dict[str, Any]:
    try:
        info = runs.get_run(lake, run_id)
    except runs.RunNotFoundError as err:
        raise NotFound(str(err)) from None
    info = {k: _jsonable(v) for k, v in info.items()}
    info["config"] = json.loads(info["config"]) if info.get("config") else None
    return info


def _scored_samples_sql(lake: Lake, wanted: list[Score]) -> str:
    """``samples`` with one column per score (NULL where the run has no row for the sample; for a run over
    patches, the sample's highest-scoring box)."""
    def rows_of(score: Score) -> str:
        where = f"WHERE run_id = {_quote(score.run_id)}"
        if "patch_index" not in TABLES[score.table].names:
            return f"SELECT * FROM {_ident(score.table)} {where}"
        column = _ident(score.column)
        return f"SELECT sample_id, max({column}) AS {column} FROM {_ident(score.table)} {where} GROUP BY sample_id"

    selects = "".join(f", t{i}.{_ident(s.column)} AS {_ident(s.name)}" for i, s in enumerate(wanted))
    joins = "".join(f" LEFT JOIN ({rows_of(s)}) t{i} ON t{i}.sample_id = s.sample_id" for i, s in enumerate(wanted))
    fields = ", ".join(f"s.{f}" for f in SAMPLE_FIELDS)
    return f"SELECT {fields}{selects} FROM samples s{joins}"


def samples(lake: Lake, *, sort: str | None = None, descending: bool = True, where: str | None = None,
            ids: list[str] | None = None, dataset: str | None = None, page: int = 0,
            per_page: int = 48) -> dict[str, Any]:
    """One page of samples with every score, sorted by a score (or by id), filtered by a WHERE expression
    over the samples columns and the scores, or restricted to ``ids`` (a map selection)."""
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise ValueError(f"per_page must be in 1..{MAX_PER_PAGE}, got {per_page}")
    if page < 0:
        raise ValueError(f"page must be >= 0, got {page}")
    all_scores = scores(lake)
    if sort is not None and sort not in {s.name for s in all_scores}:
        _score_by_name(lake, sort)  # raises NotFound naming the known scores
    conditions = []
    if where:
        conditions.append(f"({check_condition(where, what='WHERE')})")
    if dataset:
        conditions.append(f"dataset = {_quote(dataset)}")
    if ids is not None:
        conditions.append("sample_id IN (SELECT unnest(?::VARCHAR[]))")
    filtered = f"SELECT * FROM ({_scored_samples_sql(lake, all_scores)}) " + (
        f"WHERE {' AND '.join(conditions)}" if conditions else "")
    order = (f"{_ident(sort)} {'DESC' if descending else 'ASC'} NULLS LAST, sample_id" if sort else "sample_id")
    params = [ids] if ids is not None else None
    try:
        total = _query(lake, f"SELECT count(*) AS n FROM ({filtered})", params)["n"][0].as_py()
        rows = _query(lake, f"SELECT * FROM ({filtered}) ORDER BY {order} LIMIT {per_page} OFFSET {page * per_page}",
                      params)
    except ValueError as err:  # most often a WHERE naming an unknown column
        raise ValueError(f"{f'WHERE {where!r}: ' if where else ''}{err}; columns: "
                         f"{list(SAMPLE_FIELDS) + [s.name for s in all_scores]}") from None
    return dict(total=total, page=page, per_page=per_page, sort=sort, descending=descending, where=where,
                scores=[s.name for s in all_scores], items=_rows(rows))


def _sample_row(lake: Lake, sample_id: str) -> dict[str, Any]:
    table = _query(lake, f"SELECT * FROM samples WHERE sample_id = {_quote(sample_id)}")
    if table.num_rows == 0:
        raise NotFound(f"no sample {sample_id!r} in {lake.uri}")
    return _rows(table)[0]


def sample_uri(lake: Lake, sample_id: str) -> tuple[str, str | None]:
    """(uri, content_hash) of a sample."""
    row = _sample_row(lake, sample_id)
    return row["uri"], row["content_hash"]


def _ground_truth(row: dict[str, Any]) -> list[dict[str, Any]]:
    attributes = json.loads(row["attributes"]) if row.get("attributes") else {}
    boxes = attributes.get("detections")
    if isinstance(boxes, str):
        boxes = json.loads(boxes)
    return boxes if isinstance(boxes, list) else []


def sample(lake: Lake, sample_id: str, *, k: int = 8) -> dict[str, Any]:
    """A sample with all its scores, predictions, ground-truth and scored boxes, duplicates and nearest neighbours."""
    row = _sample_row(lake, sample_id)
    all_scores = scores(lake)
    scored = _query(lake, f"SELECT * FROM ({_scored_samples_sql(lake, all_scores)}) "
                          f"WHERE sample_id = {_quote(sample_id)}")
    values = _rows(scored)[0]
    current = current_runs(lake)
    predictions = []
    for run in current:
        if _as_dict(run["rows_written"]).get("predictions"):
            table = _query(lake, f"SELECT label, confidence, detections FROM predictions WHERE run_id = "
                                 f"{_quote(run['run_id'])} AND sample_id = {_quote(sample_id)}")
            predictions += [dict(brain_key=run["brain_key"], **r) for r in _rows(table)]
    objects = []
    for run in current:
        if _as_dict(run["rows_written"]).get("detection_objects"):
            table = _query(lake, "SELECT source, object_index, label, bbox, confidence, mistakenness, iou, "
                                 "possible_missing, possible_spurious FROM detection_objects WHERE run_id = "
                                 f"{_quote(run['run_id'])} AND sample_id = {_quote(sample_id)} "
                                 "ORDER BY source, object_index")
            objects += [dict(brain_key=run["brain_key"], **r) for r in _rows(table)]
    return dict(sample={k: v for k, v in row.items() if k != "attributes"},
                attributes=json.loads(row["attributes"]) if row.get("attributes") else {},
                scores={s.name: values[s.name] for s in all_scores if values[s.name] is not None},
                predictions=predictions, ground_truth=_ground_truth(row), objects=objects,
                neighbors=neighbors(lake, sample_id, k=k, dataset=row["dataset"]),
                duplicates=_duplicates_of(lake, sample_id))


def neighbors(lake: Lake, sample_id: str, *, k: int = 8, key: str | None = None,
              dataset: str | None = None) -> list[dict[str, Any]]:
    """The sample's nearest neighbours in the graph of the current kNN run over its dataset (empty without one)."""
    try:
        run = _current(lake, "neighbors", key, dataset=dataset)
    except NotFound:
        return []
    table = _query(lake, "SELECT n.neighbor_id AS sample_id, n.distance, s.label, s.split FROM ("
                         "SELECT unnest(neighbor_ids) AS neighbor_id, unnest(distances) AS distance "
                         f"FROM neighbors WHERE run_id = {_quote(run['run_id'])} AND sample_id = {_quote(sample_id)}"
                         f") n LEFT JOIN samples s ON s.sample_id = n.neighbor_id ORDER BY n.distance LIMIT {int(k)}")
    return _rows(table)


def _duplicates_of(lake: Lake, sample_id: str) -> list[dict[str, Any]]:
    found = []
    for run in current_runs(lake):
        if _as_dict(run["rows_written"]).get("duplicates"):
            table = _query(lake, "SELECT group_id, kept_sample_id, sample_id, distance FROM duplicates "
                                 f"WHERE run_id = {_quote(run['run_id'])} AND group_id IN (SELECT group_id FROM "
                                 f"duplicates WHERE run_id = {_quote(run['run_id'])} AND "
                                 f"(sample_id = {_quote(sample_id)} OR kept_sample_id = {_quote(sample_id)}))")
            found += [dict(brain_key=run["brain_key"], **r) for r in _rows(table)]
    return found


def duplicate_groups(lake: Lake, *, key: str | None = None, page: int = 0, per_page: int = 20) -> dict[str, Any]:
    """Groups of a duplicates run, largest first: the kept sample and its duplicates with their distances."""
    return _groups(lake, "duplicates", _current(lake, ("duplicates_near", "duplicates_exact"), key), page, per_page)


def leak_groups(lake: Lake, *, key: str | None = None, page: int = 0, per_page: int = 20) -> dict[str, Any]:
    """Groups of a leaks run: the kept sample and its duplicates in other splits, with their distances."""
    return _groups(lake, "leaks", _current(lake, "leaks", key), page, per_page)


def _groups(lake: Lake, table: str, run: dict[str, Any], page: int, per_page: int) -> dict[str, Any]:
    rid = _quote(run["run_id"])
    total = _query(lake, f"SELECT count(DISTINCT group_id) AS n FROM {table} WHERE run_id = {rid}")["n"][0].as_py()
    rows = _query(lake, f"""
        WITH g AS (SELECT group_id, count(*) AS size FROM {table} WHERE run_id = {rid} GROUP BY group_id
                   ORDER BY size DESC, group_id LIMIT {int(per_page)} OFFSET {int(page) * int(per_page)})
        SELECT g.group_id, d.kept_sample_id, d.sample_id, d.distance, s.label, s.split,
               k.label AS kept_label, k.split AS kept_split, d.kept_patch_index, d.patch_index
        FROM g JOIN {table} d ON d.group_id = g.group_id AND d.run_id = {rid}
        LEFT JOIN samples s ON s.sample_id = d.sample_id LEFT JOIN samples k ON k.sample_id = d.kept_sample_id
        ORDER BY g.size DESC, g.group_id, d.distance, d.sample_id""")
    groups: dict[str, dict[str, Any]] = {}
    for r in _rows(rows):
        group = groups.setdefault(r["group_id"], dict(
            group_id=r["group_id"], kept=dict(sample_id=r["kept_sample_id"], label=r["kept_label"],
                                              split=r["kept_split"], patch_index=r["kept_patch_index"]),
            members=[]))
        group["members"].append(dict(sample_id=r["sample_id"], distance=r["distance"], label=r["label"],
                                     split=r["split"], patch_index=r["patch_index"]))
    return dict(brain_key=run["brain_key"], run_id=run["run_id"], method=run["method"], total=total, page=page,
                per_page=per_page, groups=list(groups.values()))


def mistakes(lake: Lake, *, key: str | None = None, page: int = 0, per_page: int = 24) -> dict[str, Any]:
    """Samples of a label-quality run by mistakenness, highest first.

    Classification (``mistakenness`` runs): the given and the predicted label with the prediction's
    confidence (from the run's predictions input). Detection (``detection_mistakenness`` runs):
    the sample's ground-truth and predicted boxes, possible missing and spurious objects marked.
    """
    run = _current(lake, ("mistakenness", "detection_mistakenness"), key)
    rid = _quote(run["run_id"])
    limit = f"LIMIT {int(per_page)} OFFSET {int(page) * int(per_page)}"
    if run["method"] == "mistakenness":
        config = json.loads(run["config"] or "{}")
        predictions_key = (config.get("label_quality") or {}).get("predictions_key") or run["input_key"]
        try:
            pred_run = _quote(_current(lake, "predictions", predictions_key)["run_id"])
        except NotFound:
            pred_run = "NULL"
        total = _query(lake, f"SELECT count(*) AS n FROM mistakenness WHERE run_id = {rid}")["n"][0].as_py()
        table = _query(lake, f"""
            SELECT m.sample_id, m.given_label, m.suggested_label, m.mistakenness, m.is_issue,
                   p.label AS predicted_label, p.confidence, s.split
            FROM mistakenness m LEFT JOIN samples s ON s.sample_id = m.sample_id
            LEFT JOIN (SELECT * FROM predictions WHERE run_id = {pred_run}) p ON p.sample_id = m.sample_id
            WHERE m.run_id = {rid} ORDER BY m.mistakenness DESC, m.sample_id {limit}""")
        items = _rows(table)
    else:
        total = _query(lake, f"SELECT count(*) AS n FROM detection_mistakenness WHERE run_id = {rid}")["n"][0].as_py()
        table = _query(lake, f"""
            SELECT d.sample_id, d.mistakenness, d.mistakenness_loc, d.num_missing, d.num_spurious, s.label, s.split,
                   s.width, s.height
            FROM detection_mistakenness d LEFT JOIN samples s ON s.sample_id = d.sample_id
            WHERE d.run_id = {rid}
            ORDER BY d.num_missing + d.num_spurious > 0 DESC, d.mistakenness DESC, d.sample_id {limit}""")
        items = _rows(table)
        ids = [r["sample_id"] for r in items]
        boxes = _query(lake, "SELECT sample_id, source, label, bbox, confidence, mistakenness, possible_missing, "
                             f"possible_spurious FROM detection_objects WHERE run_id = {rid} AND "
                             f"sample_id IN ({', '.join(_quote(i) for i in ids) or 'NULL'}) "
                             "ORDER BY sample_id, source, object_index")
        by_sample: dict[str, list] = {}
        for box in _rows(boxes):
            by_sample.setdefault(box.pop("sample_id"), []).append(box)
        for item in items:
            item["objects"] = by_sample.get(item["sample_id"], [])
    return dict(brain_key=run["brain_key"], run_id=run["run_id"], kind=run["method"], total=total, page=page,
                per_page=per_page, items=items)


def map_points(lake: Lake, *, key: str | None = None, color: str | None = None) -> dict[str, Any]:
    """A visualization run's points with ``color`` (a samples column or a score) for each, and the fields
    a point can be coloured by."""
    run = _current(lake, "visualization", key)
    all_scores = scores(lake)
    fields = ["label", "split", "dataset"] + [s.name for s in all_scores]
    if color is not None and color not in fields:
        raise ValueError(f"cannot colour by {color!r}; fields: {fields}")
    color_sql = f", c.{_ident(color)} AS color" if color else ", NULL AS color"
    table = _query(lake, f"SELECT v.sample_id, v.x, v.y, c.label{color_sql} FROM visualization v "
                         f"LEFT JOIN ({_scored_samples_sql(lake, all_scores)}) c ON c.sample_id = v.sample_id "
                         f"WHERE v.run_id = {_quote(run['run_id'])} ORDER BY v.sample_id")
    columns = {name: table[name].to_pylist() for name in ("sample_id", "x", "y", "label", "color")}
    return dict(brain_key=run["brain_key"], run_id=run["run_id"], color=color, fields=fields, points=columns)


def similar(lake: Lake, sample_id: str, *, k: int = 24, key: str | None = None) -> dict[str, Any]:
    """The ``k`` samples nearest to ``sample_id`` in the index of the current kNN run over its dataset."""
    run = _current(lake, "neighbors", key, dataset=_sample_row(lake, sample_id)["dataset"])
    return dict(query=sample_id, brain_key=run["brain_key"], items=_hits(lake, run, sample_id=sample_id, k=k))


def text_search(lake: Lake, text: str, *, k: int = 24, key: str | None = None) -> dict[str, Any]:
    """Samples nearest to a text prompt, for an index whose embeddings model has a text tower (CLIP);
    a ValueError naming the model otherwise (:func:`brain.similarity.text_model`)."""
    if not text.strip():
        raise ValueError("the text query is empty")
    run = _current(lake, "neighbors", key)
    return dict(query=text, brain_key=run["brain_key"], items=_hits(lake, run, text=text, k=k))


def _hits(lake: Lake, run: dict[str, Any], **query: Any) -> list[dict[str, Any]]:
    from brain import similarity

    table = similarity.similar(lake, run["brain_key"], **query)
    return _rows(table.select(["sample_id", "label", "split", "distance"]))
