"""Rejected inbound requests are kept for inspection as a bounded sample, so forged posts cannot fill the disk:
the beginning of each body with its size, the first few per sender and minute, and retention deletes them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from alembic import command
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text

from hub.scheduler import Scheduler
from hub.store import Store
from hub.store.db import alembic_config
from hub.store.tables import RejectedWebhook, utcnow
from hub.web import create_app
from hub.web.inbound import KEPT_BODY_BYTES, KEPT_PER_MINUTE
from tests.helpers import asgi_client, webhook


@pytest.fixture
async def web(make_hub):
    hub = await make_hub()
    app = create_app(hub, scheduler=False)
    async with asgi_client(app) as client:
        yield hub, client, app


async def kept(hub) -> list[RejectedWebhook]:
    async with hub.store.session() as s:
        return list(await s.scalars(select(RejectedWebhook).order_by(RejectedWebhook.id)))


def rejected_count(target: str) -> float:
    return REGISTRY.get_sample_value("cxhub_webhooks_total", {"target": target, "outcome": "rejected"}) or 0.0


async def test_a_large_forged_body_is_kept_cut_with_its_size(web) -> None:
    hub, client, _ = web
    body = b'{"id": "C1"' + b" " * 500_000 + b"}"
    reply = await client.post("/hooks/crm", content=body, headers={"x-fake-signature": "forged"})
    assert reply.status_code == 401
    [row] = await kept(hub)
    assert (row.body, row.body_size) == (body[:KEPT_BODY_BYTES], len(body))
    assert len(row.body) < len(body)
    listed = await client.get(
        "/api/v1/rejected-webhooks", headers={"Authorization": "Bearer api-token-for-tests-42"}
    )
    [shown] = listed.json()
    assert (shown["body_size"], len(shown["body"])) == (len(body), KEPT_BODY_BYTES)


async def test_a_small_rejected_body_is_kept_whole(web) -> None:
    hub, client, _ = web
    body, _ = webhook("C1")
    await client.post("/hooks/crm", content=body, headers={"x-fake-signature": "forged"})
    [row] = await kept(hub)
    assert (row.body, row.body_size) == (body, len(body))


async def test_a_flood_of_forged_posts_keeps_a_sample_and_counts_them_all(web) -> None:
    hub, client, app = web
    before = rejected_count("crm")
    body = b"x" * 200_000
    replies = [
        await client.post("/hooks/crm", content=body, headers={"x-fake-signature": "forged"})
        for _ in range(30)
    ]
    assert {r.status_code for r in replies} == {401}
    assert len(await kept(hub)) == KEPT_PER_MINUTE
    assert rejected_count("crm") - before == 30
    # another sender's rejected posts are still kept: one noisy address does not hide the others
    other = httpx.ASGITransport(app=app, client=("192.0.2.7", 4711))
    async with httpx.AsyncClient(transport=other, base_url="http://127.0.0.1:8000") as second:
        assert (await second.post("/hooks/crm", content=b"{}")).status_code == 401
    assert len(await kept(hub)) == KEPT_PER_MINUTE + 1
    # and another target's own sample
    assert (await client.post("/inbound/mail", content=b"not json")).status_code == 400
    assert [r.target for r in await kept(hub)][-1] == "mail"


async def test_retention_deletes_rejected_requests_past_the_period(web) -> None:
    hub, client, _ = web
    await client.post("/hooks/crm", content=b"old", headers={"x-fake-signature": "forged"})
    await client.post("/hooks/crm", content=b"new", headers={"x-fake-signature": "forged"})
    async with hub.store.session() as s:
        old = await s.scalar(select(RejectedWebhook).where(RejectedWebhook.body == b"old"))
        old.received_at = utcnow() - timedelta(days=hub.config.hub.rejected_retention_days + 1)
    await Scheduler(hub)._retention()
    assert [r.body for r in await kept(hub)] == [b"new"]
    async with hub.store.session() as s:
        assert await s.scalar(select(func.count()).select_from(RejectedWebhook)) == 1


async def test_retention_keeps_only_the_newest_rejected_requests_of_each_target(web) -> None:
    """Forged requests from many addresses each pass the per-minute sample; what stays is bounded anyway."""
    hub, _, _ = web
    hub.config.hub.rejected_keep_per_target = 3
    async with hub.store.session() as s:
        for number in range(5):
            for target in ("crm", "mail"):
                s.add(
                    RejectedWebhook(
                        target=target,
                        status_code=401,
                        reason="bad signature",
                        headers={},
                        body=f"{number}".encode(),
                    )
                )
    await Scheduler(hub)._retention()
    async with hub.store.session() as s:
        rows = list(await s.scalars(select(RejectedWebhook).order_by(RejectedWebhook.id)))
    assert [(r.target, r.body) for r in rows] == [
        (target, f"{number}".encode()) for number in (2, 3, 4) for target in ("crm", "mail")
    ]


async def test_the_upgrade_gives_requests_kept_before_it_their_size(empty_database_url) -> None:
    store = Store(empty_database_url)
    await asyncio.to_thread(command.upgrade, alembic_config(empty_database_url), "0003")
    async with store.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO rejected_webhooks (target, received_at, status_code, reason, headers, body)"
                " VALUES ('crm', :t, 401, 'bad signature', '{}', :b)"
            ),
            {
                "t": datetime(2026, 1, 1, tzinfo=UTC) if not store.is_sqlite else "2026-01-01 00:00:00",
                "b": b"x" * 1234,
            },
        )
    await store.upgrade()
    async with store.session() as s:
        row = await s.scalar(select(RejectedWebhook))
    assert (row.body_size, len(row.body)) == (1234, 1234)
    await store.dispose()
