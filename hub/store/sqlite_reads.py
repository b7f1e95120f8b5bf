"""The survey link's read on a SQLite file straight through the sqlite3 driver, on the loop's own connection.

Every survey page starts with one indexed read of a few pages in SQLite's cache. Through SQLAlchemy's
``Connection.execute`` the read cost more than the query: the compiled cache's lookup, the execution context,
the parameters' processing and the result's construction were a seventh of a page's CPU under load. For the
few fixed queries of ``Store.first`` the store runs the statement SQLAlchemy compiled, once per query, on the
driver's connection, each parameter and column through its type's own processors, as SQLAlchemy would (the
hub's types: aware UTC datetimes, cleaned text); the PostgreSQL twin is ``hub.store.driver_reads``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Dialect

from hub.store.positional import Convert, Positional, converted, positional


@dataclass(frozen=True)
class _Compiled:
    statement: Positional
    #: each column's name and result processor
    columns: tuple[tuple[str, Convert | None], ...]


class SqliteReads:
    """``first`` for fixed queries on a sqlite3 connection, each compiled once for ``dialect``."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._compiled: dict[Select[Any], _Compiled] = {}

    def _compile(self, query: Select[Any]) -> _Compiled:
        dialect = self._dialect
        columns = tuple(
            (str(column.key), column.type.dialect_impl(dialect).result_processor(dialect, None))
            for column in query.selected_columns
        )
        return _Compiled(positional(query.compile(dialect=dialect), dialect), columns)

    def first(
        self, connection: sqlite3.Connection, query: Select[Any], params: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The first row of ``query`` as a dict keyed by the columns' names, or None. Every row is fetched,
        so the statement is done and holds no read snapshot of the log when this returns (a query of
        ``Store.first`` finds one row by a unique key)."""
        compiled = self._compiled.get(query)
        if compiled is None:
            compiled = self._compiled[query] = self._compile(query)
        rows = connection.execute(compiled.statement.sql, compiled.statement.values(params)).fetchall()
        if not rows:
            return None
        return converted(compiled.columns, rows[0])
