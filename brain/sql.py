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


import duckdb
import pyarrow as pa

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
        rows = lake.dataset(name) if lake.exists(name) else schema.empty_table()  # not written yet: no rows
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


def query(lake: Lake, sql: str, *, history: bool = False, allow_files: bool = False) -> pa.Table:
    """The result of one SQL statement (several separated by ';' are refused) over the lake's tables."""
    try:
        statements = duckdb.extract_statements(sql)
        if len(statements) != 1:
            raise ValueError(f"SQL failed: give one statement, got {len(statements)}")
        con = connect(lake, history=history, allow_files=allow_files)
    except duckdb.Error as err:
        raise ValueError(f"SQL failed: {err}") from None
    try:
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as err:
        raise ValueError(f"SQL failed: {err}") from None
    finally:
        # closed here, not left to the garbage collector, so no DuckDB thread of an early-stopped
        # Arrow scan (LIMIT) can outlive the query into interpreter exit: `brain sql ... LIMIT 2` over
        # a many-file table left that way crashed at exit (SIGSEGV) about 1 time in 100
        con.close()
