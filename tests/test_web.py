"""The HTTP face: webhooks verified and stored before 2xx, survey pages that never record on GET, the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from hub.store.tables import Event, RejectedWebhook, Response, Token, WriteBack
from hub.web import create_app
from tests.helpers import asgi_client, csrf_of, survey_flow, webhook


@pytest.fixture
async def web(make_hub):
    hub = await make_hub()
    async with asgi_client(create_app(hub, scheduler=False)) as client:
        yield hub, client


async def count(hub, table) -> int:
    async with hub.store.session() as s:
        return int(await s.scalar(select(func.count()).select_from(table)))


# --- webhooks -----------------------------------------------------------------------------------------------


async def test_a_signed_webhook_is_stored_then_acknowledged(web) -> None:
    hub, client = web
    body, headers = webhook("C1")
    reply = await client.post("/hooks/crm", content=body, headers=headers)
    assert reply.status_code == 200 and reply.json() == {"ok": True}
    async with hub.store.session() as s:
        event = await s.scalar(select(Event))
    assert (event.event_id, event.source, event.raw) == ("case:C1:closed", "webhook", body)
    again = await client.post("/hooks/crm", content=body, headers=headers)
    assert again.status_code == 200 and await count(hub, Event) == 1


async def test_a_bad_signature_is_refused_and_kept_for_inspection(web) -> None:
    hub, client = web
    body, headers = webhook("C1", secret="wrong-secret")
    reply = await client.post("/hooks/crm", content=body, headers=headers)
    assert reply.status_code == 401 and reply.json() == {"error": "bad signature"}
    async with hub.store.session() as s:
        kept = await s.scalar(select(RejectedWebhook))
    assert (kept.target, kept.status_code, kept.body) == ("crm", 401, body)
    assert await count(hub, Event) == 0
    listed = await client.get(
        "/api/v1/rejected-webhooks", headers={"Authorization": "Bearer api-token-for-tests-42"}
    )
    [shown] = listed.json()
    assert (shown["target"], shown["status_code"], shown["reason"]) == ("crm", 401, "bad signature")
    assert shown["body"] == body.decode() and "x-fake-signature" in shown["headers"]


async def test_malformed_json_gets_400_with_the_reason(web) -> None:
    hub, client = web
    from tests.conftest import WEBHOOK_SECRET
    from tests.fakes.crm import sign

    body = b'{"person_id": "P1"}'
    reply = await client.post(
        "/hooks/crm", content=body, headers={"x-fake-signature": sign(WEBHOOK_SECRET, body)}
    )
    assert reply.status_code == 400 and reply.json()["error"] == "malformed case: 'id'"
    assert await count(hub, RejectedWebhook) == 1


async def test_an_oversized_body_is_refused_unread(web) -> None:
    hub, client = web
    hub.config.hub.webhook_max_bytes = 1000
    reply = await client.post("/hooks/crm", content=b"x" * 5000)
    assert reply.status_code == 413 and reply.json() == {"error": "body larger than 1000 bytes"}


async def test_a_body_sent_in_chunks_is_read_whole_and_refused_once_it_passes_the_limit(web) -> None:
    """No content-length (chunked transfer): the body is read as it comes, and refused as soon as it is over."""
    hub, client = web
    body, headers = webhook("C-chunks", "P1")

    async def in_pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
        for start in range(0, len(data), size):
            yield data[start : start + size]

    accepted = await client.post("/hooks/crm", content=in_pieces(body, 7), headers=headers)
    assert accepted.status_code == 200, accepted.text
    async with hub.store.session() as s:
        assert await s.scalar(select(func.count()).select_from(Event)) == 1
    hub.config.hub.webhook_max_bytes = 1000
    refused = await client.post("/hooks/crm", content=in_pieces(b"x" * 5000, 600), headers=headers)
    assert refused.status_code == 413 and refused.json() == {"error": "body larger than 1000 bytes"}


async def test_an_unknown_connector_is_404(web) -> None:
    _, client = web
    assert (await client.post("/hooks/nope", content=b"{}")).status_code == 404


# --- survey pages -------------------------------------------------------------------------------------------


async def test_get_never_records_even_with_a_score_in_the_link(web, crm_state) -> None:
    hub, client = web
    token = await survey_flow(hub, crm_state)
    page = await client.get(f"/s/{token}?score=9")
    assert page.status_code == 200
    assert 'value="9" checked' in page.text
    assert "Hvor sandsynligt" in page.text and 'lang="da"' in page.text
    await client.get(f"/s/{token}")
    await client.head(f"/s/{token}?score=3")
    assert await count(hub, Response) == 0


async def test_answer_then_comment_then_thanks(web, crm_state) -> None:
    hub, client = web
    token = await survey_flow(hub, crm_state)
    page = await client.get(f"/s/{token}")
    posted = await client.post(f"/s/{token}", data={"csrf": csrf_of(page.text), "score": "6"})
    assert posted.status_code == 303 and posted.headers["location"] == f"/s/{token}"
    followup = await client.get(f"/s/{token}")
    assert "Hvad kunne vi gøre bedre?" in followup.text  # the detractor question, in Danish
    done = await client.post(
        f"/s/{token}", data={"csrf": csrf_of(followup.text), "comment": "Svar på æøå 🍷👍"}
    )
    assert done.headers["location"] == f"/s/{token}/thanks"
    thanks = await client.get(done.headers["location"])
    assert "Tak for dit svar!" in thanks.text
    async with hub.store.session() as s:
        stored = await s.scalar(select(Response))
    assert (stored.rating, stored.category, stored.comment) == (6, "detractor", "Svar på æøå 🍷👍")


async def test_a_post_without_a_valid_csrf_token_is_refused(web, crm_state) -> None:
    hub, client = web
    token = await survey_flow(hub, crm_state)
    await client.get(f"/s/{token}")  # sets the cookie
    missing = await client.post(f"/s/{token}", data={"score": "9"})
    forged = await client.post(f"/s/{token}", data={"score": "9", "csrf": "0" * 64})
    assert missing.status_code == forged.status_code == 403
    assert await count(hub, Response) == 0


async def test_a_score_outside_the_scale_is_refused_with_a_clear_message(web, crm_state) -> None:
    hub, client = web
    hub.config.campaigns["case_closed"].default_language = "en"
    crm_state.people["P1"]["language"] = None
    token = await survey_flow(hub, crm_state)
    page = await client.get(f"/s/{token}")
    for bad in ("11", "-1", "ten"):
        reply = await client.post(f"/s/{token}", data={"csrf": csrf_of(page.text), "score": bad})
        assert reply.status_code == 400
        assert "Please choose a value from 0 to 10." in reply.text
    assert await count(hub, Response) == 0


async def test_unknown_expired_and_closed_tokens_get_friendly_pages(web, crm_state) -> None:
    hub, client = web
    unknown = await client.get("/s/not-a-real-token")
    assert unknown.status_code == 404 and "This survey link is not valid" in unknown.text
    token = await survey_flow(hub, crm_state)
    async with hub.store.session() as s:
        row = await s.scalar(select(Token).where(Token.purpose == "survey"))
        row.expires_at = hub.now() - timedelta(minutes=1)
    expired = await client.get(f"/s/{token}")
    assert expired.status_code == 410 and "Denne undersøgelse er udløbet" in expired.text
    async with hub.store.session() as s:
        row = await s.scalar(select(Token).where(Token.purpose == "survey"))
        row.expires_at = hub.now() + timedelta(days=1)
    page = await client.get(f"/s/{token}")
    await client.post(f"/s/{token}", data={"csrf": csrf_of(page.text), "score": "8"})
    hub.config.hub.amend_window_hours = 0
    closed = await client.get(f"/s/{token}")
    assert closed.status_code == 200 and "Denne undersøgelse er lukket" in closed.text
    assert "Traceback" not in closed.text


async def test_one_click_unsubscribe(web, crm_state) -> None:
    hub, client = web
    await survey_flow(hub, crm_state)
    url = crm_state.outbox[-1]["unsubscribe_url"].replace("http://127.0.0.1:8000", "")
    confirm = await client.get(url)
    assert confirm.status_code == 200 and '<form method="post"' in confirm.text
    done = await client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200


# --- admin API, health ----------------------------------------------------------------------------------------


async def test_the_admin_api_needs_the_token(web, crm_state) -> None:
    hub, client = web
    token = await survey_flow(hub, crm_state)
    _, page = await hub.engine.page_for_token(token)
    await hub.engine.record_answer(page.invitation_id, 10)
    assert (await client.get("/api/v1/responses")).status_code == 401
    wrong = await client.get("/api/v1/responses", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    auth = {"Authorization": "Bearer api-token-for-tests-42"}
    responses = (await client.get("/api/v1/responses", headers=auth)).json()
    assert [(r["rating"], r["category"]) for r in responses] == [(10, "promoter")]
    invitations = (await client.get("/api/v1/invitations", headers=auth)).json()
    assert invitations[0]["status"] == "answered"
    assert (await client.get("/api/v1/people", headers=auth)).json()[0]["email"] == "ada@example.com"
    await hub.sync.run("crm")
    runs = (await client.get("/api/v1/sync-runs", headers=auth)).json()
    assert runs[0]["written"] == 3
    assert (await client.get("/api/v1/dead-letters", headers=auth)).json() == []
    replay = await client.post("/api/v1/dead-letters/replay", headers=auth, json={})
    assert replay.json() == {"requeued": 0}


AUTH = {"Authorization": "Bearer api-token-for-tests-42"}


async def test_openapi_health_readiness_and_metrics(web) -> None:
    hub, client = web
    spec = (await client.get("/api/v1/openapi.json", headers=AUTH)).json()
    assert "/api/v1/responses" in spec["paths"] and "/hooks/{connector}" in spec["paths"]
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    hub.config.hub.metrics_token = SecretStr("metrics-token-for-tests")
    metrics = await client.get("/metrics", headers={"Authorization": "Bearer metrics-token-for-tests"})
    assert "cxhub_webhooks_total" in metrics.text


async def test_metrics_need_their_own_token_and_are_off_without_one(web) -> None:
    hub, client = web
    assert (await client.get("/metrics")).status_code == 404  # no hub.metrics_token: off
    hub.config.hub.metrics_token = SecretStr("metrics-token-for-tests")
    for headers in ({}, AUTH, {"Authorization": "Bearer metrics-token-for-test"}):
        refused = await client.get("/metrics", headers=headers)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert "cxhub_" not in refused.text


async def test_the_openapi_document_needs_the_api_token_and_the_docs_page_the_api(web) -> None:
    hub, client = web
    for headers in ({}, {"Authorization": "Bearer nope"}):
        refused = await client.get("/api/v1/openapi.json", headers=headers)
        assert refused.status_code == 401 and "paths" not in refused.text
    page = await client.get("/api/docs")
    assert page.status_code == 200 and "/api/v1/openapi.json" in page.text and "Bearer" in page.text
    hub.config.hub.api_token = None
    assert (await client.get("/api/docs")).status_code == 404
    assert (await client.get("/api/v1/openapi.json", headers=AUTH)).status_code == 404


LISTS = ["responses", "people", "invitations", "sync-runs", "dead-letters", "rejected-webhooks"]


async def test_list_parameters_out_of_range_are_422(web) -> None:
    _, client = web
    bad = (
        f"offset={2**64}",
        f"offset={2**63}",
        "offset=-1",
        "offset=1.5",
        "limit=0",
        "limit=1001",
        "limit=true",
    )
    for path in LISTS:
        for query in bad:
            reply = await client.get(f"/api/v1/{path}?{query}", headers=AUTH)
            assert reply.status_code == 422, (path, query, reply.text)
        assert (await client.get(f"/api/v1/{path}?offset=1000000000", headers=AUTH)).json() == []
    assert (await client.get("/api/v1/invitations?status=" + "x" * 500, headers=AUTH)).status_code == 422


BAD_REPLAYS = [
    {"ids": [False]},
    {"ids": [True, 2]},
    {"ids": ["1"]},
    {"ids": [1.5]},
    {"ids": [2**63]},
    {"ids": [0]},
    {"ids": []},  # would have meant "all"
    {"ids": list(range(1, 10_002))},
    {"connector": 5},
    {"connector": ""},
    {"conector": "crm"},
    [1, 2],
    b'{"connector": "\\ud800"}',  # a lone surrogate, echoed back in the 422
]


async def test_a_replay_with_bad_ids_is_422_and_replays_nothing(web) -> None:
    hub, client = web
    async with hub.store.session() as s:
        s.add(WriteBack(connector="crm", kind="person_summary", key="P1", record_id="P1", state="dead"))
    for body in BAD_REPLAYS:
        sent = {"content": body, "headers": {**AUTH, "content-type": "application/json"}}
        reply = await client.post(
            "/api/v1/dead-letters/replay",
            **(sent if isinstance(body, bytes) else {"headers": AUTH, "json": body}),
        )
        assert reply.status_code == 422, (body, reply.text)
    async with hub.store.session() as s:
        assert (await s.scalar(select(WriteBack.state))) == "dead"
    replayed = await client.post("/api/v1/dead-letters/replay", headers=AUTH, json={"ids": [1]})
    assert replayed.json() == {"requeued": 1}
