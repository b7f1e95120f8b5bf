"""The hot paths' statements straight through asyncpg on PostgreSQL: a prepared statement, one round trip.

Every survey link opened starts with one indexed read. Through SQLAlchemy's async engine that read costs
more than the query itself: a pool checkout and check-in, an autocommit switch, and the adaptation of each
step from the driver's async calls to SQLAlchemy's synchronous core and back. For a few fixed statements the
hub runs the statement SQLAlchemy compiled on a small asyncpg pool of its own instead, with each parameter
and column converted by its type's own processors, as SQLAlchemy would (the hub's types: aware UTC
datetimes, cleaned text, JSON decoded by the same codec SQLAlchemy's dialect installs).

Each statement runs alone, outside any transaction: a read (``first``, ``rows``), or a write that is one
statement and so its own transaction (``value``: the answers' checked batch write, ``hub.engine.answer_writes``).

A connection the server dropped fails its statement once, as ``OperationalError`` like every query of the
store; the pool then replaces all its connections of that moment, as SQLAlchemy does for its own pool. A
statement the server refuses for a constraint raises ``IntegrityError``, any other refusal ``DBAPIError``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import Select
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from hub.store.positional import Convert, Positional, converted, converted_rows, positional

#: what SQLAlchemy's asyncpg dialect takes in the URL for itself, not for ``asyncpg.connect``
_DIALECT_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func", "async_creator_fn")

#: the database could not be reached or dropped the connection
_LOST = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)

T = TypeVar("T")


@dataclass
class _Compiled:
    query: Select[Any]
    statement: Positional
    #: each column's name and result processor, known once the server described the statement's columns
    columns: list[tuple[str, Convert | None]] | None = None

    async def describe(self, connection: asyncpg.Connection, dialect: Dialect) -> None:
        """Each column's processor for the type the server returns it as (SQLAlchemy's asks for the type's
        code, as a cursor's description gives it: a float column may come back as another numeric type)."""
        attributes = (await connection.prepare(self.statement.sql)).get_attributes()
        self.columns = [
            (str(column.key), column.type.dialect_impl(dialect).result_processor(dialect, attribute.type.oid))
            for column, attribute in zip(self.query.selected_columns, attributes, strict=True)
        ]


async def _json_codecs(connection: asyncpg.Connection) -> None:
    """JSON columns as SQLAlchemy's asyncpg dialect reads them (decoded by the driver's codec, its types then
    convert nothing) and binds them (the text its JSON types' bind processors made)."""
    for name in ("json", "jsonb"):
        await connection.set_type_codec(
            name, encoder=_as_given, decoder=json.loads, schema="pg_catalog", format="text"
        )


def _as_given(text: str) -> str:
    return text


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """Nothing to undo when a connection goes back: these reads are single statements outside any transaction
    and leave no session state (no settings, locks, cursors or listeners). asyncpg's default reset would run a
    second statement (``RESET ALL``, ``UNLISTEN *``, ...) after every read, doubling the round trips of a survey
    page; an open transaction is still rolled back by the pool itself."""


def _compile(query: Select[Any], dialect: Dialect) -> _Compiled:
    return _Compiled(query, positional(query.compile(dialect=dialect), dialect))


@dataclass(frozen=True)
class _LoopPool:
    """The pool of one event loop, and the turns at it."""

    loop: asyncio.AbstractEventLoop
    opening: asyncio.Future[asyncpg.Pool]
    #: one per connection, handed out in arrival order (a semaphore serves its waiters first come, first
    #: served, and a newcomer waits behind them): asyncpg's own queue lets a newcomer take a connection just
    #: returned before the reads already waiting, so under a burst some links opened would wait for many
    #: others' reads (p50 9 ms but p99 90 ms in the bench)
    turns: asyncio.Semaphore


class DriverReads:
    """One PostgreSQL database's pool for the statements run straight through the driver, opened on first
    use in the running event loop."""

    def __init__(self, url: str, dialect: Dialect, size: int, recycle_seconds: float) -> None:
        args, kwargs = dialect.create_connect_args(make_url(url))
        for key in _DIALECT_ONLY:
            kwargs.pop(key, None)
        self._connect = (args, kwargs)
        self._dialect = dialect
        self._size = size
        self._recycle = recycle_seconds
        self._compiled: dict[Select[Any], _Compiled] = {}
        self._pool: _LoopPool | None = None

    def _open(self) -> _LoopPool:
        """The pool of the running loop (a store used from a new loop, in tests or the CLI, opens another)."""
        loop = asyncio.get_running_loop()
        if self._pool is None or self._pool.loop is not loop:
            args, kwargs = self._connect
            opening = asyncpg.create_pool(
                *args,
                min_size=0,
                max_size=self._size,
                max_inactive_connection_lifetime=self._recycle,
                reset=_keep_session,
                init=_json_codecs,
                **kwargs,
            )
            self._pool = _LoopPool(loop, asyncio.ensure_future(opening), asyncio.Semaphore(self._size))
        return self._pool

    async def first(self, query: Select[Any], params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row of ``query`` as a dict keyed by the columns' names, or None."""
        compiled = self._compiled_for(query)
        record = await self._run(
            compiled, lambda connection, sql, values: connection.fetchrow(sql, *values), params
        )
        if record is None or compiled.columns is None:
            return None
        return converted(compiled.columns, record.values())

    async def rows(self, query: Select[Any], params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every row of ``query``, each a tuple in the columns' order, converted as ``first`` converts."""
        compiled = self._compiled_for(query)
        records = await self._run(
            compiled, lambda connection, sql, values: connection.fetch(sql, *values), params
        )
        return converted_rows([convert for _, convert in compiled.columns or []], records)

    async def value(self, query: Select[Any], params: Mapping[str, Any]) -> Any:
        """The first column of the first row of ``query`` (a statement that may write: it is its own
        transaction), converted as ``first`` converts; None without a row."""
        row = await self.first(query, params)
        return None if row is None else next(iter(row.values()))

    def _compiled_for(self, query: Select[Any]) -> _Compiled:
        compiled = self._compiled.get(query)
        if compiled is None:
            compiled = self._compiled[query] = _compile(query, self._dialect)
        return compiled

    async def _run(
        self,
        compiled: _Compiled,
        call: Callable[[asyncpg.Connection, str, tuple[Any, ...]], Awaitable[T]],
        params: Mapping[str, Any],
    ) -> T:
        """``call`` with a connection of the pool and the statement's SQL and values, its errors said as
        SQLAlchemy says them."""
        sql, values = compiled.statement.sql, compiled.statement.values(params)
        held = self._open()
        opening = held.opening
        try:
            try:
                # shielded: a request cancelled while the pool opens must not cancel it for the others
                pool = opening.result() if opening.done() else await asyncio.shield(opening)
            except Exception:  # the pool could not open (re-raised below): the next statement tries again
                if self._pool is held:
                    self._pool = None
                raise
            try:
                async with held.turns, pool.acquire() as connection:
                    if compiled.columns is None:
                        await compiled.describe(connection, self._dialect)
                    return await call(connection, sql, values)
            except _LOST:
                await pool.expire_connections()  # the others of that moment are likely gone too
                raise
        except _LOST as exc:
            raise OperationalError(sql, values, exc) from exc
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(sql, values, exc) from exc
        except asyncpg.PostgresError as exc:
            raise DBAPIError(sql, values, exc) from exc

    async def close(self) -> None:
        """Close the pool: politely from its own loop, else by closing its connections' sockets."""
        held, self._pool = self._pool, None
        if held is None:
            return
        loop, opening = held.loop, held.opening
        if not opening.done():
            opening.cancel()
            return
        if opening.cancelled() or opening.exception() is not None:
            return
        pool = opening.result()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            await pool.close()
        else:
            pool.terminate()
