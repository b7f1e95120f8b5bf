"""APScheduler wiring only: which job runs when. The work itself lives in the engine and the sync service.

Every job runs one instance at a time in this process (``max_instances=1``) and, through a database lock,
one at a time across every process sharing the database; only the dispatch of invitations runs in every
process at once, each sending the invitations it claimed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.app import Hub
from hub.store.tables import Event, Invitation, RejectedWebhook, Token

log = structlog.get_logger("hub.scheduler")

TICK_SECONDS = 5.0
#: how long a stopping process lets its running jobs finish before it cancels them and hands their work back
GRACE_SECONDS = 20.0
#: invitations claimed at a time by the dispatch job, and the most claims of one run
DISPATCH_CLAIM = 50
DISPATCH_ROUNDS = 100


class Scheduler:
    def __init__(self, hub: Hub, tick_seconds: float = TICK_SECONDS) -> None:
        self.hub = hub
        self.tick = tick_seconds
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.running: set[asyncio.Task[Any]] = set()
        #: set by shutdown(): jobs that loop over a backlog stop taking more
        self.stopping = False
        #: jobs asked to run again (``Hub.wake``) since they last started, and the jobs running now
        self.woken: set[str] = set()
        self.active: set[str] = set()

    def _add(
        self, job_id: str, func: Callable[[], Awaitable[Any]], trigger: Any, *, exclusive: bool = True
    ) -> None:
        """Schedule ``func``; an ``exclusive`` job runs in one process at a time (a database lock), the others
        in every process at once, for work whose rows are claimed one by one (a lease)."""

        async def run() -> None:
            task = asyncio.current_task()
            if task is not None:
                self.running.add(task)
            try:
                if exclusive:
                    await self._singleton(f"job:{job_id}", func)
                else:
                    await func()
            except asyncio.CancelledError:
                # cancelled by shutdown() after the grace period; the executor would log it as a crash
                log.warning("job.cancelled", job=job_id)
            except Exception:
                log.exception("job.failed", job=job_id)
            finally:
                if task is not None:
                    self.running.discard(task)

        self.scheduler.add_job(
            run,
            trigger,
            id=job_id,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now().astimezone(),
        )

    def setup(self) -> None:
        hub = self.hub
        tick = IntervalTrigger(seconds=self.tick)
        self._add("events", self._events, tick)
        # every process dispatches: invitations are claimed with a lease (FOR UPDATE SKIP LOCKED), so each
        # goes out from one process, and more processes send more at once
        self._add("dispatch", self._dispatch, tick, exclusive=False)
        prompt = hub.config.sync.prompt_seconds
        self._add("sync-prompt", self._sync_due, IntervalTrigger(seconds=max(0.1, prompt / 4)))
        for name, instance in hub.config.connectors.items():
            if name not in hub.connectors:
                continue
            if instance.poll_interval_seconds > 0:
                self._add(
                    f"poll:{name}",
                    self._poller(name),
                    IntervalTrigger(seconds=instance.poll_interval_seconds),
                )
            cron = instance.sync_cron or hub.config.sync.cron
            self._add(f"sync:{name}", self._syncer(name), CronTrigger.from_crontab(cron, timezone="UTC"))
        self._add("retention", self._retention, IntervalTrigger(hours=6))
        hub.on_wake("events", lambda: self._run_soon("events"))
        hub.on_wake("dispatch", lambda: self._run_soon("dispatch"))

    async def _singleton(self, name: str, func: Callable[[], Awaitable[Any]]) -> None:
        """Run ``func`` under the database lock ``name``; its start and end are logged (debug) with the owner,
        so the logs of every process show which one ran a job when, and that no two ran it at once."""
        owner = self.hub.sync.owner

        async def logged() -> None:
            log.debug("job.started", job=name, owner=owner)
            try:
                await func()
            finally:
                log.debug("job.finished", job=name, owner=owner)

        await self.hub.singleton(name, logged)

    def _run_soon(self, job_id: str) -> None:
        # a job running now would turn this run away (max_instances=1) and wait for its next tick: it looks
        # at ``woken`` when it ends instead, and runs again
        self.woken.add(job_id)
        if job_id in self.active:  # one wake-up per event would otherwise reschedule the job each time
            return
        job = self.scheduler.get_job(job_id)
        if job is not None:
            job.modify(next_run_time=datetime.now().astimezone())

    async def _again(self, job_id: str, run: Callable[[], Awaitable[Any]]) -> None:
        """``run`` once, and again as long as it was woken while it ran (new events, new invitations)."""
        self.active.add(job_id)
        try:
            while not self.stopping:
                self.woken.discard(job_id)
                await run()
                if job_id not in self.woken:
                    break
        finally:
            self.active.discard(job_id)

    async def _events(self) -> None:
        async def backlog() -> None:
            await self.hub.engine.intake.process_backlog(stop=lambda: self.stopping)

        await self._again("events", backlog)

    async def _dispatch(self) -> None:
        """Send what is due, claim after claim, until a claim comes back short: a backlog (a burst of closed
        cases) goes out in one run rather than one claim per tick. A stopping process claims nothing more, so
        its grace period is spent finishing what it holds."""

        async def due() -> None:
            for send in (self.hub.engine.dispatch_due, self.hub.engine.send_reminders):
                for _ in range(DISPATCH_ROUNDS):
                    if self.stopping or await send(DISPATCH_CLAIM) < DISPATCH_CLAIM:
                        break

        await self._again("dispatch", due)

    async def _sync_due(self) -> None:
        """Near-real-time write-back: write the items whose own key has settled (debounced), per connector.

        Only those: an item re-armed a moment ago (a comment after the score) waits for its quiet period,
        while other people's answers arriving meanwhile never hold back one that has settled.
        """
        quiet = self.hub.config.sync.prompt_seconds
        for name in self.hub.connectors:
            if await self.hub.sync.settled(name, quiet):

                async def settled(connector: str = name) -> None:
                    await self.hub.sync.run(connector, quiet_seconds=quiet)

                await self._singleton(f"job:sync:{name}", settled)

    def _poller(self, name: str) -> Callable[[], Awaitable[Any]]:
        async def poll() -> None:
            await self.hub.sync.poll(name)

        return poll

    def _syncer(self, name: str) -> Callable[[], Awaitable[Any]]:
        async def sync() -> None:
            await self.hub.sync.run(name)

        return sync

    async def _trim_rejected(self, s: AsyncSession, now: datetime) -> None:
        """Rejected requests are kept for inspection, not as an archive: anyone can send them, so what is kept
        is bounded in age (``hub.rejected_retention_days``) and in number per target
        (``hub.rejected_keep_per_target``, the newest), whatever arrives between two runs of this job."""
        config = self.hub.config.hub
        cutoff = now - timedelta(days=config.rejected_retention_days)
        await s.execute(delete(RejectedWebhook).where(RejectedWebhook.received_at < cutoff))
        for target in await s.scalars(select(RejectedWebhook.target).distinct()):
            newest_kept = (
                select(RejectedWebhook.id)
                .where(RejectedWebhook.target == target)
                .order_by(RejectedWebhook.id.desc())
                .offset(config.rejected_keep_per_target - 1)
                .limit(1)
                .scalar_subquery()
            )
            await s.execute(
                delete(RejectedWebhook).where(
                    RejectedWebhook.target == target, RejectedWebhook.id < newest_kept
                )
            )

    async def _retention(self) -> None:
        """Past the retention period drop raw webhook bodies and kept rejected requests; expire old
        invitations; delete dead tokens."""
        hub = self.hub
        now = hub.now()
        async with hub.store.session() as s:
            cutoff = now - timedelta(days=hub.config.hub.retention_days)
            await s.execute(update(Event).where(Event.received_at < cutoff).values(raw=None))
            await self._trim_rejected(s, now)
            await s.execute(
                update(Invitation)
                .where(Invitation.status.in_(("scheduled", "sent")), Invitation.expires_at < now)
                .values(status="expired")
            )
            await s.execute(delete(Token).where(Token.expires_at < now - timedelta(days=30)))

    def start(self) -> None:
        self.setup()
        self.scheduler.start()

    async def shutdown(self, grace_seconds: float | None = None) -> None:
        """Start no new job, give the running ones ``grace_seconds`` to finish, cancel the rest, then hand
        back every write-back this process still has claimed.

        A job cut short loses nothing (its items are written again under the same keys), but its leases would
        hold its items back from every other process for ``sync.lease_seconds``; released, they are taken
        over at once. APScheduler's asyncio executor would cancel running jobs without waiting, so the
        scheduler is paused first and its jobs are awaited here.
        """
        if not self.scheduler.running:
            return
        grace = GRACE_SECONDS if grace_seconds is None else grace_seconds
        self.stopping = True
        self.scheduler.pause()
        await asyncio.sleep(0)  # jobs submitted just before the pause start and register themselves
        if self.running:
            _, late = await asyncio.wait(set(self.running), timeout=grace)
            if late:
                log.warning("shutdown.cancelling_jobs", jobs=len(late), grace_seconds=grace)
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=5)  # their clean-up releases their job locks
        self.scheduler.shutdown(wait=False)
        try:
            released = await self.hub.sync.release_leases()
        except Exception:  # the database is gone: the leases expire after sync.lease_seconds instead
            log.warning("shutdown.release_failed", exc_info=True)
            return
        if released:
            log.info("shutdown.released", writebacks=released)
