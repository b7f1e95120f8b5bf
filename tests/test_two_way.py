"""Two-way channels in the hub, through ``POST /inbound/sms`` on SQLite and PostgreSQL: opt-out keywords and
their report to the CRM, the link's opt-out reported the same way, a provider's own opt-out at send time,
a landline falling back to email, a texted score whose CRM write waits for its reason, and the kept replies
an admin reads. The channel is the two-way test channel (``tests.fakes.twoway``) beside the fake email one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from hub.app import Hub
from hub.engine import parse_reply
from hub.engine.conversations import OPT_OUT, keyword
from hub.models import SurveyKind
from hub.store.tables import Invitation, Person, WriteBack
from hub.texts import CATALOG, ask_again, reply_instructions
from hub.web import create_app
from tests.fakes import twoway
from tests.helpers import asgi_client, case_event, csrf_of

PHONE = "+4520304050"
EMAIL = "dora@example.com"


@pytest.fixture(autouse=True)
def provider() -> Iterator[twoway.Provider]:
    twoway.PROVIDER = twoway.Provider()
    yield twoway.PROVIDER


@pytest.fixture
def texted(make_hub: Any, crm_state: Any) -> Any:
    """A hub whose campaign texts first (answered by reply) and emails when texting fails."""
    crm_state.people["P4"] = {
        "id": "P4",
        "email": EMAIL,
        "phone": PHONE,
        "first_name": "Dora",
        "language": "da",
    }

    async def build() -> Hub:
        hub: Hub = await make_hub(
            '[channels.sms]\nplugin = "twoway"\nsecret = "two-way-signing-secret"\n',
            plugin_objects=[("tests.fakes.twoway", twoway)],
        )
        campaign = hub.config.campaigns["case_closed"]
        campaign.channels, campaign.answer_by = ["sms", "mail"], "reply"
        hub.config.policy.min_days_between_surveys = 0
        return hub

    return build


async def invite(hub: Hub, case_id: str = "C1") -> Invitation:
    await hub.engine.receive("crm", [case_event(case_id, "P4")], source="webhook")
    await hub.engine.process_pending()
    await hub.engine.dispatch_due()
    async with hub.store.session() as s:
        found = await s.scalar(select(Invitation).order_by(Invitation.id.desc()).limit(1))
    assert found is not None
    return found


async def post(hub: Hub, payload: dict[str, Any]) -> int:
    """The provider's signed request, over the hub's real ``/inbound/sms`` route."""
    request = twoway.PROVIDER.sign(payload)
    async with asgi_client(create_app(hub, scheduler=False)) as client:
        answer = await client.post("/inbound/sms", content=request.body, headers=request.headers)
    return answer.status_code


def text_from(number: str, body: str, message_id: str) -> dict[str, str]:
    return {"type": "reply", "id": message_id, "from": number, "text": body}


async def opt_outs(hub: Hub) -> list[WriteBack]:
    async with hub.store.session() as s:
        return list(await s.scalars(select(WriteBack).where(WriteBack.kind == "person_opt_out")))


async def person(hub: Hub) -> Person:
    async with hub.store.session() as s:
        found = await s.scalar(select(Person).where(Person.phone == PHONE))
    assert found is not None
    return found


async def test_stopp_by_text_opts_out_of_email_too_and_start_opts_back_in(texted, crm_state) -> None:
    hub = await texted()
    invitation = await invite(hub)
    assert (invitation.status, invitation.channel) == ("sent", "sms"), invitation.reason
    assert await post(hub, text_from(PHONE, " Stopp! ", "IN1")) == 200
    dora = await person(hub)
    assert dora.opted_out_at is not None and (dora.opt_out_channel, dora.opt_out_reason) == (
        "sms",
        "replied STOPP by sms",
    )
    [queued] = await opt_outs(hub)
    assert (queued.connector, queued.key, queued.payload["opted_out"]) == ("crm", f"optout:{dora.id}", True)
    assert queued.payload["reason"] == "replied STOPP by sms"

    hub.config.campaigns["case_closed"].channels = ["mail"]
    later = await invite(hub, "C2")
    assert later.status == "suppressed"
    assert not [m for m in crm_state.outbox if m.get("kind") == "survey"], "an opted-out person got an email"

    assert await post(hub, text_from(PHONE, "START", "IN2")) == 200
    assert (await person(hub)).opted_out_at is None
    [again] = await opt_outs(hub)  # the same item, re-armed with the latest state: one write to the CRM
    assert (again.id, again.version, again.payload["opted_out"]) == (queued.id, 2, False)


async def test_the_unsubscribe_link_reports_the_opt_out_to_the_crm_the_same_way(make_hub, crm_state) -> None:
    hub = await make_hub()
    await hub.engine.receive("crm", [case_event("C1", "P1")], source="webhook")
    await hub.engine.process_pending()
    await hub.engine.dispatch_due()
    survey = [m for m in crm_state.outbox if m.get("kind") == "survey"][-1]
    assert await hub.engine.unsubscribe(survey["unsubscribe_url"].rsplit("/", 1)[1])
    [queued] = await opt_outs(hub)
    assert queued.payload["opted_out"] is True and queued.payload["channel"] is None
    assert await hub.sync.run("crm")
    assert crm_state.records[queued.key]["payload"]["kind"] == "person_opt_out"


async def test_a_provider_refusing_an_opted_out_person_opts_them_out_and_tries_no_other_channel(
    texted, crm_state, provider
) -> None:
    hub = await texted()
    provider.opted_out.add(PHONE)
    invitation = await invite(hub)
    assert invitation.status == "suppressed" and invitation.reason.startswith("sms:")
    assert (await person(hub)).opted_out_at is not None
    assert not [m for m in crm_state.outbox if m.get("kind") == "survey"], "email was tried after the refusal"
    assert [w.payload["opted_out"] for w in await opt_outs(hub)] == [True]


async def test_a_landline_reported_undelivered_falls_back_to_email(texted, crm_state, provider) -> None:
    hub = await texted()
    invitation = await invite(hub)
    sid = provider.delivered[-1]["sid"]
    status = {"type": "status", "sid": sid, "status": "undelivered", "error_code": "30006"}
    assert await post(hub, status) == 200
    assert await post(hub, status) == 200  # delivered again by the provider: nothing more happens
    await hub.engine.dispatch_due()
    async with hub.store.session() as s:
        moved = await s.get(Invitation, invitation.id)
    assert moved is not None and (moved.status, moved.channel) == ("sent", "mail"), moved.reason
    assert [m["recipient"]["email"] for m in crm_state.outbox if m.get("kind") == "survey"] == [EMAIL]
    assert "30006" in ((await person(hub)).phone_rejected or "")
    assert len(provider.delivered) == 1, "the landline was texted again"


async def test_a_texted_score_waits_for_its_reason_then_both_are_written_once(texted, crm_state) -> None:
    hub = await texted()
    await invite(hub)
    prompt = hub.config.sync.prompt_seconds
    start = hub.now()
    assert await post(hub, text_from(PHONE, "9", "IN1")) == 200
    # the reason takes longer to type than the prompt sync's debounce: the score still waits for it
    hub.now = lambda: start + timedelta(seconds=60)
    assert (await hub.sync.run("crm", quiet_seconds=prompt)).written == 0
    assert await post(hub, text_from(PHONE, "Hurtig og venlig", "IN2")) == 200
    hub.now = lambda: start + timedelta(seconds=60 + prompt + 1)
    written = (await hub.sync.run("crm", quiet_seconds=prompt)).written
    keys = [item["key"] for batch in crm_state.batches for item in batch]
    assert written == len(keys) == len(set(keys)) > 0, keys
    timeline = [r for r in crm_state.records.values() if r["payload"]["kind"] == "timeline_entry"]
    assert [(r["payload"]["rating"], r["payload"]["comment"]) for r in timeline] == [(9, "Hurtig og venlig")]


async def test_a_texted_score_without_a_reason_is_written_when_the_wait_ends(texted, crm_state) -> None:
    hub = await texted()
    await invite(hub)
    start = hub.now()
    assert await post(hub, text_from(PHONE, "3", "IN1")) == 200
    wait = hub.config.campaigns["case_closed"].comment_wait_minutes
    hub.now = lambda: start + timedelta(minutes=wait, seconds=1)
    assert (await hub.sync.run("crm")).written > 0
    timeline = [r for r in crm_state.records.values() if r["payload"]["kind"] == "timeline_entry"]
    assert [(r["payload"]["rating"], r["payload"]["comment"]) for r in timeline] == [(3, None)]


async def test_a_reply_from_nobody_surveyed_is_kept_and_shown_to_the_admin(texted) -> None:
    hub = await texted()
    hub.config.hub.admin_password = SecretStr("correct horse battery staple")
    assert await post(hub, text_from("+4599887766", "10 <b>super</b>", "IN9")) == 200
    async with asgi_client(create_app(hub, scheduler=False)) as client:
        first = await client.get("/admin/replies")
        assert first.status_code == 303 and first.headers["location"] == "/admin/login?next=/admin/replies"
        form = await client.get("/admin/login")
        data = {"csrf": csrf_of(form.text), "username": "admin", "password": "correct horse battery staple"}
        await client.post("/admin/login", data={**data, "next": "/admin/replies"})
        page = await client.get("/admin/replies")
        assert page.status_code == 200
        assert "+4599887766" in page.text and "10 &lt;b&gt;super&lt;/b&gt;" in page.text
        assert "no open invitation" in page.text
        api = await client.get("/api/v1/replies", headers={"Authorization": "Bearer api-token-for-tests-42"})
        assert [(r["sender"], r["outcome"]) for r in api.json()] == [("+4599887766", "unmatched")]


async def test_the_delivery_status_shows_on_the_invitation_in_the_api(texted, provider) -> None:
    hub = await texted()
    await invite(hub)
    sid = provider.delivered[-1]["sid"]
    for status in ("delivered", "sent"):
        assert await post(hub, {"type": "status", "sid": sid, "status": status, "error_code": None}) == 200
    async with asgi_client(create_app(hub, scheduler=False)) as client:
        listed = await client.get(
            "/api/v1/invitations", headers={"Authorization": "Bearer api-token-for-tests-42"}
        )
    assert [(i["channel"], i["delivery_status"]) for i in listed.json()] == [("sms", "delivered")]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("9", (9, None)),
        (" 9!", (9, None)),
        ("10.", (10, None)),
        ("9/10", (9, None)),
        ("9 / 10 great", (9, "great")),
        ("9 quick and friendly", (9, "quick and friendly")),
        ("9, quick", (9, "quick")),
        ("0", (0, None)),
        ("11", (None, "11")),
        ("4/5", (None, "4/5")),
        ("9.5", (None, "9.5")),
        ("123", (None, "123")),
        ("9a", (None, "9a")),
        ("ni", (None, "ni")),
        ("nine", (None, "nine")),
        ("thanks", (None, "thanks")),
    ],
)
def test_scores_are_read_from_what_people_really_type_on_a_0_to_10_scale(body, expected) -> None:
    assert parse_reply(body, (0, 10)) == expected


@pytest.mark.parametrize(
    "body",
    [
        "STOP",
        "stop.",
        " Stopp! ",
        "AFMELD",
        "avmeld",
        "Avsluta",
        "ABMELDEN",
        "Désabonner",
        "ARRÊT",
        "stoppen",
    ],
)
def test_opt_out_keywords_are_the_whole_message_without_case_accents_or_trailing_punctuation(body) -> None:
    assert keyword(body) in OPT_OUT


@pytest.mark.parametrize("body", ["stop sending me these", "don't stop", "9 stop", "STOP?!x"])
def test_a_keyword_inside_a_longer_message_is_no_opt_out(body) -> None:
    assert keyword(body) not in OPT_OUT


async def test_retention_deletes_old_kept_replies_and_delivery_reports(texted, provider) -> None:
    from hub.scheduler import Scheduler
    from hub.store.tables import DeliveryReport, InboundMessage

    hub = await texted()
    assert await post(hub, text_from("+4599887766", "hello?", "IN1")) == 200
    report = {"type": "status", "sid": "SM-a-follow-up", "status": "delivered", "error_code": None}
    assert await post(hub, report) == 200
    await Scheduler(hub)._retention()
    async with hub.store.session() as s:
        assert len(list(await s.scalars(select(InboundMessage)))) == 1, "a fresh reply was deleted"
        assert len(list(await s.scalars(select(DeliveryReport)))) == 1
    start = hub.now()
    hub.now = lambda: start + timedelta(days=hub.config.hub.retention_days + 1)
    await Scheduler(hub)._retention()
    async with hub.store.session() as s:
        assert list(await s.scalars(select(InboundMessage))) == []
        assert list(await s.scalars(select(DeliveryReport))) == []


#: the GSM 03.38 alphabet and its extension table: a text of only these is texted 160 characters a segment
GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€"
)


@pytest.mark.parametrize("lang", sorted(CATALOG))
def test_how_to_answer_by_reply_fits_one_gsm_segment_in_every_language(lang: str) -> None:
    """In every language the hub ships, the texts of a conversation by reply stay in the GSM alphabet, so
    none forces the whole SMS into UCS-2 (70 characters a segment), and each leaves room for the question."""
    for kind in SurveyKind:
        for said in (reply_instructions(lang, kind), ask_again(lang, kind)):
            assert set(said) <= GSM7, f"{lang} {kind.value}: {sorted(set(said) - GSM7)} in {said!r}"
            assert len(said) <= 100, f"{lang} {kind.value}: {len(said)} characters: {said!r}"


async def test_a_delivery_report_that_the_person_opted_out_does_what_a_texted_stop_does(
    texted, provider
) -> None:
    hub = await texted()
    await invite(hub)
    sid = provider.delivered[-1]["sid"]
    assert await post(hub, {"type": "status", "sid": sid, "status": "failed", "error_code": "21610"}) == 200
    dora = await person(hub)
    assert dora.opted_out_at is not None and dora.opt_out_channel == "sms"
    assert dora.phone_rejected is None, "an opted-out number is no bad number"
    assert [w.payload["opted_out"] for w in await opt_outs(hub)] == [True]
