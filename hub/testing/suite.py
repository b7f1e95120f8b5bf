"""The shared connector suite: what every connector must do, checked against its emulator over real HTTP.

Subclass ``ConnectorSuite`` in a test module and provide a ``harness`` fixture returning a
``ConnectorHarness``. Each test builds a real hub (SQLite, in-memory channel) around the connector, so the
suite checks the connector *in* the hub: events deduplicated, write-backs idempotent, retries honouring
Retry-After, dead letters after the configured attempts. Tests that need a capability the harness does not
declare (signed webhooks, polling, timelines) are skipped as not applicable, with the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hub.app import Hub
from hub.errors import AuthError, BadInput
from hub.models import CaseEvent
from hub.store.tables import Invitation, WriteBack
from hub.testing.harness import CONNECTOR, ConnectorHarness, build_hub, capabilities_of
from hub.testing.memory import MemoryChannel
from hub.testing.runner import SuiteBase, needs


async def _start_cursor(hub: Hub) -> str | None:
    """Where polling stands now: every page from the connector's own starting point read."""
    cursor: str | None = None
    for _ in range(100):
        page = await hub.connectors[CONNECTOR].fetch_events(cursor)
        cursor = page.next_cursor or cursor
        if not page.has_more:
            break
    return cursor


async def _polled(hub: Hub, cursor: str | None, record_id: str) -> list[CaseEvent]:
    """The events of ``record_id`` that polling from ``cursor`` finds (every page)."""
    found: list[CaseEvent] = []
    for _ in range(100):
        page = await hub.connectors[CONNECTOR].fetch_events(cursor)
        found += [e for e in page.events if e.record_id == record_id]
        cursor = page.next_cursor or cursor
        if not page.has_more:
            break
    return found


async def closed_case_events(hub: Hub, harness: ConnectorHarness) -> list[CaseEvent]:
    """Close a case in the emulator and read its events the way the CRM delivers them: the signed webhook,
    or for a poll-only CRM ``fetch_events`` from where polling stood before the case was closed."""
    if capabilities_of(harness).webhooks:
        reply = await hub.connectors[CONNECTOR].parse_webhook(harness.closed_case_webhook())
        return reply.events
    cursor = await _start_cursor(hub)
    record_id = harness.close_case()  # type: ignore[attr-defined]
    return await _polled(hub, cursor, record_id)


async def _answer(hub: Hub, harness: ConnectorHarness, rating: int = 9) -> str:
    """Case closed -> event -> invitation -> sent (in memory) -> answered; returns the response id."""
    events = await closed_case_events(hub, harness)
    assert events, "closing a case produced no event"
    await hub.engine.receive(CONNECTOR, events, source="webhook")
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


def _kinds(harness: ConnectorHarness) -> int:
    """Write-back items per answer: the person's summary, the case's feedback, and a timeline entry."""
    return 3 if capabilities_of(harness).timeline else 2


class ConnectorSuite(SuiteBase):
    """Inherit, provide the ``harness`` fixture, and the connector gets the standard tests."""

    @asynccontextmanager
    async def suite_hub(self, harness: ConnectorHarness, workdir: Path) -> AsyncIterator[Hub]:
        MemoryChannel.sent.clear()
        hub = await build_hub(harness, workdir)
        try:
            yield hub
        finally:
            await hub.close()

    async def test_check_accepts_good_credentials(self, hub: Hub) -> None:
        results = await hub.connectors[CONNECTOR].check()
        assert results, "check() must report what it checked"
        assert all(r.ok for r in results), [r for r in results if not r.ok]

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

    @needs("webhooks", "the CRM sends no signed webhooks")
    async def test_webhook_signature_accepted_and_refused(self, hub: Hub, harness: ConnectorHarness) -> None:
        connector = hub.connectors[CONNECTOR]
        request = harness.closed_case_webhook()
        reply = await connector.parse_webhook(request)
        assert [e.event_type for e in reply.events] == ["case.closed"]
        assert 200 <= reply.status_code < 300
        with pytest.raises(BadInput) as refused:
            await connector.parse_webhook(harness.tamper(request))
        assert refused.value.status_code == 401

    @needs("polling", "the harness offers no close_case() to poll for")
    async def test_polling_finds_a_closed_case(self, hub: Hub, harness: ConnectorHarness) -> None:
        cursor = await _start_cursor(hub)
        record_id = harness.close_case()  # type: ignore[attr-defined]
        events = await _polled(hub, cursor, record_id)
        assert [e.event_type for e in events][:1] == ["case.closed"], events
        assert events[0].person_id, "the event must name the person to survey"
        again = await _polled(hub, cursor, record_id)
        assert [e.event_id for e in again] == [e.event_id for e in events], "event ids must be stable"

    async def test_duplicate_event_ignored(self, hub: Hub, harness: ConnectorHarness) -> None:
        connector = hub.connectors[CONNECTOR]
        if capabilities_of(harness).webhooks:
            request = harness.closed_case_webhook()
            first = (await connector.parse_webhook(request)).events
            again = (await connector.parse_webhook(request)).events
        else:
            cursor = await _start_cursor(hub)
            record_id = harness.close_case()  # type: ignore[attr-defined]
            first = await _polled(hub, cursor, record_id)
            again = await _polled(hub, cursor, record_id)
        assert first, "closing a case produced no event"
        assert [e.event_id for e in first] == [e.event_id for e in again]
        assert await hub.engine.receive(CONNECTOR, first, source="webhook") == [True] * len(first)
        assert await hub.engine.receive(CONNECTOR, again, source="poll") == [False] * len(again)
        await hub.engine.process_pending()
        async with hub.store.session() as s:
            assert len(list(await s.scalars(select(Invitation)))) == 1

    async def test_write_back_idempotent_on_retry(self, hub: Hub, harness: ConnectorHarness) -> None:
        await _answer(hub, harness)
        kinds = _kinds(harness)
        assert (await hub.sync.run(CONNECTOR)).written == kinds, await _states(hub)
        # everything again, as after a crash between the write and its record: still one of each
        assert await hub.sync.requeue_all(CONNECTOR) == kinds
        assert (await hub.sync.run(CONNECTOR)).written == kinds

    @needs("timeline", "the CRM keeps no timeline records")
    async def test_timeline_entry_written_once(self, hub: Hub, harness: ConnectorHarness) -> None:
        response_id = await _answer(hub, harness)
        assert (await hub.sync.run(CONNECTOR)).written == 3, await _states(hub)
        assert harness.timeline_entries(response_id) == 1
        assert await hub.sync.requeue_all(CONNECTOR) == 3
        assert (await hub.sync.run(CONNECTOR)).written == 3
        assert harness.timeline_entries(response_id) == 1, "a retried write-back created a second entry"

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
        assert (await hub.sync.run(CONNECTOR)).written == _kinds(harness)

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
