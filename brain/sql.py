"""SQL over every lake table by name, with DuckDB (over the Delta tables' Arrow datasets)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

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
            con.register(name, native_dataset(lake, name))
    return con


def native_dataset(lake: Lake, table: str) -> pads.Dataset:
    """``table``'s committed rows as an Arrow dataset that reads its files through Arrow's own filesystem.

    Not through deltalake's default, a ``PyFileSystem`` whose every read calls back into Python:
    DuckDB stops reading as soon as it has its rows (LIMIT, a join that ends early), which leaves
    Arrow I/O threads with read-ahead in flight. At interpreter exit such a thread blocks on the
    GIL, Python ends it with ``pthread_exit``, and the forced unwind through deltalake's Rust and
    Arrow's C++ frames aborts the process ("terminate called without an active exception", exit
    134), segfaults (139) or leaves Arrow's pool shutdown waiting forever. Native reads never
    need the GIL, so they finish on their own.
    """
    fs, root = pafs.FileSystem.from_uri(lake.table_uri(table) if "://" in lake.uri
                                        else Path(lake.table_uri(table)).as_uri())
    return lake.table(table).to_pyarrow_dataset(filesystem=pafs.SubTreeFileSystem(root, fs))


def query(lake: Lake, sql: str) -> pa.Table:
    try:
        return connect(lake).sql(sql).to_arrow_table()
    except duckdb.Error as err:
        missing = [t for t in TABLES if not lake.exists(t) and t in sql]
        hint = f" (tables not written yet in {lake.uri}: {missing})" if missing else ""
        raise ValueError(f"SQL failed: {err}{hint}") from None
