"""The shared channel suite: what every channel (email, SMS, chat) must do, checked against its emulator.

Subclass ``ChannelSuite`` and provide a ``harness`` fixture returning a ``ChannelHarness``. Each test builds
a real hub (SQLite) whose campaign sends through the channel under test, with the in-memory CRM
(``hub.testing.memory.MemoryConnector``) as the other end: invitations delivered with a survey link that
opens the right survey, a person the channel cannot reach moved on to the next channel, a provider outage
retried honouring Retry-After, and replies through the channel (SMS "9 thanks") recorded as answers.
A channel without inbound replies declares ``Capabilities(inbound_replies=False)``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest
from sqlalchemy import select

from hub.app import Hub
from hub.config import parse_config
from hub.errors import AuthError, BadInput
from hub.models import CaseEvent, PersonRecord, WebhookRequest
from hub.store.tables import Invitation
from hub.testing.memory import MemoryChannel, MemoryConnector, memory_channel_plugin
from hub.testing.runner import SuiteBase, needs

#: the channel instance under test, and the in-memory CRM instance, in the suite's hub
CHANNEL, CRM = "channel", "crm"


class ChannelHarness(Protocol):
    """A channel plus its emulator, as the shared channel suite drives them.

    Optional attributes, as for a connector harness: ``plugin_modules`` and ``capabilities``
    (``inbound_replies``; ``inbound_reply`` and ``tamper`` may be left out without it).
    """

    plugin: str

    def settings(self) -> dict[str, Any]:
        """Settings (as in the config file) that reach the emulator with valid credentials."""
        ...

    def bad_settings(self) -> dict[str, Any]:
        """The same settings with credentials the emulator refuses."""
        ...

    def environment(self) -> dict[str, str]:
        """Values of the ``env:NAME`` secrets the settings use."""
        ...

    def address(self) -> dict[str, str]:
        """How the channel reaches a person: ``{"email": ...}`` or ``{"phone": "+45..."}`` (E.164)."""
        ...

    def survey_link(self, address: str) -> str | None:
        """The survey link in the newest message the emulator delivered to ``address``; None if none."""
        ...

    def fail_sends(self, count: int, status: int, retry_after: float | None = None) -> None:
        """Make the emulator answer the next ``count`` sends with ``status`` (and Retry-After)."""
        ...

    def inbound_reply(self, sender: str, text: str) -> WebhookRequest:
        """The request the provider would make for a reply ``text`` from ``sender``, correctly signed.

        Needed with ``Capabilities.inbound_replies``."""
        ...

    def tamper(self, request: WebhookRequest) -> WebhookRequest:
        """The same inbound request with its body changed after signing."""
        ...


def channel_suite_config(
    harness: Any, workdir: Path, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A hub on SQLite: the in-memory CRM, the channel under test first and the memory channel as fallback."""
    return {
        "hub": {
            "database_url": f"sqlite+aiosqlite:///{workdir / 'suite.db'}",
            "public_url": "http://127.0.0.1:9",
            "plugin_modules": list(getattr(harness, "plugin_modules", ())),
        },
        "policy": {"min_days_between_surveys": 0},
        "sync": {"max_attempts": 3, "backoff_base_seconds": 0, "backoff_max_seconds": 0},
        "connectors": {CRM: {"plugin": "memory", "poll_interval_seconds": 0}},
        "channels": {
            CHANNEL: {"plugin": harness.plugin, **(settings if settings is not None else harness.settings())},
            "memory": {"plugin": "memory"},
        },
        "surveys": {"nps": {"kind": "nps"}},
        "campaigns": {
            "suite": {
                "trigger": {"connector": CRM, "event": "case.closed"},
                "survey": "nps",
                "channels": [CHANNEL, "memory"],
            }
        },
    }


async def build_channel_hub(
    harness: ChannelHarness, workdir: Path, settings: dict[str, Any] | None = None
) -> Hub:
    os.environ.update(harness.environment())
    config = parse_config(channel_suite_config(harness, workdir, settings), workdir / "suite.toml")
    return await Hub.open(config, plugin_objects=[memory_channel_plugin()])


async def _invite(hub: Hub, person: dict[str, str]) -> Invitation:
    """A case of ``person`` closes in the CRM; the hub sends the survey. Returns the invitation after."""
    number = len(MemoryConnector.people) + 1
    crm_id = f"P{number}"
    MemoryConnector.people[crm_id] = PersonRecord(crm_id=crm_id, first_name="Ada", language="en", **person)
    event = CaseEvent(
        event_id=f"E{number}",
        event_type="case.closed",
        occurred_at=datetime.now(UTC),
        record_type="case",
        record_id=f"C{number}",
        person_id=crm_id,
    )
    assert await hub.engine.receive(CRM, [event], source="webhook") == [True]
    await hub.engine.process_pending()
    await hub.engine.dispatch_due()
    async with hub.store.session() as s:
        invitation = await s.scalar(select(Invitation).order_by(Invitation.id.desc()).limit(1))
    assert invitation is not None, "no invitation was made"
    return invitation


def _address(harness: ChannelHarness) -> str:
    address = harness.address()
    assert len(address) == 1 and set(address) <= {"email", "phone"}, f"address() gave {address}"
    return next(iter(address.values()))


class ChannelSuite(SuiteBase):
    """Inherit, provide the ``harness`` fixture, and the channel gets the standard tests."""

    @asynccontextmanager
    async def suite_hub(self, harness: ChannelHarness, workdir: Path) -> AsyncIterator[Hub]:
        MemoryChannel.sent.clear()
        MemoryConnector.people.clear()
        MemoryConnector.written.clear()
        MemoryConnector.opt_outs.clear()
        hub = await build_channel_hub(harness, workdir)
        try:
            yield hub
        finally:
            await hub.close()

    async def test_check_accepts_good_credentials(self, hub: Hub) -> None:
        results = await hub.channels[CHANNEL].check()
        assert results, "check() must report what it checked"
        assert all(r.ok for r in results), [r for r in results if not r.ok]

    async def test_check_refuses_bad_credentials(self, harness: ChannelHarness, tmp_path: Path) -> None:
        hub = await build_channel_hub(harness, tmp_path, settings=harness.bad_settings())
        try:
            try:
                results = await hub.channels[CHANNEL].check()
            except AuthError:
                return
            assert any(not r.ok for r in results), "bad credentials must fail the check"
        finally:
            await hub.close()

    async def test_survey_delivered_with_a_link_that_opens_it(
        self, hub: Hub, harness: ChannelHarness
    ) -> None:
        invitation = await _invite(hub, harness.address())
        assert (invitation.status, invitation.channel) == ("sent", CHANNEL), invitation.reason
        assert not MemoryChannel.sent, "the fallback channel was used"
        link = harness.survey_link(_address(harness))
        assert link, "the emulator received no survey link"
        token = link.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        state, page = await hub.engine.page_for_token(token)
        assert page is not None, f"the delivered link does not open the survey ({state})"

    async def test_person_it_cannot_reach_goes_to_the_next_channel(
        self, hub: Hub, harness: ChannelHarness
    ) -> None:
        kind = next(iter(harness.address()))
        other = {"phone": "+4520304050"} if kind == "email" else {"email": "ada@example.com"}
        invitation = await _invite(hub, other)
        assert (invitation.status, invitation.channel) == ("sent", "memory"), invitation.reason
        assert len(MemoryChannel.sent) == 1

    async def test_provider_outage_retried_honouring_retry_after(
        self, hub: Hub, harness: ChannelHarness
    ) -> None:
        harness.fail_sends(1000, 429, retry_after=120)
        invitation = await _invite(hub, harness.address())
        assert invitation.status == "scheduled", f"{invitation.status}: {invitation.reason}"
        assert not MemoryChannel.sent, "an outage must not move the survey to the next channel"
        send_after = invitation.send_after
        assert send_after is not None and send_after >= hub.now() + timedelta(seconds=100), (
            "Retry-After was not honoured"
        )
        harness.fail_sends(0, 200)
        later = send_after + timedelta(seconds=1)
        hub.now = lambda: later
        await hub.engine.dispatch_due()
        async with hub.store.session() as s:
            again = await s.get(Invitation, invitation.id)
        assert again is not None and (again.status, again.channel) == ("sent", CHANNEL), again

    @needs("inbound_replies", "people cannot answer through this channel")
    async def test_reply_recorded_as_the_answer(self, hub: Hub, harness: ChannelHarness) -> None:
        invitation = await _invite(hub, harness.address())
        assert invitation.status == "sent", invitation.reason
        request = harness.inbound_reply(_address(harness), "9 quick and friendly")
        reply = await hub.channels[CHANNEL].parse_inbound(request)
        assert 200 <= reply.status_code < 300
        assert [a.text for a in reply.answers] == ["9 quick and friendly"]
        response = await hub.engine.record_inbound(CHANNEL, reply.answers[0])
        assert response is not None, "the reply did not match the invitation sent to its sender"
        assert (response.invitation_id, response.rating, response.comment) == (
            invitation.id,
            9,
            "quick and friendly",
        )
        with pytest.raises(BadInput) as refused:
            await hub.channels[CHANNEL].parse_inbound(harness.tamper(request))
        assert refused.value.status_code == 401
