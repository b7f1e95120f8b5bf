"""Group commit: the writes that arrive in one moment share one transaction, each caller answered after it.

A webhook must not be acknowledged before its event is durable, but one transaction (and on SQLite one
thread hand-off per statement, on PostgreSQL one round trip per statement) per request makes the commit, not
the hub's logic, the cost of a request. Here one task writes: the requests that queue while it commits form
its next batch, so under load a commit carries many requests and when idle a lone request waits for nobody.

A request reaches ``submit`` a turn or two of the event loop after its bytes were read (its form parsed, its
link hashed and checked), and the requests of one moment are read in the same turn but finish their way
there in different ones. So before it takes its batch the writer passes the loop while requests keep
joining (``_gather``, at most ``GATHER_TURNS`` turns): under a stream of answers on SQLite a commit then
carried the 32 answers in flight instead of 11, and its fixed costs (the transaction, its reads, the log's
write) were shared three times wider: the answers' throughput rose from 53% to 63% of the bare endpoint's.
By default one batch is in flight at a time (on SQLite the process has one writer anyway). A writer may allow
more (``in_flight``): on PostgreSQL an answer batch spends most of its time waiting for round trips, and a
second batch out beside it keeps the answers of that moment from waiting for the first one's commit; its
row locks are taken in one order (invitations by id, write-back items by person), so two never deadlock.

Each caller's future is resolved only after the batch's COMMIT returned: what is acknowledged is durable as far
as the database promises (PostgreSQL: flushed WAL; SQLite in WAL mode with ``synchronous=NORMAL``: written to
the WAL file, which survives the process being killed but not a power loss, see ``hub.store.db``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

Item = TypeVar("Item")
Result = TypeVar("Result")

#: the most requests one transaction carries (a bound on its statement's size, not a tuning knob)
MAX_BATCH = 500
#: the most turns of the event loop a batch waits for requests that are still joining it (``_gather``)
GATHER_TURNS = 3


def _unavailable(exc: BaseException) -> bool:
    """The database could not be reached or was busy: every write of the batch would fail the same way."""
    return isinstance(exc, OperationalError | InterfaceError)


class GroupCommit(Generic[Item, Result]):
    """Writes submitted items in batches with ``write`` (one transaction per call, one outcome per item: its
    result, or the exception that refuses that item alone while the others are written, e.g. an answer whose
    amend window closed).

    A batch that fails for a reason other than an unreachable database is written again one item at a time,
    so one bad item fails its own caller only. A batch cut by a lost connection is written once more on a
    fresh one (the pool replaces connections a disconnect invalidated): no pre-ping round trip per request.
    Up to ``in_flight`` batches are written at once, each by a task of its own.
    """

    def __init__(
        self,
        write: Callable[[list[Item]], Awaitable[Sequence[Result | BaseException]]],
        max_batch: int = MAX_BATCH,
        in_flight: int = 1,
    ) -> None:
        self._write = write
        self._max = max_batch
        self._in_flight = in_flight
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        """Queue ``item`` and return its result once the transaction that wrote it has committed."""
        loop = asyncio.get_running_loop()
        if any(task.get_loop() is not loop for task in self._tasks):
            self._tasks, self._pending = set(), []  # a hub used from a new event loop (a CLI command, a test)
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        self._tasks = {task for task in self._tasks if not task.done()}
        if len(self._tasks) < self._in_flight:
            self._tasks.add(asyncio.create_task(self._drain()))
        return await future

    async def _drain(self) -> None:
        """Write batches while requests are queued; end when none is (the next submit starts a new run)."""
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while self._pending:
                await self._gather()
                batch, self._pending = self._pending[: self._max], self._pending[self._max :]
                if batch:  # another writer in flight may have taken them all while this one gathered
                    await self._run(batch)
        except BaseException:  # cancelled (the loop is closing): no caller may wait for an answer forever
            for _, future in batch + self._pending:
                future.cancel()
            self._pending = []
            raise

    async def _gather(self) -> None:
        """Let the requests already on their way join the batch: pass the loop while the last turn brought
        more, at most ``GATHER_TURNS`` times (a lone request waits for one turn of the loop)."""
        for _ in range(GATHER_TURNS):
            waiting = len(self._pending)
            await asyncio.sleep(0)
            if len(self._pending) == waiting:
                return

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._attempt([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or _unavailable(exc):
                for _, future in batch:
                    _settle(future, exc=exc)
                return
            for item, future in batch:  # find the one at fault: the others are written alone
                try:
                    [result] = await self._attempt([item])
                except Exception as alone:
                    _settle(future, exc=alone)
                else:
                    _settle_outcome(future, result)
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle_outcome(future, result)

    async def _attempt(self, items: list[Item]) -> Sequence[Result | BaseException]:
        try:
            return await self._write(items)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        return await self._write(items)  # the connection was lost: once more on a fresh one


def _settle_outcome(future: asyncio.Future[Result], outcome: Result | BaseException) -> None:
    if isinstance(outcome, BaseException):
        _settle(future, exc=outcome)
    else:
        _settle(future, outcome)


def _settle(
    future: asyncio.Future[Result], result: Result | None = None, exc: BaseException | None = None
) -> None:
    """Answer a caller unless it stopped waiting (its client went away): the write stands either way."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]
