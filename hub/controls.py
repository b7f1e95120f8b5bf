"""What an admin may change and do about a connector at run time, shared by the cockpit, the API, the CLI and
the scheduler: pause and resume, the sync and poll schedules, run a sync or a poll now, a full re-sync, and the
connector's state as one record.

Everything here goes through the store, never through a scheduler's memory, so it holds when the web process
and the scheduler run apart (``cxhub serve --no-scheduler`` beside ``cxhub worker``):

* pause and the schedules live in ``ConnectorControl``; every scheduled sync and poll reads the pause at its
  start, and each scheduler re-reads the schedules at every tick (``Scheduler._controls``) and re-times its
  jobs when they changed; a change also wakes a scheduler that runs in the same process, so it applies at once;
* "run now" runs the sync (or poll) in the process that was asked, under the same job lock the scheduled runs
  take (``job:sync:<name>`` / ``job:poll:<name>``, a database or file lock that every process sees): never
  twice at once, whichever process holds the scheduler. When another run holds the lock, that run writes what
  is due, and the caller is told so. A long run goes on in the background once ``RUN_WAIT_SECONDS`` have
  passed, so a page or an API call never waits for a 10,000-item re-sync.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.store.tables import ConnectorControl, Cursor, RejectedWebhook, SyncRun, WriteBack, utcnow
from hub.sync import BATCH_FAMILIES, EVENTS_STREAM, RunStats

if TYPE_CHECKING:
    from hub.app import Hub
    from hub.config import HubConfig

#: how long an action waits for its run before answering "running in the background"
RUN_WAIT_SECONDS = 5.0
#: the shortest schedule an admin may set: a sync or poll every few seconds would only spend the CRM's allowance
MIN_SECONDS = 10
#: the longest: a week
MAX_SECONDS = 7 * 24 * 3600
#: the wake that makes a scheduler in this process re-read the controls at once
WAKE = "controls"

T = TypeVar("T")

#: runs started by an action and still going: kept so the event loop does not drop them half-way
_background: set[asyncio.Task[Any]] = set()


# --- the stored controls ---------------------------------------------------------------------------------------


async def control(hub: Hub, name: str) -> ConnectorControl | None:
    async with hub.store.session() as s:
        return await s.get(ConnectorControl, name)


async def controls(hub: Hub) -> dict[str, ConnectorControl]:
    async with hub.store.session() as s:
        return {row.connector: row for row in await s.scalars(select(ConnectorControl))}


async def is_paused(hub: Hub, name: str) -> bool:
    """Read at the start of every scheduled sync and poll: a pause set in another process counts at once."""
    async with hub.store.session() as s:
        return bool(await s.scalar(select(ConnectorControl.paused).where(ConnectorControl.connector == name)))


async def paused_connectors(hub: Hub) -> set[str]:
    """One query for the prompt sync's pass over every connector."""
    paused = select(ConnectorControl.connector).where(ConnectorControl.paused)
    return await hub.store.read(lambda conn: set(conn.scalars(paused)))


async def _change(hub: Hub, name: str, actor: str, **values: Any) -> ConnectorControl:
    async with hub.store.session() as s:
        row = await s.get(ConnectorControl, name)
        if row is None:
            row = ConnectorControl(connector=name, paused=False)
            s.add(row)
        for key, value in values.items():
            setattr(row, key, value)
        row.updated_at = utcnow()
        row.updated_by = actor
    hub.wake(WAKE)
    return row


async def set_paused(hub: Hub, name: str, paused: bool, actor: str) -> ConnectorControl:
    """Pause (or resume) a connector's scheduled sync and poll. Webhooks are still taken and stored, and
    answers still queue their write-backs: they are written once the connector is resumed."""
    return await _change(hub, name, actor, paused=paused)


async def set_schedule(
    hub: Hub, name: str, sync_seconds: int | None, poll_seconds: int | None, actor: str
) -> ConnectorControl:
    """Replace the configured sync schedule (a cron) by an interval, and the poll interval; None: as configured.
    A poll interval of 0 turns polling off."""
    for value in (sync_seconds, poll_seconds):
        if value is not None and value != 0 and not MIN_SECONDS <= value <= MAX_SECONDS:
            raise ValueError(f"an interval is between {MIN_SECONDS} and {MAX_SECONDS} seconds")
    if sync_seconds == 0:
        raise ValueError("the sync cannot be turned off; pause the connector instead")
    return await _change(hub, name, actor, sync_seconds=sync_seconds, poll_seconds=poll_seconds)


# --- the effective schedule ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """A connector's schedule: the config's, and what runs (the admin's override, else the config's)."""

    config_cron: str
    config_poll_seconds: float
    sync_seconds: int | None
    poll_seconds: float

    @property
    def polls(self) -> bool:
        return self.poll_seconds > 0

    def sync_trigger(self) -> CronTrigger | IntervalTrigger:
        if self.sync_seconds:
            return IntervalTrigger(seconds=self.sync_seconds)
        return CronTrigger.from_crontab(self.config_cron, timezone="UTC")

    def next_sync(self, last: datetime | None, now: datetime) -> datetime | None:
        """Computed (no scheduler in this process): the interval after the last run, or the cron's next time."""
        if self.sync_seconds:
            return max(now, last + timedelta(seconds=self.sync_seconds)) if last else now
        fire: datetime | None = self.sync_trigger().get_next_fire_time(None, now)
        return fire

    def next_poll(self, last: datetime | None, now: datetime) -> datetime | None:
        if not self.polls:
            return None
        return max(now, last + timedelta(seconds=self.poll_seconds)) if last else now


def schedule(config: HubConfig, name: str, row: ConnectorControl | None) -> Schedule:
    """The connector's schedule in ``config``, with the admin's override ``row`` (None: none stored)."""
    instance = config.connectors[name]
    cron = instance.sync_cron or config.sync.cron
    poll = float(instance.poll_interval_seconds)
    override = row.poll_seconds if row is not None else None
    return Schedule(
        config_cron=cron,
        config_poll_seconds=poll,
        sync_seconds=row.sync_seconds if row is not None else None,
        poll_seconds=float(override) if override is not None else poll,
    )


async def polls(hub: Hub, name: str) -> bool:
    """Whether the connector polls, as configured or as an admin set it."""
    return schedule(hub.config, name, await control(hub, name)).polls


# --- running now -----------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What became of "run now": ``done`` (with the run's figures), ``running`` (goes on in the background),
    ``busy`` (another run holds the connector's lock; it writes what is due) or ``paused``."""

    status: str
    stats: RunStats | None = None


async def _start(hub: Hub, lock: str, work: Callable[[], Awaitable[RunStats]], wait: float | None) -> Outcome:
    task: asyncio.Task[RunStats | None] = asyncio.create_task(hub.singleton(lock, work))
    _background.add(task)
    task.add_done_callback(_background.discard)
    done, _ = await asyncio.wait({task}, timeout=RUN_WAIT_SECONDS if wait is None else wait)
    if not done:
        return Outcome("running")
    stats = task.result()
    return Outcome("busy") if stats is None else Outcome("done", stats)


async def run_sync(hub: Hub, name: str, kind: str = "sync", wait: float | None = None) -> Outcome:
    """Write the connector's due items now, under the lock the scheduled syncs take."""
    if await is_paused(hub, name):
        return Outcome("paused")
    return await _start(hub, f"job:sync:{name}", lambda: hub.sync.run(name, kind=kind), wait)


async def run_poll(hub: Hub, name: str, wait: float | None = None) -> Outcome:
    """Fetch the connector's new events now, under the lock the scheduled polls take."""
    if await is_paused(hub, name):
        return Outcome("paused")
    return await _start(hub, f"job:poll:{name}", lambda: hub.sync.poll(name), wait)


async def finish_runs(hub: Hub, grace_seconds: float) -> None:
    """For a clean stop of a web process: let the runs that actions started finish within ``grace_seconds``,
    cancel the rest and hand back their items (written again later under the same keys, by any process)."""
    if not _background:
        return
    _, late = await asyncio.wait(set(_background), timeout=grace_seconds)
    for task in late:
        task.cancel()
    if late:
        await asyncio.wait(late, timeout=5)  # their clean-up releases their job locks
        await hub.sync.release_leases()


# --- full re-sync ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResyncPlan:
    """What a full re-sync of a connector queues and what it costs: every write-back ever queued for it, in
    batches of one family each (``hub.sync.BATCH_FAMILIES``), of up to ``batch_size`` items (the connector's
    bulk size when it has one), one call to the CRM per batch at least."""

    items: int
    by_kind: dict[str, int]
    batch_size: int
    calls: int


async def resync_plan(hub: Hub, name: str) -> ResyncPlan:
    connector = hub.connectors[name]
    size = max(1, connector.batch_size, int(getattr(connector, "bulk_batch_size", 0) or 0))
    async with hub.store.session() as s:
        by_kind = {
            str(kind): int(count)
            for kind, count in (
                await s.execute(
                    select(WriteBack.kind, func.count())
                    .where(WriteBack.connector == name)
                    .group_by(WriteBack.kind)
                )
            ).all()
        }
    families: dict[tuple[str, ...], int] = {}
    for kind, count in by_kind.items():
        family = BATCH_FAMILIES.get(kind, (kind,))
        families[family] = families.get(family, 0) + count
    calls = sum(math.ceil(count / size) for count in families.values())
    return ResyncPlan(
        items=sum(by_kind.values()), by_kind=dict(sorted(by_kind.items())), batch_size=size, calls=calls
    )


async def full_resync(hub: Hub, name: str, wait: float | None = None) -> tuple[int, Outcome]:
    """Queue every write-back of the connector again (same keys: the CRM upserts, nothing is duplicated),
    then run the sync now as a full re-sync (the connector's bulk size). A paused connector keeps them queued."""
    requeued = await hub.sync.requeue_all(name)
    return requeued, await run_sync(hub, name, kind="full", wait=wait)


# --- the state ---------------------------------------------------------------------------------------------------


async def last_runs(session: AsyncSession, connector: str) -> dict[str, SyncRun | None]:
    """The newest write-back run (``sync``, a full re-sync counts) that did something, and the newest finished
    ``poll``.

    A sync run of the cron with nothing due would hide the one that stopped, so those are skipped. A poll is
    different: one that found no new event still ran, advanced the watermark and proves the CRM answers, so
    the newest finished poll counts, whatever it found (a poll still running has no finish time yet).
    """
    did_something = or_(
        SyncRun.error.is_not(None),
        SyncRun.written > 0,
        SyncRun.retried > 0,
        SyncRun.dead > 0,
        SyncRun.events > 0,
    )
    wanted = {
        "sync": (SyncRun.kind.in_(("sync", "full")), did_something),
        "poll": (SyncRun.kind == "poll", SyncRun.finished_at.is_not(None)),
    }
    last: dict[str, SyncRun | None] = {}
    for kind, conditions in wanted.items():
        last[kind] = await session.scalar(
            select(SyncRun)
            .where(SyncRun.connector == connector, *conditions)
            .order_by(SyncRun.id.desc())
            .limit(1)
        )
    return last


@dataclass
class ConnectorState:
    """One connector as the cockpit and the API show it."""

    name: str
    plugin: str
    enabled: bool
    paused: bool
    schedule: Schedule
    updated_by: str | None
    updated_at: datetime | None
    last_sync: SyncRun | None
    last_poll: SyncRun | None
    watermark: str | None
    queued: dict[str, int]
    dead: int
    #: the next safety-net sync and poll, and where they come from: "scheduler" (this process runs it) or
    #: "estimate" (from the schedule and the last run: the scheduler runs in another process)
    next_sync: datetime | None = None
    next_poll: datetime | None = None
    next_source: str = "estimate"
    runs: list[SyncRun] = field(default_factory=list)
    runs_total: int = 0
    dead_letters: list[WriteBack] = field(default_factory=list)
    rejected: list[RejectedWebhook] = field(default_factory=list)

    @property
    def queued_total(self) -> int:
        return sum(self.queued.values())


async def _listed(s: AsyncSession, query: Select[T], limit: int, offset: int = 0) -> list[T]:
    return list(await s.scalars(query.limit(limit).offset(offset)))


#: what the scheduler of this process says of a connector's next runs: (sync, poll), or None without one
NextRuns = Callable[[str], tuple[datetime | None, datetime | None]]


async def connector_state(
    hub: Hub,
    name: str,
    next_runs: NextRuns | None = None,
    *,
    runs: int = 0,
    offset: int = 0,
    details: int = 0,
) -> ConnectorState:
    """The state of one configured connector; with ``runs`` a page of its run history, with ``details`` its
    newest dead letters and rejected webhooks."""
    instance = hub.config.connectors[name]
    now = hub.now()
    async with hub.store.session() as s:
        row = await s.get(ConnectorControl, name)
        last = await last_runs(s, name)
        cursor = await s.get(Cursor, (name, EVENTS_STREAM))
        queued = {
            str(kind): int(count)
            for kind, count in (
                await s.execute(
                    select(WriteBack.kind, func.count())
                    .where(WriteBack.connector == name, WriteBack.state == "queued")
                    .group_by(WriteBack.kind)
                    .order_by(WriteBack.kind)
                )
            ).all()
        }
        dead = int(
            await s.scalar(
                select(func.count())
                .select_from(WriteBack)
                .where(WriteBack.connector == name, WriteBack.state == "dead")
            )
            or 0
        )
        last_started = {
            kind: await s.scalar(
                select(func.max(SyncRun.started_at)).where(SyncRun.connector == name, SyncRun.kind.in_(kinds))
            )
            for kind, kinds in (("sync", ("sync", "full")), ("poll", ("poll",)))
        }
        state = ConnectorState(
            name=name,
            plugin=instance.plugin,
            enabled=instance.enabled and name in hub.connectors,
            paused=bool(row and row.paused),
            schedule=schedule(hub.config, name, row),
            updated_by=row.updated_by if row else None,
            updated_at=row.updated_at if row else None,
            last_sync=last["sync"],
            last_poll=last["poll"],
            watermark=cursor.value if cursor else None,
            queued=queued,
            dead=dead,
        )
        if runs:
            state.runs_total = int(
                await s.scalar(select(func.count()).select_from(SyncRun).where(SyncRun.connector == name))
                or 0
            )
            state.runs = await _listed(
                s, select(SyncRun).where(SyncRun.connector == name).order_by(SyncRun.id.desc()), runs, offset
            )
        if details:
            state.dead_letters = await _listed(
                s,
                select(WriteBack)
                .where(WriteBack.connector == name, WriteBack.state == "dead")
                .order_by(WriteBack.updated_at.desc(), WriteBack.id.desc()),
                details,
            )
            state.rejected = await _listed(
                s,
                select(RejectedWebhook)
                .where(RejectedWebhook.target == name)
                .order_by(RejectedWebhook.id.desc()),
                details,
            )
    if next_runs is not None and state.enabled:
        state.next_sync, state.next_poll = next_runs(name)
        state.next_source = "scheduler"
    elif state.enabled:
        state.next_sync = state.schedule.next_sync(last_started["sync"], now)
        state.next_poll = state.schedule.next_poll(last_started["poll"], now)
    return state
