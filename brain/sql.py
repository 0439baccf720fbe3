"""SQL over the lake with DuckDB: every table by name, as of one catalog snapshot.

Each table keyed by run (``uniqueness``, ``embeddings``, …) is a view of the rows of
the runs that are current in one snapshot of the run catalog (:func:`brain.runs.catalog`),
with ``brain_key`` as the catalog has it now (renames included). A re-run that is still
writing, a failed or abandoned run, and a replaced run that vacuum has not removed yet
are invisible there; ``<table>_history`` holds every stored row of every run. ``runs``
is the catalog (one row per run, with ``status`` and ``current``), ``run_events`` its log.
``history=True`` makes the plain names show every run's rows, as ``--all-runs`` does.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from brain import runs
from brain.lake import Lake
from brain.schemas import RUN_RESULT_TABLES, TABLES

HISTORY_SUFFIX = "_history"


def connect(lake: Lake, *, history: bool = False, allow_files: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a view per lake table (see the module docstring).

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
    snapshot = runs.catalog(lake)
    con.register("runs", snapshot.runs)
    current = snapshot.runs.filter(snapshot.runs["current"]).select(["run_id", "brain_key"])
    con.register("_current_runs", current)
    for name, schema in TABLES.items():
        rows = native_dataset(lake, name) if lake.exists(name) else schema.empty_table()  # not written yet: no rows
        if name not in RUN_RESULT_TABLES:
            con.register(name, rows)
            continue
        con.register(name + HISTORY_SUFFIX, rows)
        if history:
            con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM "{name}{HISTORY_SUFFIX}"')
        elif "brain_key" in schema.names:
            con.execute(f'CREATE VIEW "{name}" AS SELECT h.* REPLACE (c.brain_key AS brain_key) '
                        f'FROM "{name}{HISTORY_SUFFIX}" h JOIN _current_runs c ON h.run_id = c.run_id')
        else:
            con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM "{name}{HISTORY_SUFFIX}" '
                        f'WHERE run_id IN (SELECT run_id FROM _current_runs)')
    con.execute("SET lock_configuration = true")
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


def query(lake: Lake, sql: str, *, history: bool = False, allow_files: bool = False) -> pa.Table:
    """The result of one SQL statement (several separated by ';' are refused) over the lake's tables."""
    try:
        statements = duckdb.extract_statements(sql)
        if len(statements) != 1:
            raise ValueError(f"SQL failed: give one statement, got {len(statements)}")
        return connect(lake, history=history, allow_files=allow_files).sql(sql).to_arrow_table()
    except duckdb.Error as err:
        raise ValueError(f"SQL failed: {err}") from None
