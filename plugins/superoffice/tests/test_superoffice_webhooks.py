"""Webhooks delivered by the emulator over HTTP, read by the connector: registration, signatures, events."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hub_superoffice.client import RecordError
from hub_superoffice.connector import SuperOfficeConnector
from hub_superoffice.emulator import BackgroundServer, DemoSeed, SuperOfficeEmulator
from hub_superoffice.webhooks import signature
from pydantic import SecretStr
from superoffice_support import WEBHOOK_SECRET, WebhookReceiver, make_connector, make_settings

from hub import BadInput, NpsCategory, PersonSummary, WebhookRequest, WriteBackItem
from hub.testing import opt_out_item

Hooked = tuple[SuperOfficeConnector, WebhookReceiver]


async def test_registration_test_post_is_answered_200_with_no_events(
    hooked: Hooked, emulator: SuperOfficeEmulator
) -> None:
    connector, receiver = hooked
    test_post = receiver.received[0]
    assert test_post.request.header("X-Hook-Test") == "true"
    assert json.loads(test_post.request.body)["Event"] == "test"
    assert (test_post.status, test_post.events) == (200, [])
    [webhook] = emulator.webhooks()
    assert webhook["TargetUrl"] == connector.webhook_url
    assert webhook["State"] == "Active"


async def test_registering_twice_keeps_one_webhook(hooked: Hooked, emulator: SuperOfficeEmulator) -> None:
    connector, _ = hooked
    await connector.ensure_webhook()
    assert len(emulator.webhooks()) == 1


async def test_a_hub_with_another_secret_cannot_register(
    server: BackgroundServer,
    partner_keys: tuple[str, str],
    seed: DemoSeed,
    receiver: tuple[WebhookReceiver, BackgroundServer],
    emulator: SuperOfficeEmulator,
) -> None:
    hook_receiver, hook_server = receiver
    receiving = make_connector(make_settings(server, partner_keys[0]), public_url=hook_server.url)
    registering = make_connector(
        make_settings(server, partner_keys[0]).model_copy(
            update={"webhook_secret": SecretStr("another-secret")}
        ),
        public_url=hook_server.url,
    )
    hook_receiver.connector = receiving
    try:
        with pytest.raises(RecordError, match="test POST"):
            await registering.ensure_webhook()
    finally:
        await receiving.aclose()
        await registering.aclose()
    assert hook_receiver.received[0].status == 401
    assert emulator.webhooks() == []


async def test_closing_a_ticket_delivers_a_signed_case_closed_event(
    hooked: Hooked, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    _, receiver = hooked
    emulator.close_ticket(seed.tickets["login"])
    delivery = (await receiver.wait_for(2))[1]
    assert delivery.status == 200
    [event] = delivery.events
    assert event.event_type == "case.closed"
    assert event.occurred_at == emulator.store.data.tickets[seed.tickets["login"]]["ClosedAt"]
    assert event.event_id.startswith(f"ticket:{seed.tickets['login']}:closed:")
    assert event.person_id == str(seed.persons["karen"])
    assert event.owner_email == "mette.holm@cxhub-demo.example"


async def test_a_change_that_does_not_close_the_ticket_gives_no_event(
    hooked: Hooked, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    _, receiver = hooked
    emulator.rename_ticket(seed.tickets["export"], "Export to Excel fails on large sheets")
    delivery = (await receiver.wait_for(2))[1]
    assert json.loads(delivery.request.body)["Event"] == "ticket.changed"
    assert (delivery.status, delivery.events) == (200, [])


async def test_sale_sold_and_person_changed(
    hooked: Hooked, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    _, receiver = hooked
    emulator.sell_sale(seed.sales["renewal"])
    await receiver.wait_for(2)
    emulator.update_person(seed.persons["emma"], NoMailing=True)
    deliveries = await receiver.wait_for(3)
    events = [event for delivery in deliveries for event in delivery.events]
    assert [e.event_type for e in events] == ["opportunity.won", "person.changed"], events
    won, changed = events
    assert won.event_id.startswith(f"sale:{seed.sales['renewal']}:sold:")
    assert won.person_id == str(seed.persons["emma"])
    assert changed.record_id == str(seed.persons["emma"])
    assert changed.fields["changes"] == ["nomailing"]


@pytest.mark.parametrize("kind", ["person_summary", "person_opt_out"])
async def test_our_own_person_field_write_does_not_come_back_as_a_person_event(
    kind: str, hooked: Hooked, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    connector, receiver = hooked
    written = (
        opt_out_item(1, str(seed.persons["karen"]))
        if kind == "person_opt_out"
        else WriteBackItem(
            id=1,
            key="summary:karen",
            record_id=str(seed.persons["karen"]),
            payload=PersonSummary(
                latest_rating=9,
                latest_score=90.0,
                latest_category=NpsCategory.PROMOTER,
                latest_date=datetime.now(UTC),
                latest_comment=None,
                average_rating=9.0,
                average_rating_30_days=9.0,
                average_score=90.0,
                count=1,
            ),
        )
    )
    assert [r.status for r in await connector.write_back([written])] == ["ok"]
    emulator.update_person(seed.persons["karen"], Lastname="Jensen-Holm")
    deliveries = await receiver.wait_for(3)
    # the two deliveries may arrive in either order: ours brings no event, the user's edit brings one
    assert sorted(len(delivery.events) for delivery in deliveries[1:]) == [0, 1]
    (event,) = [event for delivery in deliveries[1:] for event in delivery.events]
    assert event.event_type == "person.changed" and event.record_id == str(seed.persons["karen"])


def _request(body: bytes, signature_value: str | None, **headers: str) -> WebhookRequest:
    all_headers = {k.lower(): v for k, v in headers.items()}
    if signature_value is not None:
        all_headers["x-superoffice-signature"] = signature_value
    return WebhookRequest(method="POST", url="https://hub.example/hooks/so", headers=all_headers, body=body)


async def test_signature_must_match_the_exact_body(
    hooked: Hooked, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    connector, receiver = hooked
    emulator.close_ticket(seed.tickets["login"])
    genuine = (await receiver.wait_for(2))[1].request
    tampered = genuine.body.replace(
        str(seed.tickets["login"]).encode(), str(seed.tickets["export"]).encode(), 1
    )

    assert len((await connector.parse_webhook(genuine)).events) == 1
    for bad in (
        _request(tampered, genuine.header("X-SuperOffice-Signature")),
        _request(genuine.body, signature("not-the-secret", genuine.body)),
        _request(genuine.body, None),
    ):
        with pytest.raises(BadInput) as caught:
            await connector.parse_webhook(bad)
        assert caught.value.status_code == 401


async def test_signed_garbage_is_a_bad_request(connector: SuperOfficeConnector) -> None:
    body = b"{not json"
    with pytest.raises(BadInput) as caught:
        await connector.parse_webhook(_request(body, signature(WEBHOOK_SECRET, body)))
    assert caught.value.status_code == 400


async def test_without_a_webhook_secret_every_webhook_is_refused(
    server: BackgroundServer, partner_keys: tuple[str, str], seed: DemoSeed
) -> None:
    settings = make_settings(server, partner_keys[0]).model_copy(update={"webhook_secret": None})
    connector = make_connector(settings)
    body = json.dumps({"Event": "test", "PrimaryKey": 0}).encode()
    try:
        with pytest.raises(BadInput) as caught:
            await connector.parse_webhook(
                _request(body, signature(WEBHOOK_SECRET, body), **{"X-Hook-Test": "true"})
            )
    finally:
        await connector.aclose()
    assert caught.value.status_code == 401


async def test_failed_deliveries_are_tried_three_times_then_dropped_and_the_webhook_stops(
    hooked: Hooked, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    connector, receiver = hooked
    receiver.fail_with = 500
    emulator.close_ticket(seed.tickets["login"])
    assert emulator.wait_for_webhooks()
    [delivery] = [d for d in emulator.deliveries if d.event == "ticket.changed"]
    assert delivery.attempts == [500, 500, 500]
    assert not delivery.delivered

    for ticket in ("invoice", "export", "password"):
        emulator.close_ticket(seed.tickets[ticket])
        assert emulator.wait_for_webhooks()
    assert emulator.webhooks()[0]["State"] == "TooManyErrors"
    attempts = sum(len(d.attempts) for d in emulator.deliveries if d.event == "ticket.changed")
    assert attempts == 9  # the ninth failure stopped the webhook mid-delivery

    webhook_check = [c for c in await connector.check() if c.name == "webhook"]
    assert not webhook_check[0].ok and "TooManyErrors" in webhook_check[0].detail
