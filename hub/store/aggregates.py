"""``json_pairs(a, b)``: the aggregated rows' ``[a, b]`` pairs as one JSON array, on SQLite and PostgreSQL.

A correlated subquery with it brings a few related rows along with each row of a read (an invitation's
person's record ids in every CRM) in the same statement: on PostgreSQL one round trip less in a transaction
whose round trips every answer waits for. ``pairs`` reads the value back, whichever way the driver gave it.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class json_pairs(FunctionElement[Any]):  # an SQL function, named as SQL functions are
    """The aggregated rows' ``[a, b]`` pairs as a JSON array: NULL (PostgreSQL) or ``[]`` (SQLite) for no rows."""

    name = "json_pairs"
    inherit_cache = True


@compiles(json_pairs, "postgresql")
def _json_agg(element: json_pairs, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_agg(json_build_array({compiler.process(element.clauses, **kw)}))"


@compiles(json_pairs, "sqlite")
def _json_group_array(element: json_pairs, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_group_array(json_array({compiler.process(element.clauses, **kw)}))"


def pairs(value: Any) -> dict[str, str]:
    """A ``json_pairs`` value as a dict of its pairs: JSON text (SQLite, a driver without a JSON codec), the
    decoded list (a driver with one), or None (no rows)."""
    if value is None:
        return {}
    listed = json.loads(value) if isinstance(value, str | bytes) else value
    return {str(a): str(b) for a, b in listed}
