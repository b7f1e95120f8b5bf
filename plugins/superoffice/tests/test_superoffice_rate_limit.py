"""SuperOffice under its rate limit: what was written stays written, what was not sent uses no attempt.

The emulator answers 429 with Retry-After above its limit, like SuperOffice. A throttled batch must return
one result per item: the items already written are done (never written again), the rest wait for
Retry-After without using an attempt, so no rate limit ever makes a dead letter.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from hub_superoffice.connector import SuperOfficeConnector
from hub_superoffice.emulator import BackgroundServer, DemoSeed, SuperOfficeEmulator
from superoffice_support import (
    SuperOfficeHarness,
    answer_closed_requests,
    make_connector,
    make_settings,
    write_back_states,
)
from test_superoffice_writeback import summary_item

from hub.app import Hub
from hub.testing.harness import CONNECTOR

ANSWERS = 4


async def test_answers_under_a_tight_rate_limit_are_each_written_exactly_once_and_none_is_dead(
    so_hub: Hub, so_harness: SuperOfficeHarness, emulator: SuperOfficeEmulator
) -> None:
    await answer_closed_requests(so_hub, so_harness, ANSWERS)
    emulator.clear_calls()
    emulator.set_rate_limit(3)  # calls a second; each run's batch holds 4 items
    started = so_hub.now()
    runs = 0
    while await so_hub.sync.pending(CONNECTOR, due_only=False) and runs < 60:
        runs += 1
        # the hub's clock moves past every Retry-After; the emulator's one-second window passes for real
        moved = started + timedelta(seconds=2 * runs)
        so_hub.now = lambda moved=moved: moved  # type: ignore[method-assign]
        await so_hub.sync.run(CONNECTOR)
        await asyncio.sleep(0.4)
    emulator.set_rate_limit(None)

    states = await write_back_states(so_hub)
    assert len(states) == 3 * ANSWERS
    assert {(state, attempts) for _, state, attempts in states} == {("done", 0)}, states
    assert emulator.count_calls(status=429) > 0, "the rate limit was never reached: the test shows nothing"
    writes = Counter(
        (call.method, call.path)
        for call in emulator.calls
        if call.method in ("PATCH", "POST", "PUT") and call.status == 200
    )
    people = [path for method, path in writes if method == "PATCH" and "/Person/" in path]
    tickets = [path for method, path in writes if method == "PATCH" and "/Ticket/" in path]
    assert len(people) == len(tickets) == ANSWERS
    assert all(writes["PATCH", path] == 1 for path in people + tickets), writes  # each record once
    assert writes["POST", "/Cust12345/api/v1/Appointment"] == ANSWERS  # one timeline entry each


async def test_a_throttled_batch_keeps_what_was_written_and_hands_back_the_rest_unsent(
    server: BackgroundServer, partner_keys: tuple[str, str], emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    connector: SuperOfficeConnector = make_connector(make_settings(server, partner_keys[0], max_in_flight=1))
    batch = [summary_item(i, person) for i, person in enumerate(seed.persons.values(), start=1)]
    try:
        await connector.get_person(str(seed.persons["karen"]))  # logged in, one call of the second spent
        emulator.clear_calls()
        emulator.set_rate_limit(3)
        results = await connector.write_back(batch)
        emulator.set_rate_limit(None)
    finally:
        await connector.aclose()
    written = [r for r in results if r.status == "ok"]
    waiting = [r for r in results if r.status != "ok"]
    assert len(results) == len(batch) and written and waiting
    assert emulator.count_calls("PATCH", "/Person/", status=200) == len(written)
    assert emulator.count_calls(status=429) == 1  # nothing more of the batch was sent after the 429
    assert {(r.status, r.sent, r.retry_after) for r in waiting} == {("transient", False, 1)}
