"""Hostile or malformed webhooks get a 4xx and are kept for inspection, never a 500.

Each body is posted to the hub's real ``/hooks/{connector}`` route (the web app around a hub whose connector
talks to the emulator over HTTPS): Outbound Messages (SOAP) that are deep, carry a DTD in any encoding, hold
a NUL or ids of no record, and signed JSON callouts that are deep, mistyped, or carry ids of no record.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from hub_salesforce.emulation.outbound import envelope
from hub_salesforce.emulator import SalesforceEmulator
from hub_salesforce.webhooks import sign
from salesforce_support import WEBHOOK_SECRET, SalesforceHarness, callout_request
from sqlalchemy import select

from hub.app import Hub
from hub.store.tables import Event, RejectedWebhook
from hub.testing import build_hub
from hub.testing.harness import CONNECTOR
from hub.web import create_app
from hub.web.inbound import KEPT_BODY_BYTES

SOAP = {"content-type": "text/xml; charset=utf-8"}
LAUGHS = (
    '<?xml version="1.0" encoding="{encoding}"?>'
    '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">'
    '<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>'
    "<lolz>&lol4;</lolz>"
)
EXTERNAL = (
    '<?xml version="1.0" encoding="{encoding}"?>'
    '<!DOCTYPE x [<!ENTITY secret SYSTEM "file:///etc/passwd">]><x>&secret;</x>'
)


@pytest.fixture
async def web(harness: SalesforceHarness, tmp_path: Path) -> AsyncIterator[tuple[Hub, httpx.AsyncClient]]:
    hub = await build_hub(harness, tmp_path)
    transport = httpx.ASGITransport(app=create_app(hub, scheduler=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
        yield hub, client
    await hub.close()


async def post(
    web: tuple[Hub, httpx.AsyncClient], body: bytes, headers: dict[str, str]
) -> tuple[int, list[RejectedWebhook]]:
    hub, client = web
    reply = await client.post(f"/hooks/{CONNECTOR}", content=body, headers=headers)
    async with hub.store.session() as s:
        kept = list(await s.scalars(select(RejectedWebhook)))
        assert not list(await s.scalars(select(Event))), "a refused webhook made an event"
    return reply.status_code, kept


def signed(payload: bytes) -> dict[str, str]:
    return callout_request(payload).headers


def message(emulator: SalesforceEmulator, notification_id: str, record_id: str) -> bytes:
    return envelope(emulator.org.org_id, "04k5g0000000001AAA", [(notification_id, "Case", {"Id": record_id})])


def deep_xml(depth: int) -> bytes:
    return b"<a>" * depth + b"</a>" * depth


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("billion laughs, UTF-8", LAUGHS.format(encoding="UTF-8").encode("utf-8")),
        ("billion laughs, UTF-16", LAUGHS.format(encoding="UTF-16").encode("utf-16")),
        ("billion laughs, UTF-32", LAUGHS.format(encoding="UTF-32").encode("utf-32")),
        ("external entity, UTF-16", EXTERNAL.format(encoding="UTF-16").encode("utf-16")),
        ("nested 5,000 deep", deep_xml(5000)),
        ("nested 100,000 deep", deep_xml(100_000)),
        ("a NUL byte", b'<?xml version="1.0"?><soapenv:Envelope>\x00</soapenv:Envelope>'),
        ("a NUL character reference", b"<a>&#0;</a>"),
        ("not UTF-8", b'<?xml version="1.0" encoding="UTF-8"?><a>\xff\xfe</a>'),
    ],
)
async def test_hostile_outbound_message_xml_is_refused_and_kept(
    web: tuple[Hub, httpx.AsyncClient], name: str, body: bytes
) -> None:
    status, kept = await post(web, body, SOAP)
    assert status == 400, name
    assert [(k.status_code, k.body, k.body_size) for k in kept] == [(400, body[:KEPT_BODY_BYTES], len(body))]


async def test_an_envelope_nested_deep_inside_a_field_is_refused(
    web: tuple[Hub, httpx.AsyncClient], emulator: SalesforceEmulator
) -> None:
    case_id = emulator.close_case(emulator.add_case("Slow", emulator.add_contact("A", "B")))["Id"]
    body = message(emulator, "04l5g0000000001AAA", case_id).replace(
        f"<sf:Id>{case_id}</sf:Id>".encode(), f"<sf:Id>{case_id}</sf:Id>".encode() + deep_xml(5000)
    )
    status, kept = await post(web, body, SOAP)
    assert status == 400 and len(kept) == 1


@pytest.mark.parametrize(
    ("notification_id", "record_id"),
    [
        ("04l" + "A" * 300, "5005g00000000001AAA"[:18]),  # a notification id of 300+ characters
        ("04l5g0000000001AAA", "500" + "B" * 300),  # a record id of 300+ characters
        ("04l5g0000000001AAA", "5005g0000000001\x01AA"),  # a control character in the id
        ("", "5005g0000000001AAA"),  # no notification id
        ("04l5g0000000001AAA", ""),  # no record id
    ],
)
async def test_an_outbound_message_whose_ids_are_no_salesforce_ids_is_refused(
    web: tuple[Hub, httpx.AsyncClient], emulator: SalesforceEmulator, notification_id: str, record_id: str
) -> None:
    body = message(emulator, notification_id, record_id)
    status, kept = await post(web, body, SOAP)
    assert status == 400 and [k.body for k in kept] == [body[:KEPT_BODY_BYTES]]


def deep_json(depth: int) -> bytes:
    return (
        json.dumps({"event": "case.closed", "records": [{"Id": "5005g0000000001AAA"}]})
        .encode()
        .replace(b'"5005g0000000001AAA"', b"[" * depth + b"]" * depth)
    )


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("nested 5,000 deep", deep_json(5000)),
        ("nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000),
        (
            "attributes not an object",
            b'{"event": "case.closed", "records": [{"attributes": "Case", "Id": "5005g0000000001AAA"}]}',
        ),
        (
            "attributes.type not a string",
            b'{"event": "case.closed", "records": [{"attributes": {"type": ["Case"]}, "Id": "5005g0000000001AAA"}]}',
        ),
        ("a record not an object", b'{"event": "case.closed", "records": ["5005g0000000001AAA"]}'),
        ("Id not a string", b'{"event": "case.closed", "records": [{"Id": 5005}]}'),
        (
            "Id of 300+ characters",
            json.dumps({"event": "case.closed", "records": [{"Id": "5" * 300}]}).encode(),
        ),
        ("a NUL in the Id", b'{"event": "case.closed", "records": [{"Id": "5005g0000000001\\u0000AA"}]}'),
        ("a NUL in the event", b'{"event": "case.closed\\u0000", "records": [{"Id": "5005g0000000001AAA"}]}'),
        ("event not a string", b'{"event": {"x": 1}, "records": [{"Id": "5005g0000000001AAA"}]}'),
        ("an unknown event", b'{"event": "case.deleted", "records": [{"Id": "5005g0000000001AAA"}]}'),
        (
            "an unknown object",
            b'{"event": "case.closed", "records": [{"attributes": {"type": "User"}, "Id": "0055g0000000001AAA"}]}',
        ),
        ("a number too long to read", b'{"event": "case.closed", "records": [], "n": ' + b"9" * 5000 + b"}"),
        ("not UTF-8", b'{"event": "case.closed\xff", "records": []}'),
    ],
)
async def test_a_signed_callout_with_a_hostile_body_is_refused_and_kept(
    web: tuple[Hub, httpx.AsyncClient], name: str, payload: bytes
) -> None:
    status, kept = await post(web, payload, signed(payload))
    assert status == 400, name
    assert [(k.status_code, k.body, k.body_size) for k in kept] == [
        (400, payload[:KEPT_BODY_BYTES], len(payload))
    ]


@pytest.mark.parametrize("timestamp", ["nan", "NaN", "inf", "-inf", "1e400", "0x10"])
async def test_a_callout_timestamp_that_is_no_time_is_refused(
    web: tuple[Hub, httpx.AsyncClient], timestamp: str
) -> None:
    payload = b'{"event": "case.closed", "records": []}'
    headers = {
        "content-type": "application/json",
        "x-cxhub-timestamp": timestamp,
        "x-cxhub-signature": sign(WEBHOOK_SECRET, timestamp, payload),
    }
    status, kept = await post(web, payload, headers)
    assert status == 401 and len(kept) == 1
