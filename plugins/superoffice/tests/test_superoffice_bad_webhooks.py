"""Signed webhooks SuperOffice could send but the hub cannot use: a clear 4xx, kept for inspection, never a 500.

SuperOffice switches a webhook off after nine failed deliveries, so a body that makes the hub fail with a
500 on every retry would end in polling only; a 4xx says "this one is bad" and is stored as a rejected
webhook an admin can look at.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from hub_superoffice.emulator import DemoSeed
from hub_superoffice.webhooks import signature
from sqlalchemy import func, select
from superoffice_support import WEBHOOK_SECRET

from hub.app import Hub
from hub.store.tables import Event, RejectedWebhook
from hub.testing.harness import CONNECTOR
from hub.web.app import create_app
from hub.web.inbound import KEPT_BODY_BYTES, Sample
from hub.web.protection import RateLimiter

GUID = "5c3bd3d1-7f0a-4d2e-9b57-2f41a3a7c0de"


def person_changed(person_id: int, **overrides: Any) -> dict[str, Any]:
    """A ``person.changed`` body as SuperOffice sends it."""
    return {
        "EventId": GUID,
        "Timestamp": "2030-03-04T09:30:00.0000000Z",
        "Changes": ["firstname", "updated"],
        "Event": "person.changed",
        "PrimaryKey": person_id,
        "Entity": "person",
        "ContextIdentifier": "Cust12345",
        "ChangedByAssociateId": 1,
        "WebhookName": "cxhub",
        **overrides,
    }


def deeply_nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def bad_bodies(person_id: int) -> dict[str, bytes]:
    """Each a signed body that is not a usable SuperOffice webhook."""

    def body(**overrides: Any) -> bytes:
        return json.dumps(person_changed(person_id, **overrides)).encode()

    nested = json.dumps(person_changed(person_id)).replace('"FieldValues"', "")
    nested = nested[:-1] + f', "FieldValues": {{"x": {deeply_nested(5000)}}}}}'
    return {
        "long event id": body(EventId="e" * 290),
        "event id with NUL": body(EventId="abc\u0000def"),
        "event id with a line break": body(EventId="abc\ndef"),
        "event id not a string": body(EventId={"id": 1}),
        "nested 5,000 deep": nested.encode(),
        "primary key infinite": body(PrimaryKey=1e400),
        "primary key beyond int32": body(PrimaryKey=10**30),
        "primary key negative": body(PrimaryKey=-4),
        "primary key a boolean": body(PrimaryKey=True),
        "primary key 5,000 digits": json.dumps(person_changed(person_id))
        .replace(f'"PrimaryKey": {person_id}', '"PrimaryKey": ' + "9" * 5000)
        .encode(),
        "timestamp beyond year 9999 in UTC": body(Timestamp="9999-12-31T23:30:00-01:00"),
        "timestamp not a date": body(Timestamp="yesterday"),
        "changes not a list": body(Changes="firstname"),
        "change not a string": body(Changes=[{"x": 1}]),
        "field values not an object": body(FieldValues=[1, 2]),
        "event not a string": body(Event=["person.changed"]),
        "event missing": json.dumps({"PrimaryKey": person_id}).encode(),
        "not an object": b"[1, 2, 3]",
        "not JSON": b"{'Event': 'person.changed'}",
        "not UTF-8": b'{"Event": "person.changed\xff"}',
        "event with NUL": body(Event="person.changed\u0000"),
    }


async def test_signed_but_unusable_webhooks_are_a_4xx_kept_for_inspection(
    so_hub: Hub, seed: DemoSeed
) -> None:
    bodies = bad_bodies(seed.persons["karen"])
    answers: dict[str, int] = {}
    reasons: dict[str, str] = {}
    app = create_app(so_hub, scheduler=False)
    # every refused body is kept here: the sample's per-minute bound has tests of its own
    app.state.rejected_sample = Sample(RateLimiter(1000, 60), RateLimiter(1000, 60))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://127.0.0.1:8000",
    ) as client:
        for name, body in bodies.items():
            headers = {"X-SuperOffice-Signature": signature(WEBHOOK_SECRET, body)}
            reply = await client.post(f"/hooks/{CONNECTOR}", content=body, headers=headers)
            answers[name] = reply.status_code
            reasons[name] = reply.json().get("error", "") if 400 <= reply.status_code < 500 else ""
        good = json.dumps(person_changed(seed.persons["karen"])).encode()
        accepted = await client.post(
            f"/hooks/{CONNECTOR}",
            content=good,
            headers={"X-SuperOffice-Signature": signature(WEBHOOK_SECRET, good)},
        )
    assert answers == dict.fromkeys(bodies, 400)
    assert accepted.status_code == 200
    # the reason names what is wrong, and never echoes the bad value (a NUL cannot be stored in PostgreSQL)
    for name, field in {
        "long event id": "EventId",
        "event id with NUL": "EventId",
        "primary key beyond int32": "PrimaryKey",
        "changes not a list": "Changes",
        "timestamp not a date": "Timestamp",
        "nested 5,000 deep": "JSON",
    }.items():
        assert field in reasons[name], (name, reasons[name])
    assert not any("\u0000" in reason or "e" * 50 in reason for reason in reasons.values())
    async with so_hub.store.session() as s:
        kept = list(await s.scalars(select(RejectedWebhook).order_by(RejectedWebhook.id)))
        events = await s.scalar(select(func.count()).select_from(Event))
    # the first KEPT_BODY_BYTES of each body are kept, with its whole size
    assert [(row.body, row.body_size) for row in kept] == [
        (b[:KEPT_BODY_BYTES], len(b)) for b in bodies.values()
    ]
    assert all(row.status_code == 400 and row.reason for row in kept)
    assert events == 1  # only the good one
