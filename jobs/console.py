"""Printing results at the command line: rich tables, sized for a terminal or a log file."""

from __future__ import annotations

import datetime as dt
import sys

import pyarrow as pa


def make_console():
    """A rich console; wide enough for tables when the output is not a terminal."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def print_table(console, table: pa.Table, *, max_rows: int = 200) -> None:
    from rich.table import Table

    view = Table()
    for name in table.column_names:
        view.add_column(name, overflow="fold")
    for row in table.slice(0, max_rows).to_pylist():
        view.add_row(*(_cell(v) for v in row.values()))
    console.print(view)
    if table.num_rows > max_rows:
        console.print(f"… {table.num_rows - max_rows} more rows (use --format csv)")


def _cell(value) -> str:
    if value is None or value == []:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return ", ".join(f"{k}={v}" for k, v in value)
    return str(value)
