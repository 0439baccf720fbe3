"""SQL over every lake table by name, with DuckDB (over the Delta tables' Arrow datasets)."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from brain.lake import Lake
from brain.schemas import TABLES


def connect(lake: Lake, *, allow_files: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection where each existing lake table is a view of its committed rows.

    The lake's tables are the only data it reaches: DuckDB's own file and network access
    (``COPY ... TO``, ``read_csv``, ``ATTACH``, extension installs) is off, extensions are
    never installed or loaded on demand, and the configuration is locked, so a query cannot
    switch any of it back on. ``allow_files=True`` (``brain sql --allow-files``) turns file
    access on for exports the user asks for.
    """
    con = duckdb.connect(config={"enable_external_access": allow_files, "autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    # delta-rs records string columns as string_view; when DuckDB pushes a filter into the Arrow
    # dataset, pyarrow prunes row groups by comparing string_view statistics with a string literal
    # and has no kernel for it ("WHERE split = 'test'" fails). Filters then run in DuckDB.
    con.execute("SET disabled_optimizers = 'filter_pushdown'")
    for name in TABLES:
        if lake.exists(name):
            con.register(name, lake.dataset(name))
    con.execute("SET lock_configuration = true")
    return con


def query(lake: Lake, sql: str, *, allow_files: bool = False) -> pa.Table:
    """The result of one SQL statement (several separated by ';' are refused) over the lake's tables."""
    try:
        statements = duckdb.extract_statements(sql)
        if len(statements) != 1:
            raise ValueError(f"SQL failed: give one statement, got {len(statements)}")
        return connect(lake, allow_files=allow_files).sql(sql).to_arrow_table()
    except duckdb.Error as err:
        missing = [t for t in TABLES if not lake.exists(t) and t in sql]
        hint = f" (tables not written yet in {lake.uri}: {missing})" if missing else ""
        raise ValueError(f"SQL failed: {err}{hint}") from None
