"""Plots of a visualization run: its coordinates joined in SQL with samples and any score table.

A column spec (for ``color_by`` / ``size_by``) is one of:

* a ``samples`` column: ``label``, ``split``, ``dataset``, ``width``, ``height``, ``size_bytes``;
* ``TABLE[.COLUMN][@BRAIN_KEY]``: a per-sample result table (one with ``run_id`` and
  ``sample_id`` columns, e.g. ``uniqueness``, ``familiarity.percentile``). ``COLUMN``
  defaults to the column named like the table, else the table's first float column
  (``familiarity`` → ``score``); ``BRAIN_KEY`` defaults to the table's name (the
  jobs' default keys) and selects that key's newest succeeded run.

A map of patches (a visualization run over a patch embeddings run) has one point per box, named by
its patch id ``SAMPLE_ID#PATCH_INDEX``; ``patch_label`` colours by the box's label, and a score table
with patch rows (``uniqueness@KEY`` of a patch run) is joined box by box (whole-image scores: by sample).

Samples without a value get NaN (gray) or "None". ``highlight`` ids (a unique
subset, a query's result) are outlined on top of the map.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from brain import runs, sql
from brain.lake import Lake
from brain.plots import write_scatter
from brain.schemas import TABLES
from brain.vectors import patch_ids

SAMPLE_COLUMNS = ("label", "split", "dataset", "width", "height", "size_bytes")
MAP_COLUMNS = ("patch_label",)  # columns of the visualization rows themselves
_SPEC = re.compile(r"^(?P<table>[A-Za-z_][A-Za-z0-9_]*)(?:\.(?P<column>[A-Za-z_][A-Za-z0-9_]*))?(?:@(?P<key>.+))?$")


@dataclass(frozen=True)
class _Column:
    alias: str
    select: str  # SQL expression in the final SELECT
    join: str  # SQL join clause ("" for samples columns)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _column(lake: Lake, spec: str, n: int) -> _Column:
    if spec in SAMPLE_COLUMNS:
        return _Column(spec, f"s.{_ident(spec)} AS {_ident(spec)}", "")
    if spec in MAP_COLUMNS:
        return _Column(spec, f"v.{_ident(spec)} AS {_ident(spec)}", "")
    match = _SPEC.match(spec)
    table = match["table"] if match else None
    if table not in TABLES or not {"run_id", "sample_id"} <= set(TABLES[table].names):
        per_sample = sorted(t for t, s in TABLES.items() if {"run_id", "sample_id"} <= set(s.names))
        raise ValueError(f"column {spec!r} is neither a samples column {list(SAMPLE_COLUMNS)} nor "
                         f"TABLE[.COLUMN][@BRAIN_KEY] of a per-sample table {per_sample}")
    schema = TABLES[table]
    floats = [f.name for f in schema if pa.types.is_floating(f.type)]
    column = match["column"] or (table if table in schema.names else (floats[0] if floats else None))
    if column is None or column not in schema.names or column in ("run_id", "sample_id", "brain_key"):
        raise ValueError(f"column {spec!r}: table {table!r} has no value column {column!r}; "
                         f"its columns: {schema.names}")
    run = runs.latest_succeeded(lake, match["key"] or table)
    alias = f"t{n}"
    if "patch_index" in schema.names:  # a patch run's rows match their box; whole-image rows (null) every box
        join = (f"LEFT JOIN (SELECT sample_id, patch_index AS p, {_ident(column)} AS c FROM {table} "
                f"WHERE run_id = {_quote(run['run_id'])}) {alias} ON {alias}.sample_id = v.sample_id "
                f"AND ({alias}.p IS NULL OR {alias}.p = v.patch_index)")
    else:
        join = (f"LEFT JOIN (SELECT sample_id, {_ident(column)} AS c FROM {table} "
                f"WHERE run_id = {_quote(run['run_id'])}) {alias} ON {alias}.sample_id = v.sample_id")
    return _Column(spec, f"{alias}.c AS {_ident(spec)}", join)


def map_table(lake: Lake, key: str, columns: Sequence[str] = ()) -> tuple[dict, pa.Table]:
    """The visualization run ``key`` and its rows (sample_id, patch_index, x, y, z, one column per spec), by
    sample_id and patch_index (null for whole-image maps)."""
    run = runs.latest_succeeded(lake, key)
    if run["method"] != "visualization":
        raise ValueError(f"{key!r} is a {run['method']} run, not a visualization run (brain visualize)")
    specs = [_column(lake, spec, n) for n, spec in enumerate(dict.fromkeys(columns))]
    selects = "".join(f", {c.select}" for c in specs)
    joins = " ".join(c.join for c in specs)
    rows = sql.query(lake, f"SELECT v.sample_id, v.patch_index, v.x, v.y, v.z{selects} FROM visualization v "
                           f"LEFT JOIN samples s ON s.sample_id = v.sample_id {joins} "
                           f"WHERE v.run_id = {_quote(run['run_id'])} ORDER BY v.sample_id, v.patch_index")
    if rows.num_rows == 0:
        raise ValueError(f"visualization run {run['run_id']} ({key!r}) has no rows")
    return run, rows


def highlight_ids(lake: Lake, *, query: str | None = None, path: str | Path | None = None) -> list[str]:
    """Sample ids from a SQL query's first column (``query``) or a file of one id per line (``path``)."""
    if query is not None:
        result = sql.query(lake, query)
        if result.num_columns == 0:
            raise ValueError(f"highlight query returned no columns: {query}")
        return [str(v) for v in result.column(0).to_pylist() if v is not None]
    text = Path(path).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def plot_run(lake: Lake, key: str, *, html_path: str | Path | None = None, png_path: str | Path | None = None,
             color_by: str | None = None, size_by: str | None = None, highlight: Sequence[str] = (),
             highlight_name: str = "highlighted") -> list[Path]:
    """Write visualization run ``key`` as HTML and/or PNG; returns the paths (see :func:`brain.plots.write_scatter`)."""
    run, rows = map_table(lake, key, [c for c in (color_by, size_by) if c])
    patches = rows.column("patch_index").null_count < rows.num_rows
    samples = np.asarray(rows.column("sample_id").to_pylist(), dtype=str)
    ids = np.asarray(patch_ids(rows["sample_id"], rows["patch_index"]).to_pylist(), dtype=str) if patches else samples
    dims = 3 if rows.column("z").null_count < rows.num_rows else 2
    coords = np.column_stack([rows.column(a).to_numpy(zero_copy_only=False) for a in "xyz"[:dims]])
    columns = {}
    for spec in dict.fromkeys(c for c in (color_by, size_by) if c):
        values = rows.column(spec)
        if pa.types.is_integer(values.type) and spec in SAMPLE_COLUMNS and values.null_count == 0:
            columns[spec] = values.to_numpy(zero_copy_only=False)
        elif pa.types.is_floating(values.type) or pa.types.is_integer(values.type):
            columns[spec] = values.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
        else:
            columns[spec] = np.asarray([str(v) for v in values.to_pylist()], dtype=str)
    wanted = list(dict.fromkeys(highlight))
    marked = np.isin(ids, wanted) | np.isin(samples, wanted)  # a sample id highlights every box of it
    if wanted and not marked.any():
        raise ValueError(f"none of the {len(wanted)} highlighted sample ids is in visualization run {key!r}")
    title = (f"{key}: {run['input_key']} ({rows.num_rows} {'patches' if patches else 'samples'})"
             + (f", colored by {color_by}" if color_by else ""))
    return write_scatter(coords, ids, html_path=html_path, png_path=png_path, columns=columns, color_by=color_by,
                         size_by=size_by, highlight=np.flatnonzero(marked) if wanted else None,
                         highlight_name=highlight_name, title=title)

