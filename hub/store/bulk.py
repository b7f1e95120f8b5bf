"""One statement run with many rows (executemany) without SQLAlchemy building every row's parameters.

A batch of answers writes its responses and about three write-back items per answer with one executemany
each. Through ``Connection.execute`` SQLAlchemy builds a dictionary of every bound name for each row, runs
the types' processors and turns it into the driver's positional tuple: under a steady stream of answers that
was a fifth of the server's time, more than the statements' round trips. ``Bulk`` compiles its statement
once per dialect and turns each row into the driver's tuple directly, each value through its column type's
bind processor as SQLAlchemy would (the hub's types clean text and store datetimes as UTC), then hands the
rows to the driver's executemany through ``Connection.exec_driver_sql``: same transaction, same events.

Values a statement carries itself (``.values(state="queued")``) are taken as compiled. A column with a
Python-side default or ``onupdate`` is refused when it is compiled, unless the rows carry it: such a value
is made per row by SQLAlchemy's execution, which this skips.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.dml import UpdateBase

from hub.store.positional import Positional, positional

_MISSING = object()


class Bulk:
    """``statement`` (an INSERT, UPDATE or upsert with bound parameters) for executemany with rows that
    carry ``keys``: compiled once per dialect on first use."""

    def __init__(self, statement: UpdateBase, keys: Collection[str]) -> None:
        self.statement = statement
        self.keys = frozenset(keys)
        self._compiled: dict[str, Positional | None] = {}

    def execute(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per row, in ``conn``'s transaction (nothing when ``rows`` is empty)."""
        if not rows:
            return
        dialect = conn.dialect
        compiled = self._compiled.get(dialect.name, _MISSING)
        if compiled is _MISSING:
            compiled = self._compiled[dialect.name] = self._compile(dialect)
        if compiled is None:  # a driver that takes named parameters: SQLAlchemy's own way
            conn.execute(self.statement, list(rows))
            return
        assert isinstance(compiled, Positional)
        conn.exec_driver_sql(compiled.sql, [compiled.values(row) for row in rows])

    def _compile(self, dialect: Dialect) -> Positional | None:
        if not dialect.positional:
            return None
        compiled = self.statement.compile(
            dialect=dialect, column_keys=sorted(self.keys), for_executemany=True
        )
        made_per_row = {
            column.key for column in (*compiled.insert_prefetch, *compiled.update_prefetch)
        } - self.keys
        if made_per_row:
            raise ValueError(
                f"{', '.join(sorted(made_per_row))}: a default made per row, which rows of this statement "
                "must carry"
            )
        return positional(compiled, dialect, self.keys)
