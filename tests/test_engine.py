"""Events become invitations or suppressions; invitations go out through the right channel; answers are kept."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from hub.errors import BadInput
from hub.store.tables import Event, Invitation, Person, Response, WriteBack, utcnow
from tests.helpers import case_event, survey_flow, token_of


async def invitations(hub) -> list[Invitation]:
    async with hub.store.session() as s:
        return list(await s.scalars(select(Invitation).order_by(Invitation.id)))


async def test_duplicate_events_are_dropped(make_hub) -> None:
    hub = await make_hub()
    assert await hub.engine.receive("crm", [case_event("C1"), case_event("C1")], source="webhook") == [
        True,
        False,
    ]
    assert await hub.engine.receive("crm", [case_event("C1")], source="poll") == [False]
    await hub.engine.process_pending()
    assert len(await invitations(hub)) == 1


async def test_suppressions_keep_their_reason(make_hub) -> None:
    hub = await make_hub()
    await hub.engine.receive(
        "crm", [case_event("C1", "P2"), case_event("C2", "NOBODY"), case_event("C3", None)], source="webhook"
    )
    await hub.engine.process_pending()
    reasons = [(i.status, i.reason) for i in await invitations(hub)]
    assert reasons == [
        ("suppressed", "opted out in crm: no mailings"),
        ("suppressed", "no person on the case in crm"),
        ("suppressed", "no person on the case in crm"),
    ]


async def test_contact_frequency_applies_across_campaigns(make_hub, crm_state) -> None:
    hub = await make_hub(
        """
        [campaigns.second]
        trigger = { connector = "crm", event = "case.closed", filters = { queue = "vip" } }
        survey = "nps"
        channels = ["mail"]
        """
    )
    await hub.engine.receive("crm", [case_event("C1", queue="vip")], source="webhook")
    await hub.engine.process_pending()
    statuses = sorted((i.campaign, i.status) for i in await invitations(hub))
    assert statuses == [("case_closed", "scheduled"), ("second", "suppressed")]
    second = next(i for i in await invitations(hub) if i.campaign == "second")
    assert second.reason.startswith('surveyed 0 day(s) ago by campaign "case_closed"')


async def test_filters_must_all_match(make_hub) -> None:
    hub = await make_hub(
        """
        [campaigns.vip_only]
        trigger = { connector = "crm", event = "case.closed", filters = { queue = ["vip", "gold"], region = "EU" } }
        survey = "nps"
        channels = ["mail"]
        """
    )
    hub.config.campaigns["case_closed"].enabled = False
    await hub.engine.receive(
        "crm",
        [case_event("C1", queue="vip", region="US"), case_event("C2", "P3", queue="Gold", region="eu")],
        source="webhook",
    )
    await hub.engine.process_pending()
    assert [(i.campaign, i.event_pk) for i in await invitations(hub)] == [("vip_only", 2)]


async def test_when_every_channel_rejects_the_invitation_fails_with_their_reasons(
    make_hub, crm_state
) -> None:
    crm_state.people["P1"]["email"] = "ada@bounce.test"
    hub = await make_hub()
    await hub.engine.receive("crm", [case_event("C1")], source="webhook")
    await hub.engine.process_pending()
    await hub.engine.dispatch_due()
    [inv] = await invitations(hub)
    assert inv.status == "failed"
    assert inv.reason == "mail: address rejected for good"


async def test_a_hard_bounce_flags_the_address_until_the_crm_changes_it(make_hub, crm_state) -> None:
    crm_state.people["P1"]["email"] = "ada@bounce.test"
    hub = await make_hub()
    hub.config.policy.min_days_between_surveys = 0
    await hub.engine.receive("crm", [case_event("C1")], source="webhook")
    await hub.engine.process_pending()
    await hub.engine.dispatch_due()
    async with hub.store.session() as s:
        person = await s.scalar(select(Person))
    assert person.email_rejected is not None and "address rejected for good" in person.email_rejected
    sent_before = len(crm_state.outbox)
    # the next survey does not try the bounced address again
    await hub.engine.receive("crm", [case_event("C2")], source="webhook")
    await hub.engine.process_pending()
    await hub.engine.dispatch_due()
    assert (await invitations(hub))[-1].reason == "mail: no email address"
    # a new address in the CRM clears the flag and is used
    crm_state.people["P1"]["email"] = "ada@example.com"
    await hub.engine.receive("crm", [case_event("C3")], source="webhook")
    await hub.engine.process_pending()
    await hub.engine.dispatch_due()
    assert (await invitations(hub))[-1].status == "sent"
    assert len(crm_state.outbox) == sent_before + 1


async def test_fallback_channel_sends_when_the_first_rejects(make_hub, crm_state, fake_crm) -> None:
    crm_state.people["P1"]["email"] = "ada@bounce.test"
    hub = await make_hub()
    hub.config.campaigns["case_closed"].channels = ["mail", "backup"]
    hub.channels["backup"] = SmsLike()
    await hub.engine.receive("crm", [case_event("C1")], source="webhook")
    await hub.engine.process_pending()
    await hub.engine.dispatch_due()
    [inv] = await invitations(hub)
    assert (inv.status, inv.channel) == ("sent", "backup")


class SmsLike:
    """A channel that reaches anyone; stands in for SMS."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    async def send(self, message):
        from hub import Delivery

        self.sent.append(message)
        return Delivery(message_id="sms-1")


async def test_a_transient_channel_error_retries_later(make_hub, crm_state) -> None:
    from hub import TransientError

    class Down:
        async def send(self, message):
            raise TransientError("smtp 451", retry_after=600)

    hub = await make_hub()
    hub.channels["mail"] = Down()
    await hub.engine.receive("crm", [case_event("C1")], source="webhook")
    await hub.engine.process_pending()
    await hub.engine.dispatch_due()
    [inv] = await invitations(hub)
    assert inv.status == "scheduled"
    assert inv.attempts == 1
    assert inv.send_after >= hub.now() + timedelta(seconds=590)
    assert await hub.engine.dispatch_due() == 0


async def test_a_channel_that_cannot_be_reached_retries_later_instead_of_failing(make_hub, crm_state) -> None:
    """A provider's refused connection (raised raw by a partner's channel) is an outage, not a bad address:
    the invitation waits and is sent once the provider is back, instead of failing for good."""
    import httpx

    hub = await make_hub()
    mail = hub.channels["mail"]

    class Refused:
        async def send(self, message):
            raise httpx.ConnectError("[Errno 111] Connection refused")

    hub.channels["mail"] = Refused()
    await hub.engine.receive("crm", [case_event("C1")], source="webhook")
    await hub.engine.process_pending()
    await hub.engine.dispatch_due()
    [inv] = await invitations(hub)
    assert (inv.status, inv.sent_at) == ("scheduled", None)
    assert "Connection refused" in inv.reason

    hub.channels["mail"] = mail
    hub.now = lambda: utcnow() + timedelta(days=1)  # past the backoff
    await hub.engine.dispatch_due()
    [inv] = await invitations(hub)
    assert inv.status == "sent"


async def test_an_alert_channel_that_crashes_does_not_fail_the_answer(make_hub, crm_state) -> None:
    hub = await make_hub()
    token = await survey_flow(hub, crm_state, "C1", "P1")
    _, page = await hub.engine.page_for_token(token)

    class Broken:
        async def send(self, message):
            raise RuntimeError("a bug in the alert channel")

    hub.channels["mail"] = Broken()
    record = await hub.engine.record_answer(page.invitation_id, 2, comment="slow")  # a detractor: alerted
    assert record.rating == 2
    async with hub.store.session() as s:
        assert await s.scalar(select(func.count()).select_from(Response)) == 1


async def test_language_comes_from_the_crm_else_the_campaign(make_hub, crm_state) -> None:
    hub = await make_hub()
    hub.config.campaigns["case_closed"].default_language = "da"
    crm_state.people["P1"]["language"] = "pl-PL"  # no built-in Polish texts: the campaign's default
    await survey_flow(hub, crm_state)
    assert crm_state.outbox[-1]["language"] == "da"
    assert crm_state.outbox[-1]["question"].startswith("Hvor sandsynligt")


async def test_an_answer_is_stored_once_and_a_later_comment_amends_it(make_hub, crm_state) -> None:
    hub = await make_hub()
    token = await survey_flow(hub, crm_state)
    _, page = await hub.engine.page_for_token(token)
    first = await hub.engine.record_answer(page.invitation_id, 9)
    assert first.category.value == "promoter" and first.score == 90.0
    await hub.sync.run("crm")
    amended = await hub.engine.record_answer(page.invitation_id, None, comment="Fast and kind 🍷")
    assert amended.id == first.id and amended.comment == "Fast and kind 🍷" and amended.rating == 9
    async with hub.store.session() as s:
        assert await s.scalar(select(func.count()).select_from(Response)) == 1
        rows = list(await s.scalars(select(WriteBack).order_by(WriteBack.id)))
    # the same three items, re-armed with the newer payload: the CRM updates, never duplicates
    assert [(r.kind, r.state, r.version) for r in rows] == [
        ("person_summary", "queued", 2),
        ("timeline_entry", "queued", 2),
        ("case_feedback", "queued", 2),
    ]
    await hub.sync.run("crm")
    assert crm_state.creates == 3 and crm_state.updates == 3
    assert crm_state.records[f"timeline:{first.id}"]["payload"]["comment"] == "Fast and kind 🍷"


async def test_scores_outside_the_scale_are_refused_in_the_persons_language(make_hub, crm_state) -> None:
    hub = await make_hub()
    token = await survey_flow(hub, crm_state)
    _, page = await hub.engine.page_for_token(token)
    with pytest.raises(BadInput, match="Vælg en værdi fra 0 til 10"):
        await hub.engine.record_answer(page.invitation_id, 11)
    with pytest.raises(BadInput, match="choose a score first"):
        await hub.engine.record_answer(page.invitation_id, None, comment="no score")


async def test_unsubscribe_is_honoured_by_every_later_invitation(make_hub, crm_state) -> None:
    hub = await make_hub()
    hub.config.policy.min_days_between_surveys = 0
    await survey_flow(hub, crm_state)
    unsubscribe_token = crm_state.outbox[-1]["unsubscribe_url"].rsplit("/", 1)[1]
    assert await hub.engine.unsubscribe(unsubscribe_token)
    assert not await hub.engine.unsubscribe(token_of(crm_state.outbox[-1]["survey_url"]))  # wrong purpose
    await hub.engine.receive("crm", [case_event("C2")], source="webhook")
    await hub.engine.process_pending()
    last = (await invitations(hub))[-1]
    assert last.status == "suppressed" and last.reason.startswith("unsubscribed from surveys on")


async def test_an_sms_style_reply_is_recorded_against_the_open_invitation(make_hub, crm_state) -> None:
    hub = await make_hub()
    await survey_flow(hub, crm_state)
    from datetime import UTC, datetime

    from hub import InboundAnswer

    answer = InboundAnswer(
        sender="ADA@example.com", text="9 quick and friendly", received_at=datetime.now(UTC)
    )
    recorded = await hub.engine.record_inbound("mail", answer)
    assert recorded is not None and (recorded.rating, recorded.comment) == (9, "quick and friendly")
    stranger = InboundAnswer(sender="who@example.com", text="10", received_at=datetime.now(UTC))
    assert await hub.engine.record_inbound("mail", stranger) is None


async def test_people_are_matched_across_events_by_normalised_email(make_hub, crm_state) -> None:
    crm_state.people["P9"] = {"id": "P9", "email": " ada@EXAMPLE.com "}
    hub = await make_hub()
    await hub.engine.receive("crm", [case_event("C1", "P1"), case_event("C2", "P9")], source="webhook")
    await hub.engine.process_pending()
    async with hub.store.session() as s:
        assert await s.scalar(select(func.count()).select_from(Person)) == 1
        assert await s.scalar(select(func.count()).select_from(Event)) == 2


async def test_a_crm_outage_leaves_the_event_for_later(make_hub, crm_state) -> None:
    hub = await make_hub()
    crm_state.fail_next.append((503, {"Retry-After": "5"}))
    await hub.engine.receive("crm", [case_event("C1")], source="webhook")
    assert await hub.engine.process_pending() == 0
    async with hub.store.session() as s:
        event = await s.scalar(select(Event))
    assert event.processed_at is None and "HTTP 503" in event.process_error
    assert await hub.engine.process_pending() == 1
    assert [i.status for i in await invitations(hub)] == ["scheduled"]


async def test_a_crm_that_refuses_connections_leaves_the_event_for_later(make_hub, crm_state) -> None:
    """A raw connect error from a partner's connector is an outage like a 503, not a bad record."""
    import httpx

    hub = await make_hub()
    connector = hub.connectors["crm"]
    get_person = connector.get_person

    async def refused(person_id):
        raise httpx.ConnectError("[Errno 111] Connection refused")

    connector.get_person = refused
    await hub.engine.receive("crm", [case_event("C1")], source="webhook")
    assert await hub.engine.process_pending() == 0
    async with hub.store.session() as s:
        event = await s.scalar(select(Event))
    assert event.processed_at is None and "Connection refused" in event.process_error
    connector.get_person = get_person
    assert await hub.engine.process_pending() == 1
    assert [i.status for i in await invitations(hub)] == ["scheduled"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9 quick and friendly", (9, "quick and friendly")),
        ("10!", (10, None)),
        ("٣ ok", (3, "ok")),  # Arabic-Indic digits are decimal digits
        ("²", (None, "²")),  # a digit to str.isdigit(), but no number: a comment, never a crash
        ("¹⁰ great", (None, "¹⁰ great")),
        ("thanks!", (None, "thanks!")),
        ("   ", (None, None)),
    ],
)
def test_a_reply_is_read_as_a_score_only_when_it_starts_with_a_number(text, expected) -> None:
    from hub.engine import parse_reply

    assert parse_reply(text) == expected
