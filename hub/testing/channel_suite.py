"""The shared channel suite: what every channel (email, SMS, chat) must do, checked against its emulator.

Subclass ``ChannelSuite`` and provide a ``harness`` fixture returning a ``ChannelHarness``. Each test builds
a real hub (SQLite) whose campaign sends through the channel under test, with the in-memory CRM
(``hub.testing.memory.MemoryConnector``) as the other end: invitations delivered with a survey link that
opens the right survey, a person the channel cannot reach moved on to the next channel, a provider outage
retried honouring Retry-After, and replies through the channel (SMS "9 thanks") recorded as answers.
A channel without inbound replies declares ``Capabilities(inbound_replies=False)``.

A two-way channel (``inbound_replies``) also holds a conversation in ``answer_by = "reply"`` mode: a texted
score gets the follow-up question and the next reply is its reason, on the same response, written to the
CRM once; a reply that is no score is asked again once; an opt-out keyword opts the person out of every
channel; a reply from nobody the hub surveyed is kept. A channel whose provider reports on delivery
(``Capabilities(delivery_statuses=True)``) must have those reports applied whichever comes first, the report
or the send call's return, settle on the most final one, and move a survey the provider could not deliver
for good (a landline) to the campaign's next channel.
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
from hub.models import (
    CaseEvent,
    Delivery,
    OutboundMessage,
    PersonRecord,
    ResponseRecord,
    SurveyKind,
    WebhookRequest,
)
from hub.store.tables import InboundMessage, Invitation, Person, Response, WriteBack
from hub.testing.memory import MemoryChannel, MemoryConnector, memory_channel_plugin
from hub.testing.runner import SuiteBase, needs
from hub.texts import ask_again, followup_key, reply_instructions, text

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

    def messages_to(self, address: str) -> list[str]:
        """The texts the emulator delivered to ``address``, oldest first (the survey, then each reply the hub
        texted back). Needed with ``Capabilities.inbound_replies``."""
        ...

    def status_callback(self, message_id: str, status: str, error_code: str | None = None) -> WebhookRequest:
        """The provider's signed status callback on ``message_id`` (``status`` in the provider's words, e.g.
        sent, delivered, undelivered; ``error_code`` as the provider gives it, e.g. a landline's).

        Needed with ``Capabilities.delivery_statuses``."""
        ...

    def last_message_id(self, address: str) -> str | None:
        """The provider's id of the newest message delivered to ``address``; None if none.

        Needed with ``Capabilities.delivery_statuses``."""
        ...


#: how a provider answers a forged request: 401 (unauthenticated) or 403 (Twilio's convention)
REFUSED = (401, 403)
#: a landline (Twilio 30006 "landline or unreachable carrier"): delivery can never succeed
LANDLINE_ERROR = "30006"


def channel_suite_config(
    harness: Any, workdir: Path, settings: dict[str, Any] | None = None, answer_by: str = "link"
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
                "answer_by": answer_by,
            }
        },
    }


async def build_channel_hub(
    harness: ChannelHarness, workdir: Path, settings: dict[str, Any] | None = None, answer_by: str = "link"
) -> Hub:
    os.environ.update(harness.environment())
    data = channel_suite_config(harness, workdir, settings, answer_by)
    config = parse_config(data, workdir / "suite.toml")
    return await Hub.open(config, plugin_objects=[memory_channel_plugin()])


async def _invite(hub: Hub, person: dict[str, str]) -> Invitation:
    """A case of ``person`` closes in the CRM; the hub sends the survey. Returns the invitation after."""
    await _close_case(hub, person)
    return await _latest(hub)


async def _close_case(hub: Hub, person: dict[str, str]) -> None:
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


async def _latest(hub: Hub) -> Invitation:
    async with hub.store.session() as s:
        invitation = await s.scalar(select(Invitation).order_by(Invitation.id.desc()).limit(1))
    assert invitation is not None, "no invitation was made"
    return invitation


async def _reload(hub: Hub, invitation_id: int) -> Invitation:
    async with hub.store.session() as s:
        invitation = await s.get(Invitation, invitation_id)
    assert invitation is not None
    return invitation


async def _deliver(hub: Hub, request: WebhookRequest) -> list[ResponseRecord | None]:
    """What ``POST /inbound/<channel>`` does with a request: the channel reads it, the hub handles it."""
    reply = await hub.channels[CHANNEL].parse_inbound(request)
    assert 200 <= reply.status_code < 300, reply
    return await hub.engine.receive_inbound(CHANNEL, reply)


async def _kept(hub: Hub, outcome: str) -> list[InboundMessage]:
    async with hub.store.session() as s:
        return list(await s.scalars(select(InboundMessage).where(InboundMessage.outcome == outcome)))


def _address(harness: ChannelHarness) -> str:
    address = harness.address()
    assert len(address) == 1 and set(address) <= {"email", "phone"}, f"address() gave {address}"
    return next(iter(address.values()))


class ChannelSuite(SuiteBase):
    """Inherit, provide the ``harness`` fixture, and the channel gets the standard tests."""

    @asynccontextmanager
    async def suite_hub(
        self, harness: ChannelHarness, workdir: Path, answer_by: str = "link"
    ) -> AsyncIterator[Hub]:
        MemoryChannel.sent.clear()
        MemoryConnector.people.clear()
        MemoryConnector.written.clear()
        MemoryConnector.opt_outs.clear()
        hub = await build_channel_hub(harness, workdir, answer_by=answer_by)
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
        with pytest.raises((BadInput, AuthError)) as refused:
            await hub.channels[CHANNEL].parse_inbound(harness.tamper(request))
        status = refused.value.status_code if isinstance(refused.value, BadInput) else 401
        assert status in REFUSED, f"a tampered request must be refused with 401 or 403, not {status}"

    @needs("inbound_replies", "people cannot answer through this channel")
    async def test_two_way_conversation_ends_as_one_response_written_once(
        self, harness: ChannelHarness, tmp_path: Path
    ) -> None:
        address = _address(harness)
        async with self.suite_hub(harness, tmp_path, answer_by="reply") as hub:
            invitation = await _invite(hub, harness.address())
            assert invitation.status == "sent", invitation.reason
            survey = harness.messages_to(address)
            assert survey, "the survey was not delivered"
            instructions = reply_instructions("en", SurveyKind.NPS)
            assert instructions in survey[-1], (
                f"the survey does not say how to answer by reply: {survey[-1]!r}"
            )
            [scored] = await _deliver(hub, harness.inbound_reply(address, " 9!"))
            assert scored is not None and (scored.rating, scored.comment) == (9, None)
            followup = text("en", followup_key(SurveyKind.NPS, scored.category))
            assert followup in harness.messages_to(address)[-1], "the follow-up question was not texted"
            prompt = hub.config.sync.prompt_seconds
            assert (await hub.sync.run(CRM, quiet_seconds=prompt)).written == 0, "the score went alone"
            [reason] = await _deliver(hub, harness.inbound_reply(address, "Quick and friendly"))
            assert reason is not None and (reason.id, reason.rating, reason.comment) == (
                scored.id,
                9,
                "Quick and friendly",
            )
            later = hub.now() + timedelta(seconds=prompt + 1)
            hub.now = lambda: later
            await hub.sync.run(CRM, quiet_seconds=prompt)
            keys = [item.key for item in MemoryConnector.written]
            assert keys and len(keys) == len(set(keys)), f"written more than once: {keys}"
            timeline = [i for i in MemoryConnector.written if i.payload.kind == "timeline_entry"]
            assert [getattr(i.payload, "comment", None) for i in timeline] == ["Quick and friendly"]

    @needs("inbound_replies", "people cannot answer through this channel")
    async def test_a_reply_that_is_no_score_is_asked_again_once(
        self, harness: ChannelHarness, tmp_path: Path
    ) -> None:
        address = _address(harness)
        async with self.suite_hub(harness, tmp_path, answer_by="reply") as hub:
            invitation = await _invite(hub, harness.address())
            assert invitation.status == "sent", invitation.reason
            delivered = len(harness.messages_to(address))
            assert await _deliver(hub, harness.inbound_reply(address, "ni")) == [None]
            texts = harness.messages_to(address)
            asked = texts[delivered:]
            assert len(asked) == 1 and ask_again("en", SurveyKind.NPS) in asked[0], texts
            assert await _deliver(hub, harness.inbound_reply(address, "thanks")) == [None]
            assert len(harness.messages_to(address)) == delivered + 1, "asked again twice"
            assert [m.text for m in await _kept(hub, "not_a_score")] == ["thanks"]
            [answered] = await _deliver(hub, harness.inbound_reply(address, "10."))
            assert answered is not None and answered.rating == 10

    @needs("inbound_replies", "people cannot answer through this channel")
    async def test_an_opt_out_keyword_opts_the_person_out_of_every_channel(
        self, harness: ChannelHarness, tmp_path: Path
    ) -> None:
        address = _address(harness)
        person = {**harness.address(), "email": "ada@example.com", "phone": "+4520304050"}
        person.update(harness.address())
        async with self.suite_hub(harness, tmp_path, answer_by="reply") as hub:
            invitation = await _invite(hub, person)
            assert (invitation.status, invitation.channel) == ("sent", CHANNEL), invitation.reason
            assert await _deliver(hub, harness.inbound_reply(address, "Stopp.")) == [None]
            async with hub.store.session() as s:
                people = list(await s.scalars(select(Person)))
                queued = list(await s.scalars(select(WriteBack).where(WriteBack.kind == "person_opt_out")))
            assert [p.opted_out_at is not None for p in people] == [True], "STOPP did not opt the person out"
            assert [(q.connector, q.payload and q.payload["opted_out"]) for q in queued] == [(CRM, True)]
            hub.config.campaigns["suite"].channels = ["memory"]  # the next survey would go by email
            await _close_case(hub, person)
            later = await _latest(hub)
            assert later.id != invitation.id and later.status == "suppressed", later.status
            assert not MemoryChannel.sent, "a survey reached a person who texted STOPP"

    @needs("inbound_replies", "people cannot answer through this channel")
    async def test_a_reply_from_nobody_surveyed_is_kept(self, hub: Hub, harness: ChannelHarness) -> None:
        stranger = "stranger@example.com" if "email" in harness.address() else "+4571727374"
        assert await _deliver(hub, harness.inbound_reply(stranger, "10 great")) == [None]
        kept = await _kept(hub, "unmatched")
        assert [(m.channel, m.text) for m in kept] == [(CHANNEL, "10 great")]
        async with hub.store.session() as s:
            assert await s.scalar(select(Response)) is None, "a reply from nobody surveyed was guessed"

    @needs("delivery_statuses", "the provider does not report on delivery")
    async def test_a_status_report_before_the_send_returned_is_applied(
        self, hub: Hub, harness: ChannelHarness
    ) -> None:
        channel = hub.channels[CHANNEL]
        send = channel.send

        async def report_first(message: OutboundMessage) -> Delivery:
            delivery = await send(message)
            assert delivery.message_id, "a channel with delivery reports must return the message id"
            # the provider's callback races the send call's answer, and wins
            await _deliver(hub, harness.status_callback(delivery.message_id, "delivered"))
            return delivery

        channel.send = report_first  # type: ignore[method-assign]
        invitation = await _invite(hub, harness.address())
        assert invitation.status == "sent", invitation.reason
        assert invitation.delivery_status == "delivered", "the early report was lost"

    @needs("delivery_statuses", "the provider does not report on delivery")
    async def test_repeated_and_out_of_order_reports_settle_on_the_final_one(
        self, hub: Hub, harness: ChannelHarness
    ) -> None:
        invitation = await _invite(hub, harness.address())
        message_id = harness.last_message_id(_address(harness))
        assert message_id, "the emulator has no message id for the survey"
        for status in ("sent", "delivered", "sent", "delivered", "queued"):
            await _deliver(hub, harness.status_callback(message_id, status))
        assert (await _reload(hub, invitation.id)).delivery_status == "delivered"

    @needs("delivery_statuses", "the provider does not report on delivery")
    async def test_a_landline_moves_the_survey_to_the_next_channel(
        self, hub: Hub, harness: ChannelHarness
    ) -> None:
        person = {"email": "ada@example.com", **harness.address()}
        invitation = await _invite(hub, person)
        assert (invitation.status, invitation.channel) == ("sent", CHANNEL), invitation.reason
        message_id = harness.last_message_id(_address(harness))
        assert message_id
        await _deliver(hub, harness.status_callback(message_id, "undelivered", LANDLINE_ERROR))
        await hub.engine.dispatch_due()
        moved = await _reload(hub, invitation.id)
        assert (moved.status, moved.channel) == ("sent", "memory"), moved.reason
        assert [m.recipient.email for m in MemoryChannel.sent] == ["ada@example.com"]
        async with hub.store.session() as s:
            flagged = await s.scalar(select(Person.phone_rejected))
        assert flagged, "the landline was not flagged like a bounced address"
