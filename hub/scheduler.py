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
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub import controls
from hub.app import Hub
from hub.store import upkeep
from hub.store.tables import DeliveryReport, Event, InboundMessage, Invitation, RejectedWebhook, Token

log = structlog.get_logger("hub.scheduler")

TICK_SECONDS = 5.0
#: an item of the prompt sync that settles sooner than this after a run is waited for within the run (a run
#: timed that close to its own end could start before APScheduler counted the end, and be skipped); answers
#: woken during a run are looked at after this too, so a burst of answers costs a pass per gap, not per answer
SYNC_MIN_GAP_SECONDS = 0.2
#: when another run holds a connector's lock (another process, the cron sync), which writes what is ready
#: itself, the prompt sync looks again after this, in case that run ended just before the item was ready
SYNC_LOCKED_RETRY_SECONDS = 1.0
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
        #: jobs running now, and jobs woken since their last run started (see ``_run_soon``)
        self.active: set[str] = set()
        self.woken: set[str] = set()
        #: per running job, the soonest moment a wake asked it to look again after its run (``_run_soon``)
        self.wake_at: dict[str, datetime] = {}
        #: per connector, the (sync seconds, poll seconds) override its jobs were last timed with
        self._timed: dict[str, tuple[int | None, float]] = {}

    def _add(
        self, job_id: str, func: Callable[[], Awaitable[Any]], trigger: Any, *, locked: bool = True
    ) -> None:
        """Schedule ``func``; ``locked`` runs it under the job's database lock (see ``_singleton``)."""

        async def run() -> None:
            task = asyncio.current_task()
            self.woken.discard(job_id)  # a wake from now on asks for one more run
            if task is not None:
                self.running.add(task)
                self.active.add(job_id)
            try:
                await (self._singleton(f"job:{job_id}", func) if locked else func())
            except asyncio.CancelledError:
                # cancelled by shutdown() after the grace period; the executor would log it as a crash
                log.warning("job.cancelled", job=job_id)
            except Exception:
                log.exception("job.failed", job=job_id)
            finally:
                if task is not None:
                    self.running.discard(task)
                    # after the executor's own callback, which ends this run in its count of instances
                    task.add_done_callback(lambda _task: self._ran(job_id))

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
        tick = IntervalTrigger(seconds=self.tick)
        self._add("events", self._events, tick)
        # every process dispatches: invitations are claimed with a lease (FOR UPDATE SKIP LOCKED), so each
        # goes out from one process, and more processes send more at once
        self._add("dispatch", self._dispatch, tick, locked=False)
        self._add_prompt_sync()
        for name in self.hub.connectors:
            self._time(name, controls.schedule(self.hub.config, name, None))
        # every process times its own jobs: the admin's schedules are re-read at every tick, and at once when
        # this process changed them
        self._add("controls", self._controls, tick, locked=False)
        self._add("retention", self._retention, IntervalTrigger(hours=6))
        if not self.hub.store.is_sqlite:
            self._add("upkeep", self._upkeep, IntervalTrigger(seconds=upkeep.UPKEEP_SECONDS))
        self.hub.on_wake("events", lambda at: self._run_soon("events", at))
        self.hub.on_wake("dispatch", lambda at: self._run_soon("dispatch", at))
        self.hub.on_wake(controls.WAKE, lambda at: self._run_soon("controls", at))

    def _time(self, name: str, schedule: controls.Schedule) -> None:
        """(Re-)time the connector's sync and poll jobs to ``schedule``; only what changed is touched, so an
        unchanged schedule keeps its next run."""
        timed = (schedule.sync_seconds, schedule.poll_seconds)
        before = self._timed.get(name)
        if before == timed:
            return
        self._timed[name] = timed
        sync_job = self.scheduler.get_job(f"sync:{name}")
        if sync_job is None:
            self._add(f"sync:{name}", self._syncer(name), schedule.sync_trigger())
        elif before is None or before[0] != timed[0]:
            sync_job.reschedule(schedule.sync_trigger())
        poll_job = self.scheduler.get_job(f"poll:{name}")
        if not schedule.polls:
            if poll_job is not None:
                poll_job.remove()
        elif poll_job is None:
            self._add(f"poll:{name}", self._poller(name), IntervalTrigger(seconds=schedule.poll_seconds))
        elif before is None or before[1] != timed[1]:
            poll_job.reschedule(IntervalTrigger(seconds=schedule.poll_seconds))
        if before is not None:
            log.info("schedule.changed", connector=name, sync_seconds=timed[0], poll_seconds=timed[1])

    async def _controls(self) -> None:
        """Apply the schedules admins stored (``ConnectorControl``), whichever process stored them."""
        stored = await controls.controls(self.hub)
        for name in self.hub.connectors:
            self._time(name, controls.schedule(self.hub.config, name, stored.get(name)))

    def next_runs(self, name: str) -> tuple[datetime | None, datetime | None]:
        """When this process's scheduler runs the connector's safety-net sync and its poll next."""
        found = []
        for job_id in (f"sync:{name}", f"poll:{name}"):
            job = self.scheduler.get_job(job_id)
            found.append(getattr(job, "next_run_time", None) if job is not None else None)
        return found[0], found[1]

    async def _singleton(self, name: str, func: Callable[[], Awaitable[Any]]) -> bool:
        """Run ``func`` under the database lock ``name``; its start and end are logged (debug) with the owner,
        so the logs of every process show which one ran a job when, and that no two ran it at once.

        False when another run held the lock and ``func`` did not run."""
        owner = self.hub.sync.owner

        async def logged() -> bool:
            log.debug("job.started", job=name, owner=owner)
            try:
                await func()
            finally:
                log.debug("job.finished", job=name, owner=owner)
            return True

        return bool(await self.hub.singleton(name, logged))

    def _run_soon(self, job_id: str, at: datetime | None = None) -> None:
        """Run the job now, or once more after its running run: one job-store update per run of the job,
        however many wakes (one per stored webhook) arrive meanwhile. A wake for a later moment ``at`` only
        brings the job's next run forward to it, after the running run if one runs: the job's next run is
        most often sooner already (each run times the next to its soonest waiting work), so such a wake
        costs a comparison."""
        if at is not None and (delay := (at - self.hub.now()).total_seconds()) > 0:
            if job_id in self.active:
                due = self.wake_at.get(job_id)
                self.wake_at[job_id] = at if due is None else min(due, at)
            else:
                self._run_at(job_id, delay)
            return
        if job_id in self.woken:
            return
        self.woken.add(job_id)
        if job_id not in self.active:
            self._reschedule_now(job_id)

    def _ran(self, job_id: str) -> None:
        self.active.discard(job_id)
        due = self.wake_at.pop(job_id, None)
        if not self.scheduler.running:
            return
        if job_id in self.woken:
            self._reschedule_now(job_id)
        elif due is not None:
            self._run_at(job_id, (due - self.hub.now()).total_seconds())

    def _reschedule_now(self, job_id: str) -> None:
        job = self.scheduler.get_job(job_id)
        if job is not None:
            job.modify(next_run_time=datetime.now().astimezone())

    async def _events(self) -> None:
        await self.hub.engine.intake.process_backlog(stop=lambda: self.stopping)

    async def _dispatch(self) -> None:
        """Send what is due, claim after claim, until a claim comes back short: a backlog (a burst of closed
        cases) goes out in one run rather than one claim per tick. A stopping process claims nothing more, so
        its grace period is spent finishing what it holds."""
        for send in (self.hub.engine.dispatch_due, self.hub.engine.send_reminders):
            for _ in range(DISPATCH_ROUNDS):
                if self.stopping or await send(DISPATCH_CLAIM) < DISPATCH_CLAIM:
                    break

    # --- the prompt sync ----------------------------------------------------------------------------------------

    def _add_prompt_sync(self) -> None:
        """The near-real-time write-back: woken by every answer, and timed to the moment the next item settles.

        A poll every fraction of ``sync.prompt_seconds`` would add its interval to every answer's way to the
        CRM, and cost a query per connector when nothing happens. Instead the job runs when an answer asks for
        it (``hub.wake("sync")``: a complete answer is ready at once) and, after each run, at the moment its
        next waiting item becomes ready (``SyncService.next_ready_at``). The interval of one quiet period
        remains as the safety net for answers that another process stored.

        The job takes no database lock of its own: each connector's run takes the connector's lock
        (``job:sync:<name>``, shared with the cron sync), and a job woken five times a second would otherwise
        add two writes to the database for each wake-up.
        """
        prompt = self.hub.config.sync.prompt_seconds
        self._add("sync-prompt", self._sync_due, IntervalTrigger(seconds=max(0.5, prompt)), locked=False)
        # an answer runs it now, or marks the run in progress to look once more (``_sync_due``)
        self.hub.on_wake("sync", lambda at: self._run_soon("sync-prompt", at))

    def _run_at(self, job_id: str, delay: float) -> None:
        """Run the job in ``delay`` seconds, unless it is due sooner anyway."""
        job = self.scheduler.get_job(job_id)
        when = datetime.now().astimezone() + timedelta(seconds=delay)
        if job is not None and (job.next_run_time is None or job.next_run_time > when):
            job.modify(next_run_time=when)

    async def _sync_due(self) -> None:
        """Near-real-time write-back: write the items that are ready (``SyncService._ready``), per connector.

        Only those: a score alone waits for its follow-up comment for ``sync.prompt_seconds``, while other
        people's answers arriving meanwhile never hold back one that is ready. A wake-up during the run
        makes it look once more; then the next run is timed to the next item that settles.
        """
        quiet = self.hub.config.sync.prompt_seconds
        waited = False
        while True:
            self.woken.discard("sync-prompt")  # a wake from now on asks for one more pass
            soonest = await self._sync_settled(quiet)
            delay = None if soonest is None else (soonest - self.hub.now()).total_seconds()
            if "sync-prompt" in self.woken and self.scheduler.state == STATE_RUNNING:  # not while stopping
                # answers arriving faster than passes take: one pass per gap, not one per answer
                await asyncio.sleep(SYNC_MIN_GAP_SECONDS)
                continue
            if delay is not None and delay < SYNC_MIN_GAP_SECONDS and not waited:
                waited = True  # once: an item that stays ready (a lock race) is no reason to spin
                await asyncio.sleep(max(0.0, delay))
                continue
            break
        if delay is not None:
            self._run_at("sync-prompt", max(delay, SYNC_MIN_GAP_SECONDS))

    async def _sync_settled(self, quiet: float) -> datetime | None:
        """One pass over the connectors; when the next of their waiting items settles (None: none waits)."""
        soonest: datetime | None = None
        paused = await controls.paused_connectors(self.hub)
        for name in self.hub.connectors:
            if name in paused:
                continue
            ready: datetime | None = None
            if await self.hub.sync.settled(name):

                async def settled(connector: str = name) -> None:
                    await self.hub.sync.run(connector, quiet_seconds=quiet)

                if not await self._singleton(f"job:sync:{name}", settled):
                    ready = self.hub.now() + timedelta(seconds=SYNC_LOCKED_RETRY_SECONDS)
            if ready is None:
                ready = await self.hub.sync.next_ready_at(name)
            if ready is not None and (soonest is None or ready < soonest):
                soonest = ready
        return soonest

    def _poller(self, name: str) -> Callable[[], Awaitable[Any]]:
        async def poll() -> None:
            if await controls.is_paused(self.hub, name):
                return
            await self.hub.sync.poll(name)

        return poll

    def _syncer(self, name: str) -> Callable[[], Awaitable[Any]]:
        async def sync() -> None:
            if await controls.is_paused(self.hub, name):
                return
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
        """Past the retention period drop raw webhook bodies, kept rejected requests and kept replies; expire
        old invitations; delete dead tokens, and delivery reports a month old (applied ones live on their
        invitation; one never applied by then was about a message that no invitation holds, e.g. a
        follow-up question)."""
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
            await s.execute(delete(InboundMessage).where(InboundMessage.received_at < cutoff))
            await s.execute(
                delete(DeliveryReport).where(DeliveryReport.received_at < now - timedelta(days=30))
            )

    async def _upkeep(self) -> None:
        """Vacuum and analyze the hub's PostgreSQL tables where the server's autovacuum does not
        (``hub.store.upkeep``)."""
        await upkeep.keep_up(self.hub.store)

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
