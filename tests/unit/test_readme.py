"""The README's table list is the lake's: every table of `brain/schemas.py` once, with its columns in order."""

from __future__ import annotations

import re
from pathlib import Path

from brain.schemas import TABLES

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_tables() -> list[tuple[str, list[str]]]:
    """(table, columns) of each row of the table under "## The lake"; notes in parentheses dropped."""
    section = README.read_text().split("\n## The lake\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (.+) \|$", section, flags=re.MULTILINE)
    return [(name, [c.strip() for c in re.sub(r"\([^)]*\)", "", columns).split(",")]) for name, columns in rows]


def test_the_readme_lists_every_table_once():
    names = [name for name, _ in readme_tables()]
    assert sorted(names) == sorted(TABLES), "README tables differ from brain/schemas.py TABLES"
    assert len(names) == len(set(names)), f"listed twice: {sorted({n for n in names if names.count(n) > 1})}"


def test_the_readme_columns_are_the_schemas():
    for name, columns in readme_tables():
        assert columns == TABLES[name].names, name
