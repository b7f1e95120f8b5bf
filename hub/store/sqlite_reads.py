"""The hot paths' reads on a SQLite file straight through the sqlite3 driver.

Every survey page starts with one indexed read of a few pages in SQLite's cache. Through SQLAlchemy's
``Connection.execute`` the read cost more than the query: the compiled cache's lookup, the execution context,
the parameters' processing and the result's construction were a seventh of a page's CPU under load. For the
few fixed queries of ``Store.first`` the store runs the statement SQLAlchemy compiled, once per query, on the
driver's connection, each parameter and column through its type's own processors, as SQLAlchemy would (the
hub's types: aware UTC datetimes, cleaned text); the PostgreSQL twin is ``hub.store.driver_reads``.

The answers' batch writer reads the same way inside its transaction (``rows``): its three reads through
SQLAlchemy were a third of a batch's time on the writer, more than its writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Select
from sqlalchemy.engine import Dialect

from hub.store.positional import Convert, Positional, converted, converted_rows, positional

#: a SELECT of any columns
AnySelect = Select[*tuple[Any, ...]]


@dataclass(frozen=True)
class _Compiled:
    statement: Positional
    #: each column's name and result processor
    columns: tuple[tuple[str, Convert | None], ...]
    #: each column's result processor in order; empty when no column has one
    converts: tuple[Convert | None, ...]


class SqliteReads:
    """``first`` for fixed queries on a sqlite3 connection, each compiled once for ``dialect``."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._compiled: dict[AnySelect, _Compiled] = {}

    def _compile(self, query: AnySelect) -> _Compiled:
        dialect = self._dialect
        columns = tuple(
            (str(column.key), column.type.dialect_impl(dialect).result_processor(dialect, None))
            for column in query.selected_columns
        )
        converts = tuple(convert for _, convert in columns)
        statement = positional(query.compile(dialect=dialect), dialect)
        return _Compiled(statement, columns, converts if any(converts) else ())

    def first(
        self, connection: sqlite3.Connection, query: AnySelect, params: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The first row of ``query`` as a dict keyed by the columns' names, or None. Every row is fetched,
        so the statement is done and holds no read snapshot of the log when this returns (a query of
        ``Store.first`` finds one row by a unique key)."""
        compiled = self._compiled_of(query)
        found = self._fetch(connection, compiled, params)
        if not found:
            return None
        return converted(compiled.columns, found[0])

    def all(
        self, connection: sqlite3.Connection, query: AnySelect, params: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """Every row of ``query``, each a tuple in the order of its columns, converted as SQLAlchemy would."""
        compiled = self._compiled_of(query)
        found = self._fetch(connection, compiled, params)
        return converted_rows(compiled.converts, found) if compiled.converts else found

    @staticmethod
    def _fetch(
        connection: sqlite3.Connection, compiled: _Compiled, params: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        statement = compiled.statement
        return connection.execute(statement.sql, statement.values(params)).fetchall()

    def _compiled_of(self, query: AnySelect) -> _Compiled:
        compiled = self._compiled.get(query)
        if compiled is None:
            compiled = self._compiled[query] = self._compile(query)
        return compiled


#: the reads of each SQLite dialect in use (one per engine: the writer's, the readers'), gone with its engine
_READS: WeakKeyDictionary[Dialect, SqliteReads] = WeakKeyDictionary()


def reads_for(dialect: Dialect) -> SqliteReads:
    """The reads of one engine's dialect, each query compiled once for it (``Store.first``, ``rows``)."""
    reads = _READS.get(dialect)
    if reads is None:
        reads = _READS[dialect] = SqliteReads(dialect)
    return reads


def rows(conn: Connection, query: AnySelect, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
    """Every row of ``query`` (a fixed query, built once) in ``conn``'s transaction, each a sequence in the
    order of its columns: on a SQLite file's connection straight through sqlite3 (``SqliteReads.all``),
    on any other through SQLAlchemy."""
    driver = conn.connection.dbapi_connection
    if not isinstance(driver, sqlite3.Connection):
        return conn.execute(query, params).all()
    return reads_for(conn.dialect).all(driver, query, params)
