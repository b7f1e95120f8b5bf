"""Draining the write-back queue, and polling connectors for events.

At-least-once and idempotent, like a Singer tap's state or an Airbyte cursor:

* items are *claimed* with a lease, written, and only then marked done; a worker killed between the write and
  the mark leaves the lease to expire, and the item is written again under the same idempotency key, which
  the connector uses as an external id, so the CRM still holds it once;
* an item re-queued while in flight (a newer answer) carries a higher ``version`` and is not marked done by
  the older write;
* a polled cursor is stored only after the events it covers are stored.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from functools import cache, partial
from typing import TYPE_CHECKING, Any, cast

import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Integer,
    Update,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import InstrumentedAttribute, Session

from hub.errors import AuthError, ConfigError, HubError, TransientError
from hub.http import backoff_delay, never_sent
from hub.leases import renew_until
from hub.models import PersonSummary, WriteBackItem, WriteBackResult
from hub.store.bulk import Bulk
from hub.store.db import SHORT_WRITE_ROWS
from hub.store.lists import one_of
from hub.store.tables import Cursor, SyncRun, UTCDateTime, WriteBack, utcnow
from hub.summaries import person_summaries

if TYPE_CHECKING:
    from sqlalchemy import Table

    from hub.app import Hub

log = structlog.get_logger("hub.sync")

#: how often a transaction that lost a lock race (deadlock, serialization failure) is run again
TRANSACTION_ATTEMPTS = 5
#: PostgreSQL's SQLSTATEs for "this transaction was chosen to fail; run it again"
_LOCK_RACE_STATES = frozenset({"40P01", "40001"})

#: a batch's rows locked all at once, in the order answers re-arm keys (by person, ``WriteBackQueue.write``),
#: before the sync changes them: whoever else updates some of them (a newer answer, another worker's hold)
#: waits or is waited for, and never deadlocks with this. PostgreSQL would find such a deadlock only after
#: its deadlock_timeout, a second that every answer of the batch on the other side waits (SQLite's writer
#: holds the whole file from its BEGIN: FOR UPDATE means nothing there)
_LOCK_ROWS = (
    select(WriteBack.id)
    .where(one_of(WriteBack.id, "ids"))
    .order_by(WriteBack.connector, WriteBack.person_id, WriteBack.id)
    .with_for_update()
)

WRITTEN = Counter("cxhub_writebacks_total", "Write-back items by outcome", ["connector", "outcome"])
RUN_SECONDS = Histogram("cxhub_sync_run_seconds", "Duration of sync runs", ["connector", "kind"])

EVENTS_STREAM = "events"

#: kinds a batch holds together: a person's summary and opt-out are fields on the same CRM person, which a
#: connector writes in one update (so an opt-out costs no call of its own when it comes with a summary)
BATCH_FAMILIES: dict[str, tuple[str, ...]] = {
    "person_summary": ("person_summary", "person_opt_out"),
    "person_opt_out": ("person_summary", "person_opt_out"),
}


#: the write-back queue's table, for the statements built here without the ORM
_WRITEBACKS = cast("Table", WriteBack.__table__)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A write-back item as a claim leased it: the columns writing it and recording its outcome need, as plain
    values (a claim builds no mapped object)."""

    id: int
    connector: str
    kind: str
    key: str
    record_id: str
    person_record_id: str | None
    person_id: int | None
    payload: dict[str, Any] | None
    attempts: int
    version: int


_CLAIMED_COLUMNS = [_WRITEBACKS.c[f.name] for f in fields(Claimed)]
_SYNC_RUNS = cast("Table", SyncRun.__table__)
#: a claimed row of this worker (``owner``), unless a newer version was queued meanwhile (``row_version``)
_LEASED_VERSION = (
    _WRITEBACKS.c.id == bindparam("row_id"),
    _WRITEBACKS.c.lease_owner == bindparam("owner"),
    _WRITEBACKS.c.version == bindparam("row_version"),
)
#: items the CRM took: done, their lease released
_MARK_DONE = Bulk(
    update(_WRITEBACKS)
    .where(*_LEASED_VERSION)
    .values(
        state="done",
        done_at=bindparam("now"),
        remote_id=bindparam("remote"),
        last_error=None,
        lease_owner=None,
        lease_until=None,
        updated_at=bindparam("now"),
    ),
    ("row_id", "owner", "row_version", "now", "remote"),
)
#: items to try again later, or dead letters, their lease released
_MARK_AGAIN = Bulk(
    update(_WRITEBACKS)
    .where(*_LEASED_VERSION)
    .values(
        state=bindparam("new_state"),
        attempts=bindparam("new_attempts"),
        next_attempt_at=bindparam("next_at"),
        last_error=bindparam("error"),
        lease_owner=None,
        lease_until=None,
    ),
    ("row_id", "owner", "row_version", "new_state", "new_attempts", "next_at", "error"),
)
#: the lease of a batch's rows this worker still holds: those whose version moved on while they were written
_RELEASE = (
    update(_WRITEBACKS)
    .where(one_of(_WRITEBACKS.c.id, "ids"), _WRITEBACKS.c.lease_owner == bindparam("owner"))
    .values(lease_owner=None, lease_until=None)
)


#: an item's batch family in SQL (``BATCH_FAMILIES``): the first kind of its family, or its own kind
_FAMILY = case(
    *(
        (_WRITEBACKS.c.kind.in_(family), family[0])
        for family in sorted({family for family in BATCH_FAMILIES.values() if len(family) > 1})
    ),
    else_=_WRITEBACKS.c.kind,
)


@cache
def _claim_statement(prompt: bool) -> Update:
    """``SyncService.claim``'s statement, built once per kind of sync with bound parameters (``b_connector``,
    ``now``, ``until``, ``owner``, ``limit``): the prompt sync claims several times a second beside the
    survey pages, and building the statement anew took half a millisecond of the event loop's thread each
    time, a third of the claim."""
    now = bindparam("now", type_=UTCDateTime())
    due = SyncService._due(bindparam("b_connector"), now)
    if prompt:
        due = (*due, SyncService._ready(now))
    order = SyncService._order(prompt)
    oldest = select(_FAMILY).where(*due).order_by(*order).limit(1).scalar_subquery()
    batch = (
        select(_WRITEBACKS.c.id)
        .where(*due, oldest == _FAMILY)
        .order_by(*order)
        .limit(bindparam("limit", type_=Integer()))
        .with_for_update(skip_locked=True)
    )
    return (
        update(_WRITEBACKS)
        .where(_WRITEBACKS.c.id.in_(batch))
        .values(lease_owner=bindparam("owner"), lease_until=bindparam("until"))
        .returning(*_CLAIMED_COLUMNS)
    )


def _lock_rows(conn: Connection, ids: list[int]) -> None:
    """Lock a batch's rows in ``_LOCK_ROWS``'s order before changing them; nothing to do on SQLite, whose
    writer holds the whole file from its BEGIN."""
    if conn.dialect.name != "sqlite":
        conn.execute(_LOCK_ROWS, {"ids": ids})


async def _pass_the_loop() -> None:
    """Let the event loop serve what waits (survey pages, answers, webhooks) between two steps of a batch.

    The prompt sync runs in the process that serves the survey pages. From the CRM's answer to its next call
    a batch runs without waiting for anything: its outcome recorded, the next batch claimed, its summaries
    read and its items built, each a millisecond or two on the event loop's thread. Run as one step they
    held every request in the process for 7-8 ms, 30 times a second under a stream of answers, and those
    stalls made the answers' slowest percent. Passed between steps, a request waits for one step at most."""
    await asyncio.sleep(0)


def _lost_a_lock_race(exc: DBAPIError) -> bool:
    """True for a deadlock victim or a serialization failure, which succeed when run again."""
    return getattr(exc.orig, "sqlstate", None) in _LOCK_RACE_STATES


def _store_cursor(s: Session, connector: str, value: str | None) -> None:
    """Store how far the events of ``connector`` were polled."""
    found = s.get(Cursor, (connector, EVENTS_STREAM))
    if found is None:
        s.add(Cursor(connector=connector, stream=EVENTS_STREAM, value=value))
    else:
        found.value = value


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class RunStats:
    written: int = 0
    retried: int = 0
    dead: int = 0
    events: int = 0
    batches: int = 0
    error: str | None = None
    stopped: bool = False
    details: list[str] = field(default_factory=list)


class SyncService:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.owner = worker_id()
        #: connectors whose CRM could not be reached, with the number of batches refused in a row
        self._outages: dict[str, int] = {}

    # --- queue inspection ---------------------------------------------------------------------------------------

    async def pending(self, connector: str, due_only: bool = True) -> int:
        async with self.hub.store.session() as s:
            q = (
                select(func.count())
                .select_from(WriteBack)
                .where(WriteBack.connector == connector, WriteBack.state == "queued")
            )
            if due_only:
                q = q.where(WriteBack.next_attempt_at <= self.hub.now())
            return int(await s.scalar(q) or 0)

    async def settled(self, connector: str) -> bool:
        """Whether an item of ``connector`` is ready for the prompt sync (``WriteBackQueue.rows`` decides
        when each is, as it is queued): one look into an index, however many items wait for their quiet
        period."""
        now = self.hub.now()
        first = (
            select(WriteBack.id)
            .where(*self._due(connector, now), self._ready(now))
            .order_by(*self._order(prompt=True))
            .limit(1)
        )
        return await self.hub.store.read(lambda conn: conn.scalar(first) is not None)

    async def next_ready_at(self, connector: str) -> datetime | None:
        """When the prompt sync should look at ``connector`` again: the moment its next waiting item is ready.

        Never later than that moment, sometimes earlier (an item held by a retry's backoff counts from its
        due time): looking early costs one query, looking late costs freshness. None when nothing of the
        connector waits.
        """
        now = self.hub.now()
        waiting = (
            WriteBack.connector == connector,
            WriteBack.state == "queued",
            or_(WriteBack.lease_until.is_(None), WriteBack.lease_until < now),
        )
        if await self.settled(connector):
            return now  # left ready by a run of another process, or re-armed during this one
        soonest = (
            select(func.min(WriteBack.ready_at)).where(*waiting, WriteBack.ready_at > now),
            select(func.min(WriteBack.next_attempt_at)).where(*waiting, WriteBack.next_attempt_at > now),
        )
        found = await self.hub.store.read(lambda conn: [conn.scalar(query) for query in soonest])
        times = [t for t in found if t is not None]
        return min(times) if times else None

    @staticmethod
    def _due(
        connector: str | BindParameter[Any], now: datetime | BindParameter[Any]
    ) -> tuple[ColumnElement[bool], ...]:
        """Queued items of ``connector`` that are due and that no worker holds a live lease on (values, or
        bound parameters for a statement built once)."""
        return (
            WriteBack.connector == connector,
            WriteBack.state == "queued",
            WriteBack.next_attempt_at <= now,
            or_(WriteBack.lease_until.is_(None), WriteBack.lease_until < now),
        )

    @staticmethod
    def _ready(now: datetime | BindParameter[Any]) -> ColumnElement[bool]:
        """Items the prompt sync writes now: complete answers at once, the others once their key is quiet,
        at the latest at their cap (``WriteBackQueue.rows``)."""
        return WriteBack.ready_at <= now

    @staticmethod
    def _order(prompt: bool) -> tuple[InstrumentedAttribute[datetime], InstrumentedAttribute[int]]:
        """The order items are claimed in, oldest first, along the index whose range is the condition that
        matters: the prompt sync walks ``ix_writebacks_ready`` from the first ready item, the scheduled sync
        ``ix_writebacks_due`` from the first due one; both end in the id, so a batch is the index's first
        rows and the database stops there. Ordered by due time, the prompt sync's claim read every queued
        item (on PostgreSQL it sorted them all), however many still waited for their quiet period: 6 ms a
        claim with a few thousand answers in their quiet period, the most of PostgreSQL's time under answers."""
        if prompt:
            return (WriteBack.ready_at, WriteBack.id)
        return (WriteBack.next_attempt_at, WriteBack.id)

    # --- claiming -------------------------------------------------------------------------------------------------

    async def claim(self, connector: str, limit: int, quiet_seconds: float | None = None) -> list[Claimed]:
        """Lease up to ``limit`` due items of one connector and one kind to this worker.

        With ``quiet_seconds`` (the prompt sync) only the items that are ready (``_ready``) are taken;
        without, every due item (the scheduled sync, ``cxhub sync``). The quiet period itself was applied
        when the items were queued (``WriteBackQueue.rows``, from ``sync.prompt_seconds``).

        A batch holds one kind only (the kind of the first item in ``_order``), because CRM batch limits are per
        call and per object: 200 timeline records fill one Salesforce call, while a batch mixing 67
        summaries, 67 timeline entries and 66 case updates would take three half-empty calls. Summaries
        and opt-outs go together (``BATCH_FAMILIES``): both update the person record.

        One statement: an UPDATE of the batch's rows (found along the claim's index, locked with ``SKIP
        LOCKED`` where the database has row locks) that returns them. Under a stream of answers the prompt
        sync claims several times a second in the process that serves the survey pages; four statements and
        mapped objects per claim held SQLite's one writer for milliseconds on a thread (every step waiting
        for the event loop's thread to let go of the interpreter lock), and the answers' batches behind it
        waited: a batch of up to ``SHORT_WRITE_ROWS`` rows is claimed right on the loop's thread instead.
        """
        now = self.hub.now()
        params = {
            "b_connector": connector,
            "now": now,
            "until": now + timedelta(seconds=self.hub.config.sync.lease_seconds),
            "owner": self.owner,
            "limit": limit,
        }
        claim = _claim_statement(prompt=quiet_seconds is not None)

        def lease(conn: Connection) -> list[Claimed]:
            return sorted((Claimed(*row) for row in conn.execute(claim, params)), key=lambda row: row.id)

        # a write of the store's (on SQLite the one writer, beside the answers and webhooks it would otherwise
        # fight for the file's write lock), like every write of the queue here
        return await self.hub.store.write(lease, short=limit <= SHORT_WRITE_ROWS)

    async def _items(self, rows: list[Claimed]) -> tuple[list[WriteBackItem], list[Claimed]]:
        """Turn claimed rows into items; summaries are computed now, from the latest responses (one read for
        the batch's people)."""
        items: list[WriteBackItem] = []
        orphans: list[Claimed] = []
        people = [row.person_id for row in rows if row.kind == "person_summary" and row.person_id]
        summaries: dict[int, PersonSummary] = {}
        if people:
            now = self.hub.now()
            summaries = await self.hub.store.read(lambda conn: person_summaries(conn, people, now))
        for row in rows:
            payload: Any = row.payload
            if row.kind == "person_summary":
                summary = summaries.get(row.person_id) if row.person_id else None
                if summary is None:
                    orphans.append(row)
                    continue
                payload = summary.model_dump(mode="json")
            items.append(
                WriteBackItem.model_validate(
                    {
                        "id": row.id,
                        "key": row.key,
                        "record_id": row.record_id,
                        "person_record_id": row.person_record_id,
                        "attempt": row.attempts + 1,
                        "payload": payload,
                    }
                )
            )
        return items, orphans

    # --- one run --------------------------------------------------------------------------------------------------

    async def run(
        self,
        connector_name: str,
        kind: str = "sync",
        progress: Callable[[int, int], None] | None = None,
        quiet_seconds: float | None = None,
    ) -> RunStats:
        """Drain the due items of one connector, batch by batch, and record the run.

        With ``quiet_seconds`` (the prompt sync) only the items that have settled are written (``claim``).
        """
        hub = self.hub
        connector = hub.connectors[connector_name]
        stats = RunStats()
        run_id = await self._start_run(connector_name, kind)
        # the count walks every due item: only for a run someone watches (``cxhub sync``'s progress bar)
        total = await self.pending(connector_name) if progress is not None else 0
        with RUN_SECONDS.labels(connector_name, kind).time():
            size = connector.batch_size
            if kind == "full":
                size = max(size, getattr(connector, "bulk_batch_size", size))
            while not stats.stopped:
                rows = await self.claim(connector_name, max(1, size), quiet_seconds)
                if not rows:
                    break
                await _pass_the_loop()
                stats.batches += 1
                await self._write_batch(connector_name, rows, stats)
                if progress is not None:
                    progress(stats.written + stats.dead + stats.retried, max(total, stats.written))
        await self._finish_run(
            run_id,
            written=stats.written,
            retried=stats.retried,
            dead=stats.dead,
            error=stats.error,
        )
        if stats.written or stats.dead or stats.error:
            log.info(
                "sync.run",
                connector=connector_name,
                written=stats.written,
                retried=stats.retried,
                dead=stats.dead,
                error=stats.error,
            )
        return stats

    async def _start_run(self, connector: str, kind: str) -> int:
        """Record that a run of ``kind`` started (``cxhub status`` lists the runs); its id."""

        started = (
            insert(_SYNC_RUNS)
            .values(connector=connector, kind=kind, started_at=utcnow())
            .returning(_SYNC_RUNS.c.id)
        )
        # one row: a short write (on SQLite right on the loop's thread, not the writer's, where it held the
        # file's one writer, and the answers behind it, for 10 ms)
        return await self.hub.store.write(lambda conn: int(conn.execute(started).scalar_one()), short=True)

    async def _finish_run(self, run_id: int, **figures: Any) -> None:
        """Record a run's end and its figures (columns of ``SyncRun``)."""
        await self._changed(
            update(SyncRun).where(SyncRun.id == run_id).values(finished_at=utcnow(), **figures), short=True
        )

    async def _write_batch(self, connector_name: str, rows: list[Claimed], stats: RunStats) -> None:
        """Send one claimed batch, then record what became of it.

        The lease is renewed from the claim on (building 10,000 summaries takes time too) until the CRM has
        answered, and the renewal has finished its last statement before the recording starts: both update
        the same rows, and run side by side they deadlocked on PostgreSQL, which could cost the recording and
        send the batch to the CRM a second time.
        """
        stop = asyncio.Event()
        renewal = asyncio.create_task(self._keep_leased(sorted(row.id for row in rows), stop))
        try:
            outcomes = await self._send(connector_name, rows, stats)
        finally:
            stop.set()
            await renewal
        await self._record(outcomes, stats)
        await _pass_the_loop()
        results = [result for _, result, item in outcomes if item is not None]
        if results:  # after the recording, so a hold covers the batch's own rows too
            await self._pace(connector_name, results, stats)

    async def _send(
        self, connector_name: str, rows: list[Claimed], stats: RunStats
    ) -> list[tuple[Claimed, WriteBackResult, WriteBackItem | None]]:
        """Hand the batch to the connector and pair every row with its result (a failure is a result too)."""
        connector = self.hub.connectors[connector_name]
        items, orphans = await self._items(rows)
        await _pass_the_loop()
        by_id = {row.id: row for row in rows}
        outcomes: list[tuple[Claimed, WriteBackResult, WriteBackItem | None]] = [
            (row, WriteBackResult(item_id=row.id, status="ok"), None) for row in orphans
        ]
        results: list[WriteBackResult] = []
        if items:
            try:
                results = await connector.write_back(items)
            except Exception as exc:
                results = self._failed(connector_name, items, exc, stats)
        answered = {r.item_id: r for r in results if r.item_id in by_id}
        for item in items:
            result = answered.get(item.id) or WriteBackResult.transient(
                item, "the connector returned no result"
            )
            outcomes.append((by_id[item.id], result, item))
        return outcomes

    async def _pace(self, connector_name: str, results: list[WriteBackResult], stats: RunStats) -> None:
        """Hold the connector's queue when the CRM said "wait", or when nothing of the batch reached it.

        A batch none of whose items was sent means the CRM (or the way to it) is down, however the connector
        reported it: the run stops and every queued item of the connector waits for a backoff that doubles
        with every such batch in a row, so a long outage is no hot loop against a closed port. Items not
        sent count no attempt (see ``_record``), so an outage never turns the queue into dead letters.
        """
        unsent = [r for r in results if r.status == "transient" and not r.sent]
        hold = max((r.retry_after or 0.0 for r in results if r.status == "transient"), default=0.0)
        if len(unsent) < len(results):
            self._reached(connector_name)
        elif not hold:  # a budget's hold says when; an outage does not
            hold = self._unreachable(connector_name, unsent[0].error or "not sent")
        if len(unsent) == len(results):
            stats.stopped = True
            stats.error = stats.error or f"not sent: {unsent[0].error}"
        if hold:
            await self._hold(connector_name, hold)

    def _failed(
        self, connector_name: str, items: list[WriteBackItem], exc: Exception, stats: RunStats
    ) -> list[WriteBackResult]:
        """Turn a write that raised into one result per item, and stop the run.

        Whatever never reached the CRM (a refused or timed-out connection, the hub's own budget, credentials
        the CRM refused) is not sent,
        whichever way the connector reports it: a raw ``httpx.ConnectError`` or ``requests``
        ``ConnectionError`` is the same as ``TransientError(sent=False)``.
        """
        error = f"{type(exc).__name__}: {exc}"
        stats.stopped, stats.error = True, error
        retry_after: float | None = None
        sent = True
        if isinstance(exc, TransientError):
            retry_after, sent = exc.retry_after, exc.sent and not never_sent(exc)
            error = str(exc)
        elif isinstance(exc, AuthError | ConfigError):
            # refused credentials or a setting the CRM rejects: nothing was applied, and the queue must wait
            # for the admin (logged once per outage by ``_pace``, shown by status, check and /metrics)
            sent = False
        elif never_sent(exc):
            sent = False
        else:
            log.exception("sync.connector_failed", connector=connector_name)
        return [WriteBackResult.transient(i, error, retry_after, sent=sent) for i in items]

    def _unreachable(self, connector: str, error: str) -> float:
        """Count one more batch the CRM never got; the delay before the connector's next try.

        The first one of an outage is logged, the rest are not: a CRM down for an hour is one warning, not
        one per prompt sync. The delay doubles with every refused batch (with jitter, up to
        ``backoff_max_seconds``), so a long outage is no hot loop against a closed port.
        """
        streak = self._outages.get(connector, 0) + 1
        self._outages[connector] = streak
        if streak == 1:
            log.warning("sync.crm_not_reached", connector=connector, error=error)
        cfg = self.hub.config.sync
        return backoff_delay(streak, base=cfg.backoff_base_seconds, cap=cfg.backoff_max_seconds)

    def _reached(self, connector: str) -> None:
        """Some of a batch reached the CRM: an outage, if there was one, is over (logged once)."""
        refused = self._outages.pop(connector, 0)
        if refused:
            log.info("sync.crm_reached_again", connector=connector, refused_batches=refused)

    async def _keep_leased(self, ids: list[int], stop: asyncio.Event) -> None:
        """Renew this worker's lease on a batch while the connector writes it, until ``stop`` is set.

        A bulk job can run for minutes; without renewal another worker would take the items over when the
        lease ran out and start a second job for the same records.
        """
        seconds = self.hub.config.sync.lease_seconds

        def renewal(conn: Connection) -> None:
            _lock_rows(conn, ids)
            conn.execute(
                update(WriteBack)
                .where(one_of(WriteBack.id, "ids"), WriteBack.lease_owner == self.owner)
                .values(lease_until=self.hub.now() + timedelta(seconds=seconds)),
                {"ids": ids},
            )

        async def renew() -> None:
            await self.hub.store.write(renewal)

        await renew_until(stop, seconds, renew, f"{len(ids)} write-backs")

    async def _hold(self, connector: str, seconds: float) -> None:
        """The CRM said "wait" (Retry-After): no item of that connector is due before then.

        Without this the next run would try the other kinds' batches and be refused again. Attempts are not
        counted for items that were not sent.
        """
        until = self.hub.now() + timedelta(seconds=seconds)

        def hold(conn: Connection) -> None:
            conn.execute(
                update(WriteBack)
                .where(
                    WriteBack.connector == connector,
                    WriteBack.state == "queued",
                    WriteBack.next_attempt_at < until,
                )
                .values(next_attempt_at=until)
            )

        await self._transaction(hold)

    async def _transaction(self, work: Callable[[Connection], None], *, short: bool = False) -> None:
        """Run ``work`` in one transaction, again from the start if the database chose it as a lock victim.

        Several workers update the queue's rows at once; PostgreSQL resolves a deadlock or a serialization
        conflict by failing one transaction, which then succeeds when run again. Losing it instead would
        lose the outcome of a batch the CRM already has, and the batch would be written a second time.
        """
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            try:
                await self.hub.store.write(work, short=short)
                return
            except DBAPIError as exc:
                if attempt == TRANSACTION_ATTEMPTS or not _lost_a_lock_race(exc):
                    raise
                log.warning("sync.transaction_retried", attempt=attempt, error=str(exc.orig))
                await asyncio.sleep(random.uniform(0, 0.05 * 2**attempt))

    async def _record(
        self, outcomes: list[tuple[Claimed, WriteBackResult, WriteBackItem | None]], stats: RunStats
    ) -> None:
        """Record a batch's results in one transaction, then tell the hooks.

        Only rows this worker still leases are touched; a row done while a newer version was queued keeps
        its newer version queued (only the lease is released).
        """
        hub = self.hub
        cfg = hub.config.sync
        now = hub.now()
        dead_rows: set[int] = set()
        done: list[dict[str, Any]] = []
        again: list[dict[str, Any]] = []
        # one draw of the backoff per batch (per attempt count and Retry-After): a batch refused as a whole
        # comes back as one batch, not as one random due time per item, each a call to the CRM of its own
        delays: dict[tuple[int, float | None], float] = {}
        for row, result, _ in outcomes:
            if result.status == "ok":
                done.append({"row_id": row.id, "row_version": row.version, "remote": result.remote_id})
                stats.written += 1
                continue
            attempts = row.attempts + (1 if result.sent else 0)
            dead = result.status == "failed" or attempts >= cfg.max_attempts
            drawn = (attempts, result.retry_after)
            if drawn not in delays:
                delays[drawn] = backoff_delay(
                    attempts,
                    base=cfg.backoff_base_seconds,
                    cap=cfg.backoff_max_seconds,
                    retry_after=result.retry_after,
                )
            delay = delays[drawn]
            again.append(
                {
                    "row_id": row.id,
                    "row_version": row.version,
                    "new_state": "dead" if dead else "queued",
                    "new_attempts": attempts,
                    "next_at": now + timedelta(seconds=delay),
                    "error": (result.error or "failed")[:2000],
                }
            )
            if dead:
                dead_rows.add(row.id)
                stats.dead += 1
            else:
                stats.retried += 1
        # one statement per outcome kind, each executed for every row at once (executemany): a batch of
        # 200 is three round trips to the database, not 400
        mine = {"owner": self.owner, "now": now}
        ids = sorted(row.id for row, _, _ in outcomes)

        def record(conn: Connection) -> None:
            _lock_rows(conn, ids)
            _MARK_DONE.execute(conn, [{**row, **mine} for row in done])
            # a row re-armed with a newer version meanwhile keeps its fresh attempts and stays queued; its
            # ``ready_at`` stays as its last re-arm set it, so the prompt sync's debounce does not hold a retry
            # back once its backoff is over
            _MARK_AGAIN.execute(conn, [{**row, **mine} for row in again])
            if ids:  # rows whose version moved on while they were written: their lease only
                conn.execute(_RELEASE, {"ids": ids, "owner": self.owner})

        await self._transaction(record, short=len(outcomes) <= SHORT_WRITE_ROWS)
        for row, result, item in outcomes:
            dead = row.id in dead_rows
            WRITTEN.labels(
                row.connector, "ok" if result.status == "ok" else ("dead" if dead else "retry")
            ).inc()
            if item is None:
                continue
            if result.status == "ok":
                await hub.plugins.notify(
                    "hub_on_response_written_back", connector=row.connector, item=item, result=result
                )
            else:
                await hub.plugins.notify(
                    "hub_on_write_back_failed",
                    connector=row.connector,
                    item=item,
                    error=result.error or "failed",
                    dead_letter=dead,
                )

    # --- dead letters and full re-sync ----------------------------------------------------------------------

    async def replay(self, connector: str | None = None, ids: list[int] | None = None) -> int:
        """Re-queue dead letters (all, one connector's, or the given ids)."""
        q = update(WriteBack).where(WriteBack.state == "dead")
        if connector:
            q = q.where(WriteBack.connector == connector)
        if ids:
            q = q.where(WriteBack.id.in_(ids))
        now = self.hub.now()
        count = await self._changed(q.values(state="queued", attempts=0, next_attempt_at=now, updated_at=now))
        self.hub.wake("sync")
        return count

    async def requeue_all(self, connector: str) -> int:
        """For a full re-sync: re-arm every item ever written to ``connector`` (idempotent keys make it safe)."""
        return await self._changed(
            update(WriteBack)
            .where(WriteBack.connector == connector, WriteBack.state != "queued")
            .values(
                state="queued",
                attempts=0,
                version=WriteBack.version + 1,
                next_attempt_at=self.hub.now(),
                updated_at=self.hub.now(),
            )
        )

    async def _changed(self, statement: Update, *, short: bool = False) -> int:
        """Run an UPDATE (of the queue, of a run) in a transaction of its own; how many rows it changed.
        ``short``: it changes a row or a few (``Store.write``)."""
        return await self.hub.store.write(lambda conn: conn.execute(statement).rowcount, short=short)

    # --- polling ----------------------------------------------------------------------------------------------

    async def poll(self, connector_name: str) -> RunStats:
        """Fetch events since the stored cursor; the cursor advances only after the events are stored."""
        hub = self.hub
        connector = hub.connectors[connector_name]
        stats = RunStats()
        async with hub.store.session() as s:
            row = await s.get(Cursor, (connector_name, EVENTS_STREAM))
            cursor = row.value if row is not None else None
        run_id = await self._start_run(connector_name, "poll")
        try:
            for _page in range(1000):
                result = await connector.fetch_events(cursor)
                fresh = await hub.engine.receive(connector_name, result.events, source="poll")
                stats.events += sum(fresh)
                cursor = result.next_cursor
                await hub.store.write_orm(partial(_store_cursor, connector=connector_name, value=cursor))
                if not result.has_more:
                    break
        except Exception as exc:
            # a CRM that refuses connections is a failed poll, retried at the next interval, like a 503; a
            # plugin's own bug is one too, recorded on the run (so `cxhub status` shows it) with its traceback
            stats.error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, HubError) or never_sent(exc):
                log.warning("poll.failed", connector=connector_name, error=str(exc))
            else:
                log.exception("poll.plugin_failed", connector=connector_name)
        await self._finish_run(run_id, events=stats.events, watermark=cursor, error=stats.error)
        return stats

    # --- stopping ---------------------------------------------------------------------------------------------

    async def release_leases(self) -> int:
        """Hand back every write-back this process has claimed; for a clean stop, once its jobs are over.

        An item claimed but not written becomes claimable by another process at once instead of after
        ``sync.lease_seconds``. One whose write reached the CRM before the job was cancelled is written again,
        under the same key (the connector's external id), so the CRM still holds it once.
        """
        return await self._changed(
            update(WriteBack)
            .where(WriteBack.lease_owner == self.owner)
            .values(lease_owner=None, lease_until=None)
        )
