"""The answers of one moment written in one transaction: each caller answered after its COMMIT.

A transaction per answer makes the commit (on SQLite, a thread hand-off per statement and a fight for the one
write lock; on PostgreSQL, a round trip per statement) the cost of an answer. Here one task writes: the answers
that queue while it commits form its next batch, so under load one transaction carries many answers, and a lone
answer waits for nobody. Only one batch is in flight per process, so answers never fight each other for
SQLite's write lock.

An answer that cannot be stored (the amend window closed, the survey is gone) is refused before anything of it
is written, so it never costs its neighbours their transaction. A batch that fails anyway on a unique key (two
processes storing the same first answer) is written again one answer at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from sqlalchemy.exc import IntegrityError

Item = TypeVar("Item")
Result = TypeVar("Result")

#: the most answers one transaction carries (a bound on its statements' size, not a tuning knob)
MAX_BATCH = 200


class BatchWriter(Generic[Item, Result]):
    """Writes submitted items in batches with ``write`` (one transaction per call, one outcome per item: a
    result, or the exception that refused that item alone)."""

    def __init__(
        self,
        write: Callable[[list[Item]], Awaitable[list[Result | BaseException]]],
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._write = write
        self._max = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Result | BaseException]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        """Queue ``item``; its result once the transaction that wrote it committed (or its own exception)."""
        loop = asyncio.get_running_loop()
        if self._task is not None and self._task.get_loop() is not loop:
            self._task, self._pending = None, []  # a hub used from a new event loop (a CLI command, a test)
        future: asyncio.Future[Result | BaseException] = loop.create_future()
        self._pending.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        outcome = await future
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            try:
                outcomes = await self._outcomes([item for item, _ in batch])
            except BaseException as exc:  # cancelled (shutdown) or the database failed: every caller hears it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    for _, future in self._pending:
                        if not future.done():
                            future.set_exception(exc)
                    self._pending = []
                    raise
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)

    async def _outcomes(self, items: list[Item]) -> list[Result | BaseException]:
        try:
            return await self._write(items)
        except IntegrityError as exc:
            if len(items) == 1:
                return [exc]
        # a unique key met a concurrent writer: each alone, so only the item concerned hears of it
        return [(await self._outcomes([item]))[0] for item in items]
