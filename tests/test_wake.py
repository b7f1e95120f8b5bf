"""A stored event wakes the event job: at once when it is idle, and right after its run when it is running.

Wakes are coalesced (one per run of the job, however many webhooks arrive meanwhile), and none is lost: an
event stored while the job runs is not left for the next tick.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from sqlalchemy import select

from hub.models import CaseEvent
from hub.scheduler import Scheduler
from hub.store.tables import Event


def case(case_id: str) -> CaseEvent:
    return CaseEvent(
        event_id=f"case:{case_id}:closed",
        event_type="case.closed",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        record_type="case",
        record_id=case_id,
        person_id="P1",
    )


async def until(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_an_event_stored_while_the_event_job_runs_is_processed_after_that_run_not_at_the_next_tick(
    make_hub, crm_state
) -> None:
    hub = await make_hub()
    jobs = Scheduler(hub, tick_seconds=3600)  # only a wake can run the event job again within this test
    jobs.start()
    try:

        async def processed(*case_ids: str) -> bool:
            async with hub.store.session() as s:
                done = set(await s.scalars(select(Event.record_id).where(Event.processed_at.is_not(None))))
            return done >= set(case_ids)

        async def idle() -> bool:
            return "events" not in jobs.active

        await until(idle, "the first run at start to end")
        crm_state.latency = 0.5  # reading the person of an event takes a while: the run is still going
        calls = crm_state.calls

        async def reading_the_person() -> bool:  # the run has chosen its events: B cannot be among them
            return "events" in jobs.active and crm_state.calls > calls

        await hub.engine.receive("crm", [case("A")], "webhook")
        await until(reading_the_person, "the event job woken by the first event")
        await hub.engine.receive("crm", [case("B")], "webhook")  # arrives during that run
        assert not await processed("A")
        await until(lambda: processed("A", "B"), "both events processed")
    finally:
        await jobs.shutdown(grace_seconds=5)
