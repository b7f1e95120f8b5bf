"""Outbound Messages arrive at least once and out of order; each closed case is surveyed exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hub_salesforce.emulation.outbound import OutboundSender
from hub_salesforce.emulator import SalesforceEmulator, TlsServer, serve_tls
from salesforce_support import SalesforceHarness
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub import BadInput, WebhookRequest
from hub.app import Hub
from hub.store.tables import Event, Invitation
from hub.testing import build_hub
from hub.testing.harness import CONNECTOR
from hub.testing.memory import MemoryChannel


def receiver(hub: Hub, loop: asyncio.AbstractEventLoop) -> Starlette:
    """The hub's webhook endpoint in miniature: store the events, then answer what the connector says."""

    async def handle(request: Request) -> Response:
        hook = WebhookRequest(
            method="POST",
            url=str(request.url),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(),
        )

        async def store() -> tuple[int, str, str]:
            try:
                reply = await hub.connectors[CONNECTOR].parse_webhook(hook)
            except BadInput as exc:
                return exc.status_code, str(exc), "text/plain"
            await hub.engine.receive(CONNECTOR, reply.events, source="webhook")
            return reply.status_code, reply.body, reply.media_type

        status, body, media_type = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(store(), loop))
        return Response(body, status_code=status, media_type=media_type)

    return Starlette(routes=[Route("/hooks/{instance}", handle, methods=["POST"])])


async def test_duplicated_out_of_order_notifications_survey_each_case_once(
    emulator: SalesforceEmulator, server: TlsServer, harness: SalesforceHarness, tmp_path: Path
) -> None:
    MemoryChannel.sent.clear()
    hub = await build_hub(harness, tmp_path)
    try:
        cases = []
        for n in range(2):
            contact = emulator.add_contact("Ola", f"Nord{n}", email=f"ola.{n}@nordlys.example")
            cases.append(emulator.close_case(emulator.add_case("Invoice wrong", contact, harness.owner)))
        notifications = [
            (
                f"04l5g000000000{n}AAA",
                "Case",
                {k: case[k] for k in ("Id", "ClosedDate", "ContactId", "IsClosed")},
            )
            for n, case in enumerate(cases)
        ]
        with serve_tls(receiver(hub, asyncio.get_running_loop()), tls=False) as listener:
            sender = OutboundSender(f"{listener.url}/hooks/{CONNECTOR}", emulator.org.org_id, copies=2)
            deliveries = await asyncio.to_thread(sender.send, notifications)
        order = [d.notification_id for d in deliveries]
        assert len(order) == 4 and order != sorted(order), "the sender must deliver duplicates out of order"
        assert all(d.acknowledged for d in deliveries)

        await hub.engine.process_pending()
        await hub.engine.dispatch_due()
        async with hub.store.session() as s:
            events = list(await s.scalars(select(Event)))
            invitations = list(await s.scalars(select(Invitation)))
        assert sorted(e.record_id for e in events) == sorted(c["Id"] for c in cases)
        assert [i.status for i in invitations] == ["sent", "sent"]
        assert len([m for m in MemoryChannel.sent if m.kind == "survey"]) == 2
    finally:
        await hub.close()


async def test_outbound_message_from_another_org_is_refused(connector, emulator: SalesforceEmulator) -> None:  # type: ignore[no-untyped-def]
    from hub_salesforce.emulation.outbound import envelope

    body = envelope("00D000000000OTHERAA", "04k", [("04l1", "Case", {"Id": "5001"})])
    request = WebhookRequest(
        method="POST", url="https://hub/hooks/sf", headers={"content-type": "text/xml"}, body=body
    )
    try:
        await connector.parse_webhook(request)
    except BadInput as exc:
        assert exc.status_code == 401
    else:
        raise AssertionError("a message from another org was accepted")


def _message(
    emulator: SalesforceEmulator, *notifications: tuple[str, str, dict[str, object]]
) -> WebhookRequest:
    from hub_salesforce.emulation.outbound import envelope

    return WebhookRequest(
        method="POST",
        url="https://hub.example/hooks/sf",
        headers={"content-type": "text/xml"},
        body=envelope(emulator.org.org_id, "04k5g0000000001AAA", list(notifications)),
    )


async def test_a_notification_with_few_fields_gives_the_event_polling_would_owner_and_filters_included(
    connector, emulator: SalesforceEmulator
) -> None:  # type: ignore[no-untyped-def]
    owner = emulator.add_user("Ada Agent", "ada.agent@nordlys.example")
    contact = emulator.add_contact("Ola", "Nord", email="ola@nordlys.example")
    case = emulator.close_case(emulator.add_case("Invoice wrong", contact, owner))
    # what a Flow's Outbound Message typically carries: the id and a couple of ticked fields
    reply = await connector.parse_webhook(
        _message(emulator, ("04l5g0000000001AAA", "Case", {"Id": case["Id"], "IsClosed": True}))
    )
    polled = await connector.fetch_events(None)
    (pushed,) = reply.events
    (same,) = [e for e in polled.events if e.record_id == case["Id"]]
    assert pushed.event_id == same.event_id, "one closure, one event id, whichever way it came"
    assert pushed.owner_email == "ada.agent@nordlys.example", "a detractor alert needs the case owner"
    assert pushed.fields["Origin"] == "Email" and pushed.fields["Subject"] == "Invoice wrong"
    assert pushed.person_id == contact


async def test_a_notification_is_only_a_hint_forged_or_stale_fields_survey_nobody_else(
    connector, emulator: SalesforceEmulator
) -> None:  # type: ignore[no-untyped-def]
    customer = emulator.add_contact("Ola", "Nord", email="ola@nordlys.example")
    stranger = emulator.add_contact("Kim", "Vik", email="kim@nordlys.example")
    closed = emulator.close_case(emulator.add_case("Invoice wrong", customer))
    still_open = emulator.add_case("Still working on it", customer)
    reply = await connector.parse_webhook(
        _message(
            emulator,
            # whoever knows the org id could send this: the contact is not the case's
            (
                "04l5g0000000001AAA",
                "Case",
                {
                    "Id": closed["Id"],
                    "ContactId": stranger,
                    "IsClosed": True,
                    "ClosedDate": closed["ClosedDate"],
                },
            ),
            # a case the message calls closed that is open in Salesforce
            (
                "04l5g0000000002AAA",
                "Case",
                {"Id": still_open, "IsClosed": True, "ClosedDate": closed["ClosedDate"]},
            ),
            # a record that does not exist
            ("04l5g0000000003AAA", "Case", {"Id": "5005g0000009999AAA", "IsClosed": True}),
        )
    )
    assert [(e.record_id, e.person_id) for e in reply.events] == [(closed["Id"], customer)]
