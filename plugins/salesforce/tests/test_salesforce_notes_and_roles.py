"""A Case's feedback and its notes (internal comment, Chatter posts) commit together in one Composite call;
where the Chatter post goes; and a won opportunity surveys its primary contact role.

Everything runs against the emulator over real HTTPS. The emulator answers a Composite with allOrNone as
Salesforce does: one failed record rolls back every subrequest, and the others answer PROCESSING_HALTED.
"""

from __future__ import annotations

import html
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hub_salesforce.config import CaseFields
from hub_salesforce.connector import SalesforceConnector
from hub_salesforce.emulation.org import RecordError
from hub_salesforce.emulation.outbound import envelope
from hub_salesforce.emulator import Call, SalesforceEmulator, TlsServer
from hub_salesforce.writeback import cut_encoded, cut_utf16
from pydantic import ValidationError
from salesforce_support import SalesforceHarness, callout_request, make_connector, make_settings
from sqlalchemy import select

from hub import (
    BadInput,
    CaseFeedback,
    NpsCategory,
    TransientError,
    WebhookRequest,
    WriteBackItem,
    WriteBackResult,
)
from hub.app import Hub
from hub.config import parse_config
from hub.store.tables import Invitation
from hub.testing.harness import CONNECTOR, suite_config
from hub.testing.memory import MemoryChannel, memory_channel_plugin

NOTE = "Customer feedback: 3 (detractor)\n{comment}"


# --- helpers ------------------------------------------------------------------------------------


def answer(
    case_id: str,
    n: int,
    *,
    comment: str = "Slow refund",
    internal_comment: bool = True,
    person: str | None = None,
) -> WriteBackItem:
    """The case-feedback item of answer ``n`` on ``case_id``, as the hub queues it."""
    return WriteBackItem(
        id=n,
        key=f"case:resp-{n}",
        record_id=case_id,
        person_record_id=person,
        payload=CaseFeedback(
            response_id=f"resp-{n}",
            rating=3,
            score=30,
            category=NpsCategory.DETRACTOR,
            comment=comment,
            processed_at=datetime.now(UTC),
            internal_comment=internal_comment,
        ),
    )


def closed_case(emulator: SalesforceEmulator, n: int) -> tuple[str, str]:
    """(case id, contact id) of a closed case of a new contact."""
    contact = emulator.add_contact("Eva", f"Strand{n}", email=f"eva.{n}@nordlys.example")
    case = emulator.close_case(emulator.add_case(f"Refund {n}", contact))["Id"]
    return str(case), contact


def connector_with(
    server: TlsServer, emulator: SalesforceEmulator, private_key: str, **case: Any
) -> SalesforceConnector:
    return make_connector(make_settings(server, private_key, emulator, case=case))


def composites(emulator: SalesforceEmulator) -> list[Call]:
    return [c for c in emulator.calls if (c.method, c.path) == ("POST", "/composite")]


def comments_on(emulator: SalesforceEmulator, case_id: str) -> list[dict[str, Any]]:
    return [c for c in emulator.records("CaseComment") if c["ParentId"] == case_id]


def posts_on(emulator: SalesforceEmulator, record_id: str) -> list[dict[str, Any]]:
    return [p for p in emulator.records("FeedItem") if p["ParentId"] == record_id]


def marker(emulator: SalesforceEmulator, case_id: str) -> Any:
    return emulator.org.records["Case"][case_id]["CXHub_Response_Id__c"]


def statuses(results: list[WriteBackResult]) -> list[str]:
    return [r.status for r in results]


@pytest.fixture
async def noting(
    server: TlsServer, emulator: SalesforceEmulator, app_keys: tuple[str, str]
) -> AsyncIterator[SalesforceConnector]:
    """A connector adding the internal comment and a post on the Case's feed."""
    connector = connector_with(server, emulator, app_keys[0], chatter_post="case")
    yield connector
    await connector.aclose()


# --- atomic notes -------------------------------------------------------------------------------


async def test_one_bad_case_in_a_composite_does_not_block_the_others_and_is_never_noted_twice(
    noting: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    cases = [closed_case(emulator, n)[0] for n in range(3)]
    del emulator.org.records["Case"][cases[1]]  # deleted in Salesforce after the survey went out
    batch = [answer(case, n) for n, case in enumerate(cases)]

    results = await noting.write_back(batch)

    assert statuses(results) == ["ok", "failed", "ok"]
    assert results[1].error is not None and "ENTITY_IS_DELETED" in results[1].error
    for n in (0, 2):
        assert [c["CommentBody"] for c in comments_on(emulator, cases[n])] == [
            NOTE.format(comment="Slow refund")
        ]
        assert len(posts_on(emulator, cases[n])) == 1
        assert marker(emulator, cases[n]) == f"resp-{n}+comment"
    assert comments_on(emulator, cases[1]) == [] and posts_on(emulator, cases[1]) == []
    # the bad case rolled the first Composite back; the other two went in a second one
    assert [c.status for c in composites(emulator)] == [200, 200]
    assert len(composites(emulator)[1].body["compositeRequest"][0]["body"]["records"]) == 2

    # the whole batch again (a worker died before marking it done): nothing is noted a second time
    again = await noting.write_back([item.model_copy(update={"attempt": 2}) for item in batch])
    assert statuses(again) == ["ok", "failed", "ok"]
    assert len(emulator.records("CaseComment")) == 2 and len(emulator.records("FeedItem")) == 2
    assert len(composites(emulator)) == 3, "only the bad case is tried with notes again"


async def test_a_post_refused_on_one_contact_fails_that_answer_only_and_leaves_its_case_unmarked(
    server: TlsServer, emulator: SalesforceEmulator, app_keys: tuple[str, str]
) -> None:
    pairs = [closed_case(emulator, n) for n in range(3)]
    del emulator.org.records["Contact"][pairs[2][1]]  # the contact was merged away; the case still names it
    connector = connector_with(server, emulator, app_keys[0], chatter_post="contact", internal_comment=False)
    try:
        results = await connector.write_back([answer(case, n) for n, (case, _) in enumerate(pairs)])
    finally:
        await connector.aclose()
    assert statuses(results) == ["ok", "ok", "failed"]
    assert results[2].error is not None and "FIELD_INTEGRITY_EXCEPTION" in results[2].error
    for n in (0, 1):
        case, contact = pairs[n]
        assert len(posts_on(emulator, contact)) == 1 and posts_on(emulator, case) == []
        assert marker(emulator, case) == f"resp-{n}+comment"
    # the update of the third case was rolled back with its post: no marker claims a note that does not exist
    assert marker(emulator, pairs[2][0]) is None
    assert len(emulator.records("FeedItem")) == 2


async def test_a_second_failing_composite_ends_the_attempt_and_the_rest_waits_for_the_next(
    server: TlsServer, emulator: SalesforceEmulator, app_keys: tuple[str, str]
) -> None:
    pairs = [closed_case(emulator, n) for n in range(3)]
    del emulator.org.records["Case"][pairs[0][0]]  # found by the first Composite (the Case update)
    del emulator.org.records["Contact"][pairs[1][1]]  # found only by the second (its post)
    connector = connector_with(server, emulator, app_keys[0], chatter_post="contact")
    batch = [answer(case, n) for n, (case, _) in enumerate(pairs)]
    try:
        results = await connector.write_back(batch)
        assert statuses(results) == ["failed", "failed", "transient"]
        assert len(composites(emulator)) == 2, "two Composite calls at most, never a loop"
        assert emulator.records("FeedItem") == [] and emulator.records("CaseComment") == []
        assert marker(emulator, pairs[2][0]) is None

        retried = await connector.write_back([batch[2].model_copy(update={"attempt": 2})])
    finally:
        await connector.aclose()
    assert statuses(retried) == ["ok"]
    assert len(posts_on(emulator, pairs[2][1])) == 1 and len(comments_on(emulator, pairs[2][0])) == 1


async def test_a_refused_composite_call_notes_nothing_and_the_retry_notes_once(
    noting: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    case, _ = closed_case(emulator, 0)
    item = answer(case, 0)
    await noting.client.connect()
    emulator.fail_next(1, 503, retry_after=30, methods={"POST"})  # the Composite call itself
    with pytest.raises(TransientError) as refused:
        await noting.write_back([item])
    assert refused.value.retry_after == 30
    assert emulator.records("CaseComment") == [] and emulator.records("FeedItem") == []
    assert marker(emulator, case) is None

    assert statuses(await noting.write_back([item.model_copy(update={"attempt": 2})])) == ["ok"]
    assert len(comments_on(emulator, case)) == 1 and len(posts_on(emulator, case)) == 1


async def test_cases_without_notes_keep_the_plain_collections_update(
    noting: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    cases = [closed_case(emulator, n)[0] for n in range(2)]
    assert statuses(await noting.write_back([answer(c, n) for n, c in enumerate(cases)])) == ["ok", "ok"]
    calls = len(emulator.calls)
    # the same answers again: already noted, so only the Case fields are written, in one Collections call
    assert statuses(await noting.write_back([answer(c, n) for n, c in enumerate(cases)])) == ["ok", "ok"]
    made = [(c.method, c.path.rstrip("/")) for c in emulator.calls[calls:]]
    assert made == [("GET", "/query"), ("PATCH", "/composite/sobjects")]


@pytest.mark.parametrize(("target", "posts_per_case"), [("case", 1), ("both", 2)])
async def test_200_answers_with_comment_and_posts_cost_one_query_and_one_composite_call(
    server: TlsServer,
    emulator: SalesforceEmulator,
    app_keys: tuple[str, str],
    target: str,
    posts_per_case: int,
) -> None:
    pairs = [closed_case(emulator, n) for n in range(200)]
    connector = connector_with(server, emulator, app_keys[0], chatter_post=target)
    try:
        await connector.client.connect()
        used = emulator.api_used
        results = await connector.write_back([answer(case, n) for n, (case, _) in enumerate(pairs)])
    finally:
        await connector.aclose()
    assert statuses(results) == ["ok"] * 200
    assert emulator.api_used - used == 2, "the 'already noted' query and one Composite call"
    assert len(emulator.records("CaseComment")) == 200
    assert len(emulator.records("FeedItem")) == 200 * posts_per_case
    assert all(marker(emulator, case) == f"resp-{n}+comment" for n, (case, _) in enumerate(pairs))


# --- where the Chatter post goes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "on_case", "on_contact"),
    [("case", 1, 0), ("contact", 0, 1), ("both", 1, 1), ("off", 0, 0)],
)
async def test_each_chatter_target_gets_exactly_one_post_per_answer(
    server: TlsServer,
    emulator: SalesforceEmulator,
    app_keys: tuple[str, str],
    target: str,
    on_case: int,
    on_contact: int,
) -> None:
    case, contact = closed_case(emulator, 0)
    connector = connector_with(server, emulator, app_keys[0], chatter_post=target)
    item = answer(case, 0, comment="Nobody called back", internal_comment=False)
    try:
        for attempt in (1, 2, 3):  # retried after success: still one post per feed
            results = await connector.write_back([item.model_copy(update={"attempt": attempt})])
            assert statuses(results) == ["ok"]
    finally:
        await connector.aclose()
    assert len(posts_on(emulator, case)) == on_case
    assert len(posts_on(emulator, contact)) == on_contact
    assert len(emulator.records("FeedItem")) == on_case + on_contact
    assert all(p["Body"] == NOTE.format(comment="Nobody called back") for p in emulator.records("FeedItem"))
    assert emulator.calls_to("POST", "/chatter") == []
    assert marker(emulator, case) == "resp-0+comment"


async def test_a_contact_post_goes_to_the_person_who_answered(
    server: TlsServer, emulator: SalesforceEmulator, app_keys: tuple[str, str]
) -> None:
    case, case_contact = closed_case(emulator, 0)
    answered_by = emulator.add_contact("Jon", "Hauge", email="jon.hauge@nordlys.example")
    connector = connector_with(server, emulator, app_keys[0], chatter_post="contact", internal_comment=False)
    try:
        results = await connector.write_back([answer(case, 0, person=answered_by)])
    finally:
        await connector.aclose()
    assert statuses(results) == ["ok"]
    assert len(posts_on(emulator, answered_by)) == 1 and posts_on(emulator, case_contact) == []


@pytest.mark.parametrize(("value", "meaning"), [(True, "case"), (False, "off"), ("Both", "both")])
def test_older_boolean_chatter_settings_keep_their_meaning(value: object, meaning: str) -> None:
    assert CaseFields.model_validate({"chatter_post": value}).chatter_post == meaning


def test_an_unknown_chatter_target_is_refused_with_the_choices() -> None:
    with pytest.raises(ValidationError) as refused:
        CaseFields.model_validate({"chatter_post": "account"})
    assert all(choice in str(refused.value) for choice in ("'case'", "'contact'", "'both'", "'off'"))


# --- an opportunity's primary contact role --------------------------------------------------------


def role_queries(emulator: SalesforceEmulator) -> list[str]:
    """The SOQL of every contact-role query the org answered."""
    return [
        c.params["q"]
        for c in emulator.calls
        if (c.method, c.path.rstrip("/"), c.status) == ("GET", "/query", 200)
        and "OpportunityContactRole" in c.params["q"]
    ]


async def opportunity_hub(harness: SalesforceHarness, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Hub:
    """A hub whose one campaign surveys the person of each won opportunity."""
    for name, value in harness.environment().items():
        monkeypatch.setenv(name, value)
    MemoryChannel.sent.clear()
    data = suite_config(harness, workdir)
    data["campaigns"] = {
        "won": {
            "trigger": {"connector": CONNECTOR, "event": "opportunity.won"},
            "survey": "nps",
            "channels": ["memory"],
        }
    }
    return await Hub.open(
        parse_config(data, workdir / "suite.toml"), plugin_objects=[memory_channel_plugin()]
    )


async def test_a_polled_opportunity_surveys_its_primary_contact_role_or_else_its_contact(
    emulator: SalesforceEmulator,
    server: TlsServer,
    harness: SalesforceHarness,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    buyer = emulator.add_contact("Per", "Lien", email="per.lien@nordlys.example")  # Opportunity.ContactId
    champion = emulator.add_contact("Ina", "Moe", email="ina.moe@nordlys.example")
    adviser = emulator.add_contact("Ask", "Bø", email="ask.bo@nordlys.example")
    renewal = emulator.win_opportunity("Renewal", buyer)
    emulator.add_contact_role(renewal, adviser, "Technical Buyer")  # a role, but not the primary one
    emulator.add_contact_role(renewal, champion, "Decision Maker", primary=True)
    lone = emulator.add_contact("Siri", "Dal", email="siri.dal@nordlys.example")
    emulator.win_opportunity("Upsell", lone)  # no contact role at all
    emulator.win_opportunity("Walk-in", None)  # nobody to ask
    hub = await opportunity_hub(harness, tmp_path, monkeypatch)
    try:
        stats = await hub.sync.poll(CONNECTOR)
        assert stats.error is None
        await hub.engine.process_pending()
        await hub.engine.dispatch_due()
        async with hub.store.session() as s:
            reasons = list(
                await s.scalars(select(Invitation.reason).where(Invitation.status == "suppressed"))
            )
    finally:
        await hub.close()
    surveyed = sorted(m.recipient.email or "" for m in MemoryChannel.sent if m.kind == "survey")
    assert surveyed == ["ina.moe@nordlys.example", "siri.dal@nordlys.example"]
    assert reasons == [f"no person on the Opportunity in {CONNECTOR}"]
    assert len(role_queries(emulator)) == 1, "one contact-role query for the page of opportunities"


async def test_webhook_opportunities_use_the_primary_role_with_one_query_per_message(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    owner_contact = emulator.add_contact("Per", "Lien", email="per.lien@nordlys.example")
    champion = emulator.add_contact("Ina", "Moe", email="ina.moe@nordlys.example")
    roled = emulator.win_opportunity("Renewal", owner_contact)
    emulator.add_contact_role(roled, champion, primary=True)
    plain = emulator.win_opportunity("Upsell", owner_contact)
    fields = ("Id", "IsWon", "LastModifiedDate", "ContactId")
    notifications = [
        (
            f"04l5g000000000{n}AAA",
            "Opportunity",
            {k: emulator.org.records["Opportunity"][opp][k] for k in fields},
        )
        for n, opp in enumerate((roled, plain))
    ]
    message = WebhookRequest(
        method="POST",
        url="https://hub.example/hooks/crm",
        headers={"content-type": "text/xml"},
        body=envelope(emulator.org.org_id, "04k5g0000000001AAA", notifications),
    )
    reply = await connector.parse_webhook(message)
    assert {e.record_id: e.person_id for e in reply.events} == {roled: champion, plain: owner_contact}
    assert len(role_queries(emulator)) == 1, "the message's opportunities share one query"

    redelivered = await connector.parse_webhook(message)  # Salesforce delivers at least once
    assert {e.record_id: e.person_id for e in redelivered.events} == {roled: champion, plain: owner_contact}
    assert len(role_queries(emulator)) == 1, "a redelivery costs no call"

    record = {"attributes": {"type": "Opportunity"}, **notifications[0][2]}
    callout = await connector.parse_webhook(
        callout_request(json.dumps({"event": "opportunity.won", "records": [record]}).encode())
    )
    assert [(e.record_id, e.person_id) for e in callout.events] == [(roled, champion)]


async def test_an_id_that_is_no_record_id_reaches_no_query_and_is_refused(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    contact = emulator.add_contact("Per", "Lien", email="per.lien@nordlys.example")
    forged = {
        "attributes": {"type": "Opportunity"},
        "Id": "006' OR IsPrimary = false OR Id != '",
        "IsWon": True,
        "LastModifiedDate": "2026-05-01T10:00:00.000+0000",
        "ContactId": contact,
    }
    with pytest.raises(BadInput) as refused:  # refused (and kept for inspection), not quietly dropped
        await connector.parse_webhook(
            callout_request(json.dumps({"event": "opportunity.won", "records": [forged]}).encode())
        )
    assert refused.value.status_code == 400
    assert [c.path for c in emulator.calls if c.path.startswith("/query")] == [], (
        "no query was built from the forged id"
    )


# --- a comment after the score, and long comments -----------------------------------------------


async def test_a_comment_given_after_the_score_gets_a_note_of_its_own_and_retries_add_none(
    noting: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    case, _ = closed_case(emulator, 0)
    score_only = answer(case, 0, comment="")
    with_comment = answer(case, 0, comment="Refund took two weeks")  # the survey's second page
    for item in (score_only, score_only, with_comment, with_comment):  # each written twice, as on a retry
        assert statuses(await noting.write_back([item])) == ["ok"]
    notes = [c["CommentBody"] for c in comments_on(emulator, case)]
    assert notes == [
        "Customer feedback: 3 (detractor)",
        "Customer feedback: 3 (detractor)\nRefund took two weeks",
    ]
    assert [p["Body"] for p in posts_on(emulator, case)] == notes
    assert emulator.org.records["Case"][case]["CXHub_Comment__c"] == "Refund took two weeks"


async def test_a_long_comment_with_ampersands_and_emoji_is_cut_to_what_salesforce_takes_and_lands(
    noting: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    """CaseComment bodies are measured in UTF-8 bytes after HTML encoding: 4,000 characters do not fit."""
    case, _ = closed_case(emulator, 0)
    comment = "Kø & ventetid på 3 uker 🐢 " * 200  # 5,400 characters, over 9,000 bytes once encoded
    results = await noting.write_back([answer(case, 0, comment=comment)])
    assert statuses(results) == ["ok"], results
    (note,) = comments_on(emulator, case)
    encoded = len(html.escape(note["CommentBody"]).encode("utf-8"))
    assert 3900 < encoded <= 4000, "as much of the comment as fits, and no more"
    assert note["CommentBody"].startswith("Customer feedback: 3 (detractor)\nKø & ventetid")
    assert emulator.org.records["Case"][case]["CXHub_Comment__c"] == comment, "the field holds it all"


def test_the_emulator_refuses_a_case_comment_over_4000_encoded_bytes(emulator: SalesforceEmulator) -> None:
    case, _ = closed_case(emulator, 0)
    with pytest.raises(RecordError, match="max length=4000") as refused:
        emulator.org.create(
            "CaseComment", {"ParentId": case, "CommentBody": "&" * 801}
        )  # 801 chars, 4,005 bytes
    assert refused.value.code == "STRING_TOO_LONG"
    emulator.org.create("CaseComment", {"ParentId": case, "CommentBody": "&" * 800})


def test_text_is_cut_by_utf16_units_as_salesforce_counts_characters() -> None:
    assert cut_utf16("ab🐢c", 3) == "ab"  # the turtle is two units: it does not fit after "ab" in 3
    assert cut_utf16("ab🐢c", 4) == "ab🐢"
    assert cut_utf16("short", 255) == "short"
    assert cut_encoded("a&b", 6) == "a&"  # "a&amp;" is 6 bytes


async def test_a_case_noted_by_an_earlier_version_is_not_noted_again_after_an_upgrade(
    noting: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    """Earlier versions wrote the bare response id: a full re-sync after upgrading must post nothing twice."""
    case, _ = closed_case(emulator, 0)
    emulator.org.update("Case", case, {"CXHub_Response_Id__c": "resp-0"}, system=True)
    assert statuses(await noting.write_back([answer(case, 0, comment="Slow refund")])) == ["ok"]
    assert comments_on(emulator, case) == [] and posts_on(emulator, case) == []
    assert marker(emulator, case) == "resp-0+comment"
