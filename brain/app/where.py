"""The check a user's WHERE expression passes before the app puts it in SQL.

One function, :func:`check_where`, so the shared expression checker of ``--where``
(``brain/sql_expr.py``) can replace it in one place. It parses the expression with
DuckDB's own parser inside ``SELECT 1 FROM t WHERE (...)`` and accepts it only when
the parse is that one plain SELECT (nothing closed the parenthesis early to add a
UNION, LIMIT, GROUP BY or a second statement), with no subquery and only the
functions of :data:`ALLOWED_FUNCTIONS` (operators such as ``+`` or ``~~`` pass).
"""

from __future__ import annotations

import json
import re
from typing import Any

import duckdb

ALLOWED_FUNCTIONS = frozenset({
    "abs", "round", "floor", "ceil", "least", "greatest", "lower", "upper", "length", "strlen", "coalesce",
    "ifnull", "nullif", "starts_with", "ends_with", "contains", "prefix", "suffix", "regexp_matches", "like",
    "ilike", "json_extract", "json_extract_string", "isnan", "isfinite",
})
_OPERATOR = re.compile(r"^[^A-Za-z0-9_]+$")


def check_where(expression: str) -> str:
    """``expression`` unchanged when it is one safe boolean expression; a ValueError naming the problem if not."""
    text = expression.strip()
    if not text:
        raise ValueError("the WHERE expression is empty")
    parsed = json.loads(duckdb.execute("SELECT json_serialize_sql(?::VARCHAR)",
                                       [f"SELECT 1 FROM __t WHERE ({text})"]).fetchone()[0])
    if parsed.get("error"):
        raise ValueError(f"WHERE {text!r} is not a valid expression: {parsed.get('error_message')}")
    statements = parsed["statements"]
    node = statements[0]["node"] if len(statements) == 1 else {}
    plain = (node.get("type") == "SELECT_NODE" and not node.get("modifiers") and not node["cte_map"]["map"]
             and not node.get("group_expressions") and node.get("having") is None and node.get("qualify") is None
             and (node.get("from_table") or {}).get("table_name") == "__t")
    if not plain:
        raise ValueError(f"WHERE {text!r} is more than one expression over the samples")
    _check_node(node["where_clause"], text)
    return text


def _check_node(node: Any, text: str) -> None:
    if isinstance(node, list):
        for item in node:
            _check_node(item, text)
        return
    if not isinstance(node, dict):
        return
    if node.get("class") == "SUBQUERY":
        raise ValueError(f"WHERE {text!r}: subqueries are not allowed")
    if node.get("class") == "FUNCTION":
        name = node.get("function_name", "")
        if not _OPERATOR.match(name) and name.lower() not in ALLOWED_FUNCTIONS:
            raise ValueError(f"WHERE {text!r}: function {name!r} is not allowed; allowed: {sorted(ALLOWED_FUNCTIONS)}")
    for value in node.values():
        _check_node(value, text)
