"""Polling, the safety net under webhooks: it must find every closure, with the webhook's event id."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hub_superoffice.connector import SuperOfficeConnector
from hub_superoffice.emulator import BackgroundServer, DemoSeed, SuperOfficeEmulator, serve_in_background
from superoffice_support import WebhookReceiver, make_connector, make_emulator, make_settings

from hub import TransientError


def _cursor(since: datetime) -> str:
    stream = {"since": since.isoformat(), "skip": 0, "started": None}
    return json.dumps({"v": 1, "tickets": stream, "sales": stream})


async def test_polling_finds_the_closure_with_the_webhooks_event_id(
    hooked: tuple[SuperOfficeConnector, WebhookReceiver], emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    connector, receiver = hooked
    emulator.close_ticket(seed.tickets["invoice"])
    emulator.sell_sale(seed.sales["renewal"])
    deliveries = await receiver.wait_for(3)
    from_webhooks = {event.event_id for delivery in deliveries for event in delivery.events}

    polled = await connector.fetch_events(None)

    assert {event.event_id for event in polled.events} == from_webhooks
    assert len(from_webhooks) == 2
    assert not polled.has_more


async def test_open_and_reopened_tickets_are_not_events(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    emulator.close_ticket(seed.tickets["login"])
    emulator.reopen_ticket(seed.tickets["login"])
    assert (await connector.fetch_events(None)).events == []


async def test_the_next_poll_finds_what_closed_since_and_reopened_then_closed_again_is_a_new_event(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    emulator.close_ticket(seed.tickets["login"])
    first = await connector.fetch_events(None)
    emulator.reopen_ticket(seed.tickets["login"])
    emulator.close_ticket(seed.tickets["login"], at=datetime.now(UTC) + timedelta(seconds=5))
    emulator.close_ticket(seed.tickets["export"])
    second = await connector.fetch_events(first.next_cursor)

    [first_event] = first.events
    second_ids = {event.event_id for event in second.events}
    assert first_event.event_id not in second_ids
    assert len(second_ids) == 2
    assert {event.record_id for event in second.events} == {
        str(seed.tickets["login"]),
        str(seed.tickets["export"]),
    }


async def test_a_poll_does_not_read_a_known_ticket_again_but_still_reports_it_within_the_overlap(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    emulator.close_ticket(seed.tickets["login"])
    first = await connector.fetch_events(None)
    reads_after_first = emulator.count_calls("GET", f"/Ticket/{seed.tickets['login']}")
    second = await connector.fetch_events(first.next_cursor)
    assert [e.event_id for e in second.events] == [e.event_id for e in first.events]
    assert emulator.count_calls("GET", f"/Ticket/{seed.tickets['login']}") == reads_after_first == 1


async def test_closures_before_the_first_polls_lookback_are_not_reported(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    emulator.close_ticket(seed.tickets["login"], at=datetime.now(UTC) - timedelta(days=3))
    emulator.close_ticket(seed.tickets["export"])
    events = (await connector.fetch_events(None)).events
    assert [event.record_id for event in events] == [str(seed.tickets["export"])]


async def test_pages_are_followed_until_everything_is_read(
    server: BackgroundServer, partner_keys: tuple[str, str], emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    for ticket_id in seed.tickets.values():
        emulator.close_ticket(ticket_id)
    connector = make_connector(make_settings(server, partner_keys[0], poll_page_size=3, poll_sales=False))
    try:
        cursor, pages, found = None, 0, set()
        while True:
            result = await connector.fetch_events(cursor)
            pages += 1
            found |= {event.record_id for event in result.events}
            cursor = result.next_cursor
            if not result.has_more:
                break
    finally:
        await connector.aclose()
    assert found == {str(ticket_id) for ticket_id in seed.tickets.values()}
    assert pages == 2


async def test_a_failed_poll_can_be_repeated_with_the_same_cursor(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    emulator.close_ticket(seed.tickets["login"])
    emulator.close_ticket(seed.tickets["export"])
    first = await connector.fetch_events(None)
    emulator.close_ticket(seed.tickets["invoice"])
    emulator.fail_next(1, status=503, retry_after=4, path_contains=f"/Ticket/{seed.tickets['invoice']}")
    with pytest.raises(TransientError) as caught:
        await connector.fetch_events(first.next_cursor)
    assert caught.value.retry_after == 4
    again = await connector.fetch_events(first.next_cursor)
    assert str(seed.tickets["invoice"]) in {event.record_id for event in again.events}


async def test_a_tenant_behind_utc_still_gets_late_evening_closures(partner_keys: tuple[str, str]) -> None:
    """The archive compares whole days in the tenant's zone: 03:30 UTC is still yesterday in California."""
    emulator = make_emulator(partner_keys[1], timezone="America/Los_Angeles")
    seed = emulator.seed_demo()
    watermark = datetime(2030, 5, 1, 3, 0, tzinfo=UTC)
    emulator.close_ticket(seed.tickets["login"], at=watermark + timedelta(minutes=30))
    with serve_in_background(emulator.app) as server:
        connector = make_connector(make_settings(server, partner_keys[0], poll_sales=False))
        try:
            result = await connector.fetch_events(_cursor(watermark))
        finally:
            await connector.aclose()
            emulator.close()
    assert [event.record_id for event in result.events] == [str(seed.tickets["login"])]


async def test_cursor_is_json_and_an_unreadable_one_starts_over(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    emulator.close_ticket(seed.tickets["login"])
    result = await connector.fetch_events("not a cursor")
    cursor = json.loads(result.next_cursor or "")
    assert set(cursor) == {"v", "tickets", "sales"}
    assert [event.record_id for event in result.events] == [str(seed.tickets["login"])]
