"""SuperOffice out of reach: a request that never left uses no attempt, so an outage never makes dead letters.

A refused connection, a DNS failure, a connect timeout or no free connection in the pool mean nothing
reached SuperOffice (``TransientError(sent=False)``). A read timeout after the request left may have been
applied, so it counts. The outage is injected with respx; everything else is the emulator over HTTP.
"""

from __future__ import annotations

import httpx
import pytest
import respx
from hub_superoffice.connector import SuperOfficeConnector
from hub_superoffice.emulator import BackgroundServer, DemoSeed, SuperOfficeEmulator
from superoffice_support import (
    SuperOfficeHarness,
    answer_closed_requests,
    make_connector,
    make_settings,
    write_back_states,
)
from test_superoffice_writeback import feedback_item, summary_item, timeline_item

from hub import TransientError
from hub.app import Hub
from hub.testing.harness import CONNECTOR

NOT_SENT = [
    httpx.ConnectError("[Errno 111] Connection refused"),
    httpx.ConnectError("[Errno -2] Name or service not known"),
    httpx.ConnectTimeout("timed out"),
    httpx.PoolTimeout("no connection free"),
]


def unreachable(server: BackgroundServer, error: Exception) -> respx.MockRouter:
    """Every request to the emulator fails with ``error`` before it is sent."""
    router = respx.mock(assert_all_called=False)
    router.route(host=server.host, port=server.port).mock(side_effect=error)
    return router


async def test_an_outage_longer_than_every_backoff_turns_nothing_into_a_dead_letter(
    so_hub: Hub, so_harness: SuperOfficeHarness, emulator: SuperOfficeEmulator
) -> None:
    await answer_closed_requests(so_hub, so_harness, 2)
    queued = await write_back_states(so_hub)
    assert len(queued) == 6
    max_attempts = so_hub.config.sync.max_attempts
    with unreachable(so_harness.server, httpx.ConnectError("[Errno 111] Connection refused")):
        for _ in range(max_attempts * 4):  # backoff is 0 here: every run finds every item due
            stats = await so_hub.sync.run(CONNECTOR)
            assert stats.written == 0 and stats.dead == 0
    assert await write_back_states(so_hub) == [(kind, "queued", 0) for kind, _, _ in queued]

    emulator.clear_calls()
    assert (await so_hub.sync.run(CONNECTOR)).written == 6
    assert {state for _, state, _ in await write_back_states(so_hub)} == {"done"}
    assert emulator.count_calls("PATCH", "/Person/") == 2
    assert emulator.count_calls("POST", "/Appointment") == 2
    assert emulator.count_calls("PATCH", "/Ticket/") == 2


@pytest.mark.parametrize("error", NOT_SENT, ids=lambda e: type(e).__name__ + ":" + str(e)[:12])
async def test_a_request_that_never_left_is_transient_and_not_sent(
    connector: SuperOfficeConnector, server: BackgroundServer, seed: DemoSeed, error: Exception
) -> None:
    person, ticket = seed.persons["karen"], seed.tickets["login"]
    batch = [summary_item(1, person), timeline_item(2, person, "r-1"), feedback_item(3, ticket, "r-2")]
    with unreachable(server, error):
        with pytest.raises(TransientError) as caught:
            await connector.write_back(batch)
        assert caught.value.sent is False
        with pytest.raises(TransientError) as polled:
            await connector.fetch_events(None)
        assert polled.value.sent is False
        checked = await connector.check()
    assert [(c.name, c.ok) for c in checked] == [("connection", False)]
    assert "not reach" in checked[0].detail


async def test_a_login_that_never_left_is_not_sent(
    server: BackgroundServer, partner_keys: tuple[str, str], seed: DemoSeed
) -> None:
    connector = make_connector(make_settings(server, partner_keys[0]))  # no ticket yet: it logs in first
    try:
        with (
            unreachable(server, httpx.ConnectError("[Errno 111] Connection refused")),
            pytest.raises(TransientError) as caught,
        ):
            await connector.write_back([summary_item(1, seed.persons["karen"])])
    finally:
        await connector.aclose()
    assert caught.value.sent is False


async def test_a_read_timeout_after_the_request_left_counts_as_an_attempt(
    connector: SuperOfficeConnector, server: BackgroundServer, seed: DemoSeed
) -> None:
    await connector.get_person(str(seed.persons["karen"]))  # logged in
    with unreachable(server, httpx.ReadTimeout("timed out")):
        [result] = await connector.write_back([summary_item(1, seed.persons["karen"])])
    assert (result.status, result.sent) == ("transient", True)


async def test_a_batch_where_some_requests_left_keeps_per_item_results(
    connector: SuperOfficeConnector, server: BackgroundServer, seed: DemoSeed
) -> None:
    """Items that reached SuperOffice count an attempt; the ones that did not, none."""
    people = list(seed.persons.values())[:2]
    await connector.get_person(str(people[0]))  # logged in
    with respx.mock(assert_all_called=False) as router:
        router.route(path__regex=rf"/Person/{people[0]}$").mock(side_effect=httpx.ReadTimeout("slow"))
        router.route(path__regex=rf"/Person/{people[1]}$").mock(side_effect=httpx.ConnectError("refused"))
        results = await connector.write_back([summary_item(1, people[0]), summary_item(2, people[1])])
    assert [(r.item_id, r.status, r.sent) for r in results] == [
        (1, "transient", True),
        (2, "transient", False),
    ]
