"""SQL over every lake table by name, with DuckDB (over the Delta tables' Arrow datasets)."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from brain.lake import Lake
from brain.schemas import TABLES


def connect(lake: Lake) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection where each existing lake table is a view of its committed rows."""
    con = duckdb.connect()
    # delta-rs records string columns as string_view; when DuckDB pushes a filter into the Arrow
    # dataset, pyarrow prunes row groups by comparing string_view statistics with a string literal
    # and has no kernel for it ("WHERE split = 'test'" fails). Filters then run in DuckDB.
    con.execute("SET disabled_optimizers = 'filter_pushdown'")
    for name in TABLES:
        if lake.exists(name):
            con.register(name, lake.dataset(name))
    return con


def query(lake: Lake, sql: str) -> pa.Table:
    try:
        return connect(lake).sql(sql).to_arrow_table()
    except duckdb.Error as err:
        missing = [t for t in TABLES if not lake.exists(t) and t in sql]
        hint = f" (tables not written yet in {lake.uri}: {missing})" if missing else ""
        raise ValueError(f"SQL failed: {err}{hint}") from None
