"""Text from outside that a database may refuse (NUL, over-long ids, deep JSON) and concurrent duplicates.

Every such input is stored the same way on SQLite and PostgreSQL or refused with a 4xx that is kept for
inspection; it never turns into a 500, and it never stops the events that arrive beside it.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import func, select

from hub.store.tables import Event, Invitation, Person, RejectedWebhook, Response, WriteBack
from hub.web import create_app
from tests.conftest import WEBHOOK_SECRET
from tests.fakes.crm import sign
from tests.helpers import asgi_client, case_event, csrf_of, survey_flow


@pytest.fixture
async def web(make_hub):
    hub = await make_hub()
    async with asgi_client(create_app(hub, scheduler=False)) as client:
        yield hub, client


async def count(hub, table) -> int:
    async with hub.store.session() as s:
        return int(await s.scalar(select(func.count()).select_from(table)))


def signed(case: object) -> tuple[bytes, dict[str, str]]:
    body = case if isinstance(case, bytes) else json.dumps(case).encode()
    return body, {"content-type": "application/json", "x-fake-signature": sign(WEBHOOK_SECRET, body)}


# --- NUL in survey answers ------------------------------------------------------------------------------------


async def test_a_nul_in_a_comment_is_stored_without_it_and_the_score_is_kept(web, crm_state) -> None:
    hub, client = web
    path = f"/s/{await survey_flow(hub, crm_state)}"
    page = await client.get(path)
    reply = await client.post(
        path, data={"csrf": csrf_of(page.text), "score": "3", "comment": "hello\x00world"}
    )
    assert reply.status_code == 303 and reply.headers["location"].endswith("/thanks")
    async with hub.store.session() as s:
        stored = await s.scalar(select(Response))
        payloads = [w.payload for w in await s.scalars(select(WriteBack)) if w.payload]
    assert (stored.rating, stored.comment) == (3, "helloworld")
    assert payloads and all(p["comment"] == "helloworld" for p in payloads)
    alert = [m for m in crm_state.outbox if m.get("kind") == "alert"][-1]
    assert "\x00" not in json.dumps(alert) and "helloworld" in alert["text"]


async def test_a_nul_in_a_later_comment_amends_the_answer(web, crm_state) -> None:
    hub, client = web
    path = f"/s/{await survey_flow(hub, crm_state)}"
    page = await client.get(path)
    await client.post(path, data={"csrf": csrf_of(page.text), "score": "9"})
    followup = await client.get(path)
    reply = await client.post(path, data={"csrf": csrf_of(followup.text), "comment": "\x00fast\x00 "})
    assert reply.status_code == 303
    async with hub.store.session() as s:
        stored = await s.scalar(select(Response))
    assert (stored.rating, stored.comment) == (9, "fast")


async def test_a_channel_reply_with_a_nul_is_recorded(web, crm_state) -> None:
    hub, client = web
    await survey_flow(hub, crm_state)
    body = json.dumps({"from": "ada@example.com", "text": "9 quick\x00 and friendly"}).encode()
    reply = await client.post("/inbound/mail", content=body)
    assert reply.status_code == 200
    async with hub.store.session() as s:
        stored = await s.scalar(select(Response))
    assert (stored.rating, stored.comment) == (9, "quick and friendly")


async def test_a_channel_reply_with_a_lone_surrogate_is_recorded(web, crm_state) -> None:
    """JSON's \\ud800 escape carries half of a UTF-16 pair, which no database can store as UTF-8 text."""
    hub, client = web
    await survey_flow(hub, crm_state)
    reply = await client.post("/inbound/mail", content=b'{"from": "ada@example.com", "text": "9 a\\ud800b"}')
    assert reply.status_code == 200
    unknown = await client.post("/inbound/mail", content=b'{"from": "ada\\ud800@example.com", "text": "9"}')
    assert unknown.status_code == 200  # nobody by that address: nothing recorded, nothing broken
    async with hub.store.session() as s:
        stored = await s.scalar(select(Response))
    assert (stored.rating, stored.comment) == (9, "a\ufffdb")


async def test_an_unreadable_channel_reply_is_a_kept_400(web) -> None:
    hub, client = web
    reply = await client.post("/inbound/mail", content=b"{not json")
    assert reply.status_code == 400
    async with hub.store.session() as s:
        kept = await s.scalar(select(RejectedWebhook))
    assert (kept.target, kept.status_code, kept.body) == ("mail", 400, b"{not json")


# --- names and ids from a CRM ---------------------------------------------------------------------------------


async def test_a_nul_or_overlong_name_from_a_polled_crm_is_stored_and_the_others_go_on(
    make_hub, crm_state
) -> None:
    crm_state.people["P1"]["first_name"] = "A\x00da"
    crm_state.people["P3"]["first_name"] = "C" * 400
    crm_state.cases = [
        {"id": "C7", "seq": 1, "person_id": "P1", "fields": {"subject": "broken\x00 printer"}},
        {"id": "C8", "seq": 2, "person_id": "P3"},
        {"id": "C9", "seq": 3, "person_id": "P1"},
    ]
    hub = await make_hub()
    assert (await hub.sync.poll("crm")).events == 3
    assert await hub.engine.process_pending() == 3
    async with hub.store.session() as s:
        names = sorted(n for n in await s.scalars(select(Person.name)) if n)
        events = list(await s.scalars(select(Event).order_by(Event.id)))
        invited = await s.scalar(select(func.count()).select_from(Invitation))
    assert names == ["Ada", "C" * 300]
    assert [e.process_error for e in events] == [None, None, None]
    assert events[0].payload["fields"] == {"subject": "broken printer"}
    assert invited == 3


async def test_a_polled_event_whose_id_cannot_be_stored_is_skipped_and_the_poll_goes_on(
    make_hub, crm_state
) -> None:
    crm_state.cases = [
        {"id": "C\x007", "seq": 1, "person_id": "P1"},
        {"id": "C" * 400, "seq": 2, "person_id": "P1"},
        {"id": "C9", "seq": 3, "person_id": "P3"},
    ]
    hub = await make_hub()
    stats = await hub.sync.poll("crm")
    assert stats.events == 1 and stats.error is None
    async with hub.store.session() as s:
        stored = list(await s.scalars(select(Event.event_id)))
    assert stored == ["case:C9:closed"]
    crm_state.cases.append({"id": "C10", "seq": 4, "person_id": "P3"})
    assert (await hub.sync.poll("crm")).events == 1  # the cursor moved past the bad ones


async def test_receive_stores_the_good_events_beside_a_bad_one(make_hub) -> None:
    hub = await make_hub()
    bad = case_event("C\x001")
    fresh = await hub.engine.receive("crm", [bad, case_event("C2")], source="poll")
    assert fresh == [False, True]
    assert await count(hub, Event) == 1


# --- webhooks that cannot be stored ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ({"id": "C" * 290, "person_id": "P1"}, "event_id"),
        ({"id": "C\x001", "person_id": "P1"}, "event_id"),
        ({"id": "C1", "person_id": "P\x001"}, "person_id"),
        ({"id": "C1", "person_id": "P" * 201}, "person_id"),
        (b"[" * 5000 + b"]" * 5000, "crm"),
        (b'{"id": "C\\ud8001", "person_id": "P1"}', "event_id"),
    ],
    ids=["long-id", "nul-id", "nul-person", "long-person", "deep-json", "surrogate-id"],
)
async def test_a_signed_webhook_that_cannot_be_stored_is_a_kept_400(web, case, reason) -> None:
    hub, client = web
    body, headers = signed(case)
    reply = await client.post("/hooks/crm", content=body, headers=headers)
    assert reply.status_code == 400 and reason in reply.json()["error"]
    async with hub.store.session() as s:
        kept = await s.scalar(select(RejectedWebhook))
    assert (kept.target, kept.status_code, kept.body) == ("crm", 400, body)
    assert await count(hub, Event) == 0
    again = await client.post("/hooks/crm", content=body, headers=headers)
    assert again.status_code == 400


async def test_a_nul_in_a_webhook_name_or_field_is_stored_without_it(web) -> None:
    hub, client = web
    case = {"id": "C1", "person_id": "P1", "owner_email": "owner@example.com", "fields": {"t\x00": "a\x00b"}}
    body, headers = signed(case)
    reply = await client.post("/hooks/crm", content=body, headers=headers)
    assert reply.status_code == 200
    async with hub.store.session() as s:
        event = await s.scalar(select(Event))
    assert event.payload["fields"] == {"t": "ab"} and event.raw == body


async def test_a_parser_bug_is_a_500_with_the_body_kept(web, monkeypatch) -> None:
    hub, client = web

    async def broken(_request):
        raise RuntimeError("the plugin itself is broken")

    monkeypatch.setattr(hub.connectors["crm"], "parse_webhook", broken)
    body, headers = signed({"id": "C1"})
    reply = await client.post("/hooks/crm", content=body, headers=headers)
    assert reply.status_code == 500
    async with hub.store.session() as s:
        kept = await s.scalar(select(RejectedWebhook))
    assert (kept.status_code, kept.body) == (500, body) and "RuntimeError" in kept.reason


# --- a double-click on the first answer -----------------------------------------------------------------------


async def test_concurrent_first_answers_over_http_all_end_on_the_follow_up(web, crm_state) -> None:
    hub, client = web
    path = f"/s/{await survey_flow(hub, crm_state)}"
    page = await client.get(path)
    form = {"csrf": csrf_of(page.text), "score": "4"}
    replies = await asyncio.gather(*(client.post(path, data=form) for _ in range(6)))
    assert [r.status_code for r in replies] == [303] * 6
    assert {r.headers["location"] for r in replies} == {path}
    async with hub.store.session() as s:
        stored = list(await s.scalars(select(Response)))
    assert [r.rating for r in stored] == [4]
    alerts = [m for m in crm_state.outbox if m.get("kind") == "alert"]
    assert len(alerts) == 1  # one detractor alert, not one per click


async def test_concurrent_record_answer_calls_store_one_response(make_hub, crm_state) -> None:
    hub = await make_hub()
    await survey_flow(hub, crm_state)
    async with hub.store.session() as s:
        inv_id = await s.scalar(select(Invitation.id))
    records = await asyncio.gather(*(hub.engine.record_answer(inv_id, 10) for _ in range(5)))
    assert len({r.id for r in records}) == 1 and {r.rating for r in records} == {10}
    assert await count(hub, Response) == 1


async def test_an_event_the_hub_cannot_handle_is_set_aside_and_the_others_are_processed(
    make_hub, monkeypatch
) -> None:
    hub = await make_hub()
    await hub.engine.receive("crm", [case_event("C1", "P1"), case_event("C2", "P3")], source="poll")
    connector = hub.connectors["crm"]
    real = connector.get_person

    async def get_person(crm_id: str):
        if crm_id == "P1":
            raise ValueError("a person record this hub cannot read")
        return await real(crm_id)

    monkeypatch.setattr(connector, "get_person", get_person)
    assert await hub.engine.process_pending() == 1
    async with hub.store.session() as s:
        events = {e.record_id: e for e in await s.scalars(select(Event))}
        invited = await s.scalar(select(func.count()).select_from(Invitation))
    assert "ValueError" in events["C1"].process_error and events["C1"].processed_at is not None
    assert events["C2"].process_error is None and invited == 1
    assert await hub.engine.process_pending() == 0  # set aside, not retried ahead of newer events
