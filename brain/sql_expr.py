"""SQL that a flag passes or the lake stores is an expression, not a program.

``--where`` filters (``brain similar --where``, ``embed.where``) and the ``sample_filter``
a run stores are conditions over one table's columns. :func:`check_condition` parses
such a text with sqlglot (DuckDB dialect) and accepts it only when it is exactly one
expression and nothing in it reads a table: no statement separator, no subquery or
``SELECT``/``UNION``, no table reference, no table or file function (``read_csv``,
``glob``, ``query``...), no command (``COPY``, ``ATTACH``, ``SET``, ``INSTALL``...).
It returns the expression as sqlglot writes it back, so what runs is what was checked
(comments dropped). The connection it runs on has external access off as well
(:func:`brain.sql.connect`): two locks, either of which stops a planted filter.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from sqlglot import exp

    from brain.lake import Lake

MAX_LENGTH = 10_000


# sqlglot is imported when a condition is checked, not with this module: brain.config imports it, and
# every `brain` process (most never check a condition) would pay sqlglot's import (0.2–0.4 s).
@functools.cache
def forbidden_nodes() -> tuple[type[exp.Expression], ...]:
    """Node types that read or change something other than the row being filtered."""
    from sqlglot import exp

    return (
        exp.Query, exp.Subquery, exp.Table, exp.From, exp.Join, exp.Lateral, exp.Command, exp.Copy, exp.Insert,
        exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter, exp.Set, exp.Pragma, exp.Use,
        exp.Transaction, exp.Commit, exp.Rollback, exp.Describe, exp.Attach, exp.Detach, exp.Install,
    )

# Functions that read files, run SQL text or read the environment (lower case; prefixes end in "_").
FORBIDDEN_FUNCTIONS = ("read_", "glob", "query", "query_table", "getenv", "parquet_", "sniff_csv", "delta_scan",
                       "iceberg_", "sqlite_", "postgres_", "mysql_", "load_extension", "from_json_file")


class UnsafeSQLError(ValueError):
    """A filter that is not one plain condition; the message says what it holds instead."""


def check_condition(text: str, *, what: str = "filter") -> str:
    """``text`` as one checked SQL condition (see the module doc); :class:`UnsafeSQLError` otherwise."""
    import sqlglot
    from sqlglot import exp

    if not isinstance(text, str) or not text.strip():
        raise UnsafeSQLError(f"{what} is empty: give a condition such as \"split = 'test'\"")
    if len(text) > MAX_LENGTH:
        raise UnsafeSQLError(f"{what} is {len(text)} characters long, more than {MAX_LENGTH}")
    try:
        parsed = [e for e in sqlglot.parse(text, read="duckdb") if e is not None]
    except sqlglot.errors.SqlglotError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UnsafeSQLError(f"{what} {text!r} is not a SQL condition: {first}") from None
    if len(parsed) != 1:
        raise UnsafeSQLError(f"{what} {text!r} holds {len(parsed)} statements: a filter is one condition "
                             "(no ';')")
    (tree,) = parsed
    for node in tree.walk():
        if isinstance(node, forbidden_nodes()):
            kind = type(node).__name__.upper()
            raise UnsafeSQLError(f"{what} {text!r} holds a {kind} ({_snippet(node)}): a filter is a condition "
                                 "over the table's columns, it may not read tables, files or run commands")
        if isinstance(node, exp.Func):
            name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
            if name.startswith(FORBIDDEN_FUNCTIONS):
                raise UnsafeSQLError(f"{what} {text!r} calls {name}(): functions that read files, tables or "
                                     "the environment are not allowed in a filter")
    return tree.sql(dialect="duckdb", comments=False)


def rows_where(lake: Lake, table: str, condition: str, *, columns: str = "*", what: str = "filter",
               order_by: str | None = None) -> pa.Table:
    """``SELECT columns FROM table WHERE condition`` with ``condition`` checked by :func:`check_condition` first."""
    from brain import sql

    checked = check_condition(condition, what=what)
    order = f" ORDER BY {order_by}" if order_by else ""
    return sql.query(lake, f'SELECT {columns} FROM "{table}" WHERE {checked}{order}')


def _snippet(node: exp.Expression) -> str:
    text = node.sql(dialect="duckdb", comments=False)
    return text if len(text) <= 60 else text[:57] + "..."
