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
import contextlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy import bindparam, func, or_, select, update

from hub.errors import AuthError, ConfigError, HubError, TransientError
from hub.http import backoff_delay
from hub.models import WriteBackItem, WriteBackResult
from hub.store.tables import Cursor, SyncRun, WriteBack, utcnow
from hub.summaries import person_summary

if TYPE_CHECKING:
    from sqlalchemy import Table

    from hub.app import Hub

log = structlog.get_logger("hub.sync")

WRITTEN = Counter("cxhub_writebacks_total", "Write-back items by outcome", ["connector", "outcome"])
RUN_SECONDS = Histogram("cxhub_sync_run_seconds", "Duration of sync runs", ["connector", "kind"])

EVENTS_STREAM = "events"


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
    remaining: int = 0
    details: list[str] = field(default_factory=list)


class SyncService:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.owner = worker_id()

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

    async def settled(self, connector: str, quiet_seconds: float) -> bool:
        """Debounce for the prompt sync: due items exist and none arrived in the last ``quiet_seconds``.

        A customer who gives a score and then a comment a moment later causes one write, not two; an
        item waiting ten times the quiet period is written even if answers keep arriving.
        """
        now = self.hub.now()
        async with self.hub.store.session() as s:
            oldest, newest = (
                await s.execute(
                    select(func.min(WriteBack.updated_at), func.max(WriteBack.updated_at)).where(
                        WriteBack.connector == connector,
                        WriteBack.state == "queued",
                        WriteBack.next_attempt_at <= now,
                    )
                )
            ).one()
        if oldest is None:
            return False
        quiet = timedelta(seconds=quiet_seconds)
        return bool(newest <= now - quiet or oldest <= now - 10 * quiet)

    # --- claiming -------------------------------------------------------------------------------------------------

    async def claim(self, connector: str, limit: int) -> list[WriteBack]:
        """Lease up to ``limit`` due items of one connector and one kind to this worker.

        A batch holds one kind only (the kind of the oldest due item), because CRM batch limits are per
        call and per object: 200 timeline records fill one Salesforce call, while a batch mixing 67
        summaries, 67 timeline entries and 66 case updates would take three half-empty calls.
        """
        now = self.hub.now()
        until = now + timedelta(seconds=self.hub.config.sync.lease_seconds)
        free = or_(WriteBack.lease_until.is_(None), WriteBack.lease_until < now)
        due = (
            WriteBack.connector == connector,
            WriteBack.state == "queued",
            WriteBack.next_attempt_at <= now,
            free,
        )
        async with self.hub.store.session() as s:
            kind = await s.scalar(
                select(WriteBack.kind).where(*due).order_by(WriteBack.next_attempt_at, WriteBack.id).limit(1)
            )
            if kind is None:
                return []
            ids = list(
                await s.scalars(
                    select(WriteBack.id)
                    .where(*due, WriteBack.kind == kind)
                    .order_by(WriteBack.next_attempt_at, WriteBack.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            )
            if not ids:
                return []
            await s.execute(
                update(WriteBack)
                .where(WriteBack.id.in_(ids), free)
                .values(lease_owner=self.owner, lease_until=until)
            )
            return list(
                await s.scalars(
                    select(WriteBack)
                    .where(
                        WriteBack.id.in_(ids),
                        WriteBack.lease_owner == self.owner,
                        WriteBack.lease_until == until,
                    )
                    .order_by(WriteBack.id)
                )
            )

    async def _items(self, rows: list[WriteBack]) -> tuple[list[WriteBackItem], list[WriteBack]]:
        """Turn claimed rows into items; summaries are computed now, from the latest responses."""
        items: list[WriteBackItem] = []
        orphans: list[WriteBack] = []
        now = self.hub.now()
        async with self.hub.store.session() as s:
            for row in rows:
                payload: Any = row.payload
                if row.kind == "person_summary":
                    summary = await person_summary(s, row.person_id, now) if row.person_id else None
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
        self, connector_name: str, kind: str = "sync", progress: Callable[[int, int], None] | None = None
    ) -> RunStats:
        """Drain the due items of one connector, batch by batch, and record the run."""
        hub = self.hub
        connector = hub.connectors[connector_name]
        stats = RunStats()
        async with hub.store.session() as s:
            run = SyncRun(connector=connector_name, kind=kind, started_at=utcnow())
            s.add(run)
        total = await self.pending(connector_name)
        with RUN_SECONDS.labels(connector_name, kind).time():
            size = connector.batch_size
            if kind == "full":
                size = max(size, getattr(connector, "bulk_batch_size", size))
            while not stats.stopped:
                rows = await self.claim(connector_name, max(1, size))
                if not rows:
                    break
                stats.batches += 1
                # the lease is renewed from the claim on: building 10,000 summaries takes time too
                renewal = asyncio.create_task(self._keep_leased([row.id for row in rows]))
                try:
                    await self._write_batch(connector_name, rows, stats)
                finally:
                    renewal.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await renewal
                if progress is not None:
                    progress(stats.written + stats.dead + stats.retried, max(total, stats.written))
        stats.remaining = await self.pending(connector_name, due_only=False)
        async with hub.store.session() as s:
            await s.execute(
                update(SyncRun)
                .where(SyncRun.id == run.id)
                .values(
                    finished_at=utcnow(),
                    written=stats.written,
                    retried=stats.retried,
                    dead=stats.dead,
                    error=stats.error,
                )
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

    async def _write_batch(self, connector_name: str, rows: list[WriteBack], stats: RunStats) -> None:
        connector = self.hub.connectors[connector_name]
        items, orphans = await self._items(rows)
        by_id = {row.id: row for row in rows}
        outcomes: list[tuple[WriteBack, WriteBackResult, WriteBackItem | None]] = [
            (row, WriteBackResult(item_id=row.id, status="ok"), None) for row in orphans
        ]
        results: list[WriteBackResult] = []
        if items:
            try:
                results = await connector.write_back(items)
            except TransientError as exc:
                results = [
                    WriteBackResult.transient(i, str(exc), exc.retry_after, sent=exc.sent) for i in items
                ]
                stats.stopped, stats.error = True, f"{type(exc).__name__}: {exc}"
                if exc.retry_after:
                    await self._hold(connector_name, exc.retry_after)
            except (AuthError, ConfigError) as exc:
                results = [WriteBackResult.transient(i, str(exc)) for i in items]
                stats.stopped, stats.error = True, f"{type(exc).__name__}: {exc}"
                log.error("sync.stopped", connector=connector_name, error=str(exc))
            except Exception as exc:
                log.exception("sync.connector_failed", connector=connector_name)
                results = [WriteBackResult.transient(i, f"{type(exc).__name__}: {exc}") for i in items]
                stats.stopped, stats.error = True, f"{type(exc).__name__}: {exc}"
        answered = {r.item_id: r for r in results if r.item_id in by_id}
        for item in items:
            result = answered.get(item.id) or WriteBackResult.transient(
                item, "the connector returned no result"
            )
            outcomes.append((by_id[item.id], result, item))
        await self._record(outcomes, stats)

    async def _keep_leased(self, ids: list[int]) -> None:
        """Renew this worker's lease on a batch while the connector writes it.

        A bulk job can run for minutes; without renewal another worker would take the items over when the
        lease ran out and start a second job for the same records.
        """
        seconds = self.hub.config.sync.lease_seconds
        while True:
            await asyncio.sleep(seconds / 3)
            try:
                async with self.hub.store.session() as s:
                    await s.execute(
                        update(WriteBack)
                        .where(WriteBack.id.in_(ids), WriteBack.lease_owner == self.owner)
                        .values(lease_until=self.hub.now() + timedelta(seconds=seconds))
                    )
            except Exception:  # a database hiccup: the next renewal, a third of a lease later, tries again
                log.warning("sync.lease_renewal_failed", items=len(ids), exc_info=True)

    async def _hold(self, connector: str, seconds: float) -> None:
        """The CRM said "wait" (Retry-After): no item of that connector is due before then.

        Without this the next run would try the other kinds' batches and be refused again. Attempts are not
        counted for items that were not sent.
        """
        until = self.hub.now() + timedelta(seconds=seconds)
        async with self.hub.store.session() as s:
            await s.execute(
                update(WriteBack)
                .where(
                    WriteBack.connector == connector,
                    WriteBack.state == "queued",
                    WriteBack.next_attempt_at < until,
                )
                .values(next_attempt_at=until)
            )

    async def _record(
        self, outcomes: list[tuple[WriteBack, WriteBackResult, WriteBackItem | None]], stats: RunStats
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
        for row, result, _ in outcomes:
            if result.status == "ok":
                done.append({"row_id": row.id, "row_version": row.version, "remote": result.remote_id})
                stats.written += 1
                continue
            attempts = row.attempts + (1 if result.sent else 0)
            dead = result.status == "failed" or attempts >= cfg.max_attempts
            delay = backoff_delay(
                attempts,
                base=cfg.backoff_base_seconds,
                cap=cfg.backoff_max_seconds,
                retry_after=result.retry_after,
            )
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
        table = cast("Table", WriteBack.__table__)
        mine = (table.c.id == bindparam("row_id"), table.c.lease_owner == self.owner)
        async with hub.store.session() as s:
            conn = await s.connection()
            if done:
                await conn.execute(
                    table.update()
                    .where(*mine, table.c.version == bindparam("row_version"))
                    .values(
                        state="done",
                        done_at=now,
                        remote_id=bindparam("remote"),
                        last_error=None,
                        lease_owner=None,
                        lease_until=None,
                        updated_at=now,
                    ),
                    done,
                )
            if again:
                # a row re-armed with a newer version meanwhile keeps its fresh attempts and stays queued
                await conn.execute(
                    table.update()
                    .where(*mine, table.c.version == bindparam("row_version"))
                    .values(
                        state=bindparam("new_state"),
                        attempts=bindparam("new_attempts"),
                        next_attempt_at=bindparam("next_at"),
                        last_error=bindparam("error"),
                        lease_owner=None,
                        lease_until=None,
                        updated_at=now,
                    ),
                    again,
                )
            released = [d["row_id"] for d in done + again]
            if released:  # rows whose version moved on while they were written: their lease only
                await conn.execute(
                    table.update()
                    .where(table.c.id.in_(released), table.c.lease_owner == self.owner)
                    .values(lease_owner=None, lease_until=None)
                )
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
        async with self.hub.store.session() as s:
            result = await s.execute(
                q.values(
                    state="queued", attempts=0, next_attempt_at=self.hub.now(), updated_at=self.hub.now()
                )
            )
        self.hub.wake("sync")
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def requeue_all(self, connector: str) -> int:
        """For a full re-sync: re-arm every item ever written to ``connector`` (idempotent keys make it safe)."""
        async with self.hub.store.session() as s:
            result = await s.execute(
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
        return int(result.rowcount)  # type: ignore[attr-defined]

    # --- polling ----------------------------------------------------------------------------------------------

    async def poll(self, connector_name: str) -> RunStats:
        """Fetch events since the stored cursor; the cursor advances only after the events are stored."""
        hub = self.hub
        connector = hub.connectors[connector_name]
        stats = RunStats()
        async with hub.store.session() as s:
            row = await s.get(Cursor, (connector_name, EVENTS_STREAM))
            cursor = row.value if row is not None else None
            run = SyncRun(connector=connector_name, kind="poll", started_at=utcnow())
            s.add(run)
        try:
            for _page in range(1000):
                result = await connector.fetch_events(cursor)
                fresh = await hub.engine.receive(connector_name, result.events, source="poll")
                stats.events += sum(fresh)
                cursor = result.next_cursor
                async with hub.store.session() as s:
                    found = await s.get(Cursor, (connector_name, EVENTS_STREAM))
                    if found is None:
                        s.add(Cursor(connector=connector_name, stream=EVENTS_STREAM, value=cursor))
                    else:
                        found.value = cursor
                if not result.has_more:
                    break
        except HubError as exc:
            stats.error = f"{type(exc).__name__}: {exc}"
            log.warning("poll.failed", connector=connector_name, error=str(exc))
        async with hub.store.session() as s:
            await s.execute(
                update(SyncRun)
                .where(SyncRun.id == run.id)
                .values(finished_at=utcnow(), events=stats.events, watermark=cursor, error=stats.error)
            )
        return stats
