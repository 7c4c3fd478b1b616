"""SQL text for the cost tables' readers.

DuckDB's Python client imports pandas the first time a query binds a parameter (2–3 s on a
2-core machine, in every run's process), so the readers here inline their few values as SQL
string literals instead, quoted the standard way (a quote doubled; DuckDB has no backslash
escapes in string literals)."""

from __future__ import annotations


def literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"
