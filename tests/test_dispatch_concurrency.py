"""Events and invitations are handled side by side, yet no CRM or channel sees more than its bound at once,
every invitation goes out once, and the contact policy holds as if events were handled one by one."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from hub.scheduler import Scheduler
from hub.store.tables import Event, Invitation
from tests.helpers import case_event


async def cases_of_new_people(hub: Any, crm_state: Any, count: int) -> list[str]:
    """``count`` people in the CRM, each with one closed case stored in the hub; returns their ids."""
    ids = [f"Q{i}" for i in range(count)]
    for crm_id in ids:
        crm_state.people[crm_id] = {"id": crm_id, "email": f"{crm_id.lower()}@example.com"}
    await hub.engine.receive(
        "crm", [case_event(f"C{i}", person) for i, person in enumerate(ids)], source="webhook"
    )
    return ids


async def statuses(hub: Any) -> list[tuple[str, str | None]]:
    async with hub.store.session() as s:
        rows = await s.execute(select(Invitation.status, Invitation.reason).order_by(Invitation.id))
        return [(status, reason) for status, reason in rows]


async def test_person_reads_are_concurrent_but_never_more_than_the_connectors_bound(
    make_hub: Any, crm_state: Any
) -> None:
    hub = await make_hub()
    hub.config.connectors["crm"].concurrency = 3
    crm_state.latency = 0.05
    people = await cases_of_new_people(hub, crm_state, 24)

    assert await hub.engine.process_pending() == len(people)

    assert crm_state.most_reads_in_flight == 3  # side by side, and never beyond the bound
    assert [status for status, _ in await statuses(hub)] == ["scheduled"] * len(people)


async def test_sends_are_concurrent_but_never_more_than_the_channels_bound_and_each_goes_out_once(
    make_hub: Any, crm_state: Any
) -> None:
    hub = await make_hub()
    hub.config.channels["mail"].concurrency = 2
    crm_state.outbox_latency = 0.05
    people = await cases_of_new_people(hub, crm_state, 12)
    await hub.engine.process_pending()

    assert await hub.engine.dispatch_due() == len(people)
    assert await hub.engine.dispatch_due() == 0

    assert crm_state.most_sends_in_flight == 2
    sent = Counter(m["invitation_id"] for m in crm_state.outbox if m.get("kind") == "survey")
    assert len(sent) == len(people) and set(sent.values()) == {1}
    assert [status for status, _ in await statuses(hub)] == ["sent"] * len(people)


async def test_two_events_of_one_person_processed_at_once_give_one_invitation(
    make_hub: Any, crm_state: Any
) -> None:
    """Two cases of the same CRM person, and a case of a second CRM record with the same email address (one
    person in the hub), arrive together: their reads run at once, yet only the first gets a survey."""
    hub = await make_hub()
    crm_state.latency = 0.05
    crm_state.people["P1b"] = {"id": "P1b", "email": "ada@example.com", "first_name": "Ada"}
    await hub.engine.receive(
        "crm", [case_event("C1", "P1"), case_event("C2", "P1"), case_event("C3", "P1b")], source="webhook"
    )

    assert await hub.engine.process_pending() == 3

    assert crm_state.most_reads_in_flight == 3
    result = await statuses(hub)
    assert result[0] == ("scheduled", None)
    for status, reason in result[1:]:
        assert status == "suppressed"
        assert reason is not None and reason.startswith('surveyed 0 day(s) ago by campaign "case_closed"')
    await hub.engine.dispatch_due()
    assert [m["recipient"]["email"] for m in crm_state.outbox if m.get("kind") == "survey"] == [
        "ada@example.com"
    ]


async def test_a_backlog_larger_than_one_batch_is_processed_in_one_run_and_a_failing_event_waits(
    make_hub: Any, crm_state: Any
) -> None:
    """The events job works through the whole backlog, not one batch per tick; an event whose CRM read fails
    for now stays pending without being retried within the same run."""
    hub = await make_hub()
    people = await cases_of_new_people(hub, crm_state, 30)
    crm_state.fail_next = [(503, {})]  # the first read fails

    done = await hub.engine.intake.process_backlog(batch=7)

    assert done == len(people) - 1
    async with hub.store.session() as s:
        pending = list(await s.scalars(select(Event.event_id).where(Event.processed_at.is_(None))))
    assert len(pending) == 1
    assert await hub.engine.intake.process_backlog(batch=7) == 1
    assert len(await statuses(hub)) == len(people)


async def test_two_processes_dispatching_at_once_send_each_invitation_once(
    make_hub: Any, crm_state: Any
) -> None:
    """The dispatch job runs in every process: two hubs on one database claim and send side by side."""
    first, second = await make_hub(), await make_hub()
    crm_state.outbox_latency = 0.02
    people = await cases_of_new_people(first, crm_state, 20)
    await first.engine.process_pending()

    async def drain(hub: Any) -> int:
        sent = 0
        while handled := await hub.engine.dispatch_due(limit=3):
            sent += handled
        return sent

    assert sum(await asyncio.gather(drain(first), drain(second))) == len(people)

    sent = Counter(m["invitation_id"] for m in crm_state.outbox if m.get("kind") == "survey")
    assert len(sent) == len(people) and set(sent.values()) == {1}
    assert [status for status, _ in await statuses(first)] == ["sent"] * len(people)


async def test_a_crm_outage_ends_the_backlog_run_after_one_batch(make_hub: Any, crm_state: Any) -> None:
    """While the CRM is down, one run of the events job tries one batch, not every event of the backlog."""
    hub = await make_hub()
    await cases_of_new_people(hub, crm_state, 12)
    calls_before = crm_state.calls
    crm_state.fail_next = [(503, {})] * 12

    assert await hub.engine.intake.process_backlog(batch=4) == 0

    assert crm_state.calls - calls_before == 4
    crm_state.fail_next = []
    assert await hub.engine.intake.process_backlog(batch=4) == 12


async def test_an_invitation_created_while_the_dispatch_job_runs_goes_out_right_after_that_run(
    make_hub: Any, crm_state: Any
) -> None:
    """A wake-up that arrives while the dispatch job runs is not lost until the next tick: the job runs again
    as soon as its run ends."""
    hub = await make_hub()
    scheduler = Scheduler(hub, tick_seconds=3600)  # only a wake can run the jobs again within this test
    scheduler.start()
    try:

        async def surveyed() -> list[str]:
            return sorted(m["recipient"]["name"] for m in crm_state.outbox if m.get("kind") == "survey")

        async def until(condition: Any, what: str, timeout: float = 30) -> None:
            deadline = asyncio.get_running_loop().time() + timeout
            while not await condition():
                assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.01)

        async def idle() -> bool:
            return not {"events", "dispatch"} & scheduler.active

        await until(idle, "the first runs at start to end")
        crm_state.outbox_latency = 2.0

        async def sending() -> bool:
            return bool(crm_state.sends_in_flight) and "dispatch" in scheduler.active

        await hub.engine.receive("crm", [case_event("C1", "P1")], source="webhook")
        await until(sending, "the first survey on its way")
        crm_state.people["Q9"] = {"id": "Q9", "email": "q9@example.com", "first_name": "Quinn"}
        await hub.engine.receive("crm", [case_event("C2", "Q9")], source="webhook")  # during that run

        async def both() -> bool:
            return await surveyed() == ["Ada", "Quinn"]

        await until(both, "both surveys sent")
    finally:
        await scheduler.shutdown(grace_seconds=5)


async def test_invitations_claimed_by_a_dispatch_cut_short_go_out_one_lease_later(
    make_hub: Any, crm_state: Any
) -> None:
    """A dispatch that loses its database after claiming (a restart) records nothing: its invitations are
    free again after ``sync.lease_seconds``, not held back for minutes, and then sent once."""
    hub = await make_hub()
    await cases_of_new_people(hub, crm_state, 3)
    await hub.engine.process_pending()
    prepare = hub.engine.invitations._prepare

    async def database_restarting(ids: list[int], reminder: bool) -> Any:
        raise OperationalError("SELECT ...", {}, ConnectionResetError("the server closed the connection"))

    hub.engine.invitations._prepare = database_restarting
    with pytest.raises(OperationalError):
        await hub.engine.dispatch_due()
    hub.engine.invitations._prepare = prepare

    assert await hub.engine.dispatch_due() == 0  # still claimed by the run that failed
    later = hub.now() + timedelta(seconds=hub.config.sync.lease_seconds + 1)
    hub.now = lambda: later
    assert await hub.engine.dispatch_due() == 3
    sent = Counter(m["invitation_id"] for m in crm_state.outbox if m.get("kind") == "survey")
    assert len(sent) == 3 and set(sent.values()) == {1}


async def test_a_send_slower_than_the_lease_keeps_its_claim_so_no_other_process_sends_it_twice(
    make_hub: Any, crm_state: Any
) -> None:
    first, second = await make_hub(), await make_hub()
    first.config.sync.lease_seconds = 0.3
    crm_state.outbox_latency = 1.5  # five leases
    await cases_of_new_people(first, crm_state, 1)
    await first.engine.process_pending()
    run = asyncio.create_task(first.engine.dispatch_due())
    while not crm_state.sends_in_flight:
        await asyncio.sleep(0.01)

    await asyncio.sleep(0.6)  # two leases: the claim stands only because it was renewed
    assert await second.engine.dispatch_due() == 0

    assert await run == 1
    assert [m["invitation_id"] for m in crm_state.outbox if m.get("kind") == "survey"] == [1]
    assert [status for status, _ in await statuses(first)] == ["sent"]
