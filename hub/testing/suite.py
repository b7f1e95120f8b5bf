"""The shared connector suite: what every connector must do, checked against its emulator over real HTTP.

Subclass ``ConnectorSuite`` in a test module and provide a ``harness`` fixture returning a
``ConnectorHarness``. Each test builds a real hub (SQLite, in-memory channel) around the connector, so the
suite checks the connector *in* the hub: events deduplicated, write-backs idempotent, retries honouring
Retry-After, dead letters after the configured attempts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hub.app import Hub
from hub.errors import AuthError, BadInput
from hub.store.tables import Invitation, WriteBack
from hub.testing.harness import CONNECTOR, ConnectorHarness, build_hub
from hub.testing.memory import MemoryChannel


async def _answer(hub: Hub, harness: ConnectorHarness, rating: int = 9) -> str:
    """Webhook -> event -> invitation -> sent (in memory) -> answered; returns the response id."""
    reply = await hub.connectors[CONNECTOR].parse_webhook(harness.closed_case_webhook())
    assert reply.events, "the closed-case webhook produced no event"
    await hub.engine.receive(CONNECTOR, reply.events, source="webhook")
    await hub.engine.process_pending()
    await hub.engine.dispatch_due()
    async with hub.store.session() as s:
        invitation = await s.scalar(select(Invitation).order_by(Invitation.id.desc()).limit(1))
    assert invitation is not None and invitation.status == "sent", (
        f"the person was not surveyed: {invitation.reason if invitation else 'no invitation'}"
    )
    response = await hub.engine.record_answer(invitation.id, rating, comment="suite comment ✓")
    return response.id


async def _states(hub: Hub) -> list[tuple[str, str, int]]:
    async with hub.store.session() as s:
        rows = await s.scalars(select(WriteBack).order_by(WriteBack.id))
        return [(row.kind, row.state, row.attempts) for row in rows]


class ConnectorSuite:
    """Inherit, provide the ``harness`` fixture, and the connector gets the standard tests."""

    @pytest.fixture
    async def hub(self, harness: ConnectorHarness, tmp_path: Path) -> AsyncIterator[Hub]:
        MemoryChannel.sent.clear()
        hub = await build_hub(harness, tmp_path)
        yield hub
        await hub.close()

    @pytest.mark.asyncio
    async def test_check_accepts_good_credentials(self, hub: Hub) -> None:
        results = await hub.connectors[CONNECTOR].check()
        assert results, "check() must report what it checked"
        assert all(r.ok for r in results), [r for r in results if not r.ok]

    @pytest.mark.asyncio
    async def test_check_refuses_bad_credentials(self, harness: ConnectorHarness, tmp_path: Path) -> None:
        hub = await build_hub(harness, tmp_path, settings=harness.bad_settings())
        try:
            try:
                results = await hub.connectors[CONNECTOR].check()
            except AuthError:
                return
            assert any(not r.ok for r in results), "bad credentials must fail the check"
        finally:
            await hub.close()

    @pytest.mark.asyncio
    async def test_webhook_signature_accepted_and_refused(self, hub: Hub, harness: ConnectorHarness) -> None:
        connector = hub.connectors[CONNECTOR]
        request = harness.closed_case_webhook()
        reply = await connector.parse_webhook(request)
        assert [e.event_type for e in reply.events] == ["case.closed"]
        assert 200 <= reply.status_code < 300
        with pytest.raises(BadInput) as refused:
            await connector.parse_webhook(harness.tamper(request))
        assert refused.value.status_code == 401

    @pytest.mark.asyncio
    async def test_duplicate_event_ignored(self, hub: Hub, harness: ConnectorHarness) -> None:
        request = harness.closed_case_webhook()
        connector = hub.connectors[CONNECTOR]
        first = await connector.parse_webhook(request)
        again = await connector.parse_webhook(request)
        assert [e.event_id for e in first.events] == [e.event_id for e in again.events]
        assert await hub.engine.receive(CONNECTOR, first.events, source="webhook") == [True]
        assert await hub.engine.receive(CONNECTOR, again.events, source="webhook") == [False]
        await hub.engine.process_pending()
        async with hub.store.session() as s:
            assert len(list(await s.scalars(select(Invitation)))) == 1

    @pytest.mark.asyncio
    async def test_write_back_idempotent_on_retry(self, hub: Hub, harness: ConnectorHarness) -> None:
        response_id = await _answer(hub, harness)
        assert (await hub.sync.run(CONNECTOR)).written == 3, await _states(hub)
        assert harness.timeline_entries(response_id) == 1
        # everything again, as after a crash between the write and its record: still one of each
        assert await hub.sync.requeue_all(CONNECTOR) == 3
        assert (await hub.sync.run(CONNECTOR)).written == 3
        assert harness.timeline_entries(response_id) == 1

    @pytest.mark.asyncio
    async def test_transient_error_retried_honouring_retry_after(
        self, hub: Hub, harness: ConnectorHarness
    ) -> None:
        await _answer(hub, harness)
        harness.fail_writes(1000, 429, retry_after=120)
        stats = await hub.sync.run(CONNECTOR)
        assert stats.written == 0 and stats.error is not None
        async with hub.store.session() as s:
            rows = list(await s.scalars(select(WriteBack)))
        assert rows and all(r.state == "queued" for r in rows)
        earliest = min(r.next_attempt_at for r in rows)
        assert earliest >= hub.now() + timedelta(seconds=100), "Retry-After was not honoured"
        assert await hub.sync.pending(CONNECTOR) == 0
        harness.fail_writes(0, 200)
        later = earliest + timedelta(seconds=1)
        hub.now = lambda: later
        assert (await hub.sync.run(CONNECTOR)).written == 3

    @pytest.mark.asyncio
    async def test_dead_letter_after_max_attempts(self, hub: Hub, harness: ConnectorHarness) -> None:
        await _answer(hub, harness)
        harness.fail_writes(10_000, 503)
        attempts = hub.config.sync.max_attempts
        for _ in range(attempts * 3):  # a run stops at its first failing batch; one kind per batch
            await hub.sync.run(CONNECTOR)
        states: list[Any] = await _states(hub)
        assert states and all(state == "dead" and tries == attempts for _, state, tries in states), states
        harness.fail_writes(0, 200)
        assert await hub.sync.replay(CONNECTOR) == len(states)
        assert (await hub.sync.run(CONNECTOR)).written == len(states)
