"""Write-back through $batch: one bad record fails alone, retries update instead of duplicating, and a 429
storm in the middle of a sync is waited out with nothing written twice."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dynamics_support import DynamicsHarness, make_connector, make_settings, resolve, seed_case, webhook
from hub_dynamics.connector import DynamicsConnector
from hub_dynamics.emulator import ERR_EXECUTION_TIME, DataverseEmulator
from hub_dynamics.writeback import CUSTOMER

from hub import CaseFeedback, PersonSummary, TimelineEntry, WriteBackItem
from hub.app import Hub
from hub.testing import MemoryChannel, build_hub
from hub.testing.harness import CONNECTOR
from hub.testing.server import TlsServer

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def summary_item(item_id: int, contact: str, rating: int = 9, comment: str | None = "great") -> WriteBackItem:
    payload = PersonSummary(
        latest_rating=rating,
        latest_score=rating * 10,
        latest_category="promoter" if rating >= 9 else "detractor",
        latest_date=NOW,
        latest_comment=comment,
        average_rating=rating,
        average_rating_30_days=rating,
        average_score=rating * 10,
        count=1,
    )
    return WriteBackItem(id=item_id, key=f"summary:{contact}:{item_id}", record_id=contact, payload=payload)


def timeline_item(item_id: int, contact: str, case: str | None, response: str) -> WriteBackItem:
    payload = TimelineEntry(
        response_id=response,
        campaign="support",
        survey_kind="nps",
        rating=3,
        score=30,
        category="detractor",
        comment="slow",
        answered_at=NOW,
        channel="email",
        case_id=case,
        language="en",
    )
    return WriteBackItem(id=item_id, key=f"timeline:{response}", record_id=contact, payload=payload)


def feedback_item(item_id: int, case: str, response: str, note: bool = True) -> WriteBackItem:
    payload = CaseFeedback(
        response_id=response,
        rating=3,
        score=30,
        category="detractor",
        comment="slow",
        processed_at=NOW,
        internal_comment=note,
    )
    return WriteBackItem(id=item_id, key=f"feedback:{response}", record_id=case, payload=payload)


@pytest.mark.asyncio
async def test_one_bad_record_fails_alone(connector: DynamicsConnector, emulator: DataverseEmulator) -> None:
    contacts = [seed_case(emulator, f"p{n}@example.com")[1] for n in range(3)]
    emulator.fail_row(contacts[1], 400, "0x80040265", "a plug-in refused the update")
    results = await connector.write_back([summary_item(n + 1, c) for n, c in enumerate(contacts)])
    assert {r.item_id: r.status for r in results} == {1: "ok", 2: "failed", 3: "ok"}
    assert "0x80040265" in (next(r.error for r in results if r.item_id == 2) or "")
    assert [(emulator.row("contact", c) or {}).get("cxhub_lastscore") for c in contacts] == [9, None, 9]
    assert len([c for c in emulator.calls_of("api") if c.path == "/$batch"]) == 1


@pytest.mark.asyncio
async def test_summary_values_and_a_deleted_contact(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    contact = seed_case(emulator)[1]
    gone = emulator.add("contact", firstname="Gone")
    emulator.delete("contact", gone)
    results = await connector.write_back([summary_item(1, contact, 3, "x" * 5000), summary_item(2, gone)])
    assert {r.item_id: r.status for r in results} == {1: "ok", 2: "failed"}
    row = emulator.row("contact", contact)
    assert row is not None
    assert (row["cxhub_lastscore"], row["cxhub_lastcategory"], row["cxhub_responsecount"]) == (
        3,
        100000002,
        1,
    )
    assert len(row["cxhub_lastcomment"]) == 2000  # cut to the column's length, not refused
    assert emulator.row("contact", gone) is None  # If-Match: * never creates an empty contact


@pytest.mark.asyncio
async def test_timeline_and_case_feedback_are_idempotent(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    _, contact, case = seed_case(emulator)
    batch = [timeline_item(1, contact, case, "r-1"), feedback_item(2, case, "r-1")]
    for _ in range(2):  # the same items again, as after a crash
        results = await connector.write_back(batch)
        assert [r.status for r in results] == ["ok", "ok"]
    [entry] = emulator.rows("cxhub_surveyresponse")
    assert (entry["_regardingobjectid_value"], entry["cxhub_responseid"]) == (case, "r-1")
    [note] = emulator.rows("annotation")
    assert note["_objectid_value"] == case and "slow" in note["notetext"]
    assert emulator.row("incident", case)["cxhub_feedbackscore"] == 3


@pytest.mark.asyncio
async def test_case_feedback_is_one_changeset(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    """The note is never written without the case's columns: a refused case update rolls both back."""
    _, _, case = seed_case(emulator)
    _, _, other = seed_case(emulator, "other@example.com")
    emulator.fail_row(case, 400, "0x80040265", "refused")
    results = await connector.write_back([feedback_item(1, case, "r-1"), feedback_item(2, other, "r-2")])
    assert {r.item_id: r.status for r in results} == {1: "failed", 2: "ok"}
    assert [n["_objectid_value"] for n in emulator.rows("annotation")] == [other]


@pytest.mark.asyncio
async def test_batches_hold_at_most_the_configured_requests(
    emulator: DataverseEmulator, server: TlsServer
) -> None:
    connector = make_connector(make_settings(server, max_batch_requests=3))
    try:
        cases = [seed_case(emulator, f"p{n}@example.com")[2] for n in range(3)]
        # each feedback is a changeset of two requests: two of them never fit in one batch of three
        results = await connector.write_back([feedback_item(n + 1, c, f"r-{n}") for n, c in enumerate(cases)])
        assert [r.status for r in results] == ["ok"] * 3
        assert len([c for c in emulator.calls_of("api") if c.path == "/$batch"]) == 3
    finally:
        await connector.aclose()


@pytest.mark.asyncio
async def test_execution_time_limit_halves_the_batch(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    contact = seed_case(emulator)[1]
    emulator.throttle(1, 429, 5, code=ERR_EXECUTION_TIME)
    with pytest.raises(Exception) as refused:
        await connector.write_back([summary_item(1, contact)])
    assert getattr(refused.value, "retry_after", None) == 5 and getattr(refused.value, "sent", True) is False
    assert connector.client.batch_requests == 500


async def _answer(hub: Hub, harness: DynamicsHarness) -> None:
    reply = await hub.connectors[CONNECTOR].parse_webhook(harness.closed_case_webhook())
    await hub.engine.receive(CONNECTOR, reply.events, source="webhook")
    await hub.engine.process_pending()
    await hub.engine.dispatch_due()
    invitation_id = MemoryChannel.sent[-1].invitation_id
    await hub.engine.record_answer(invitation_id, 4, comment="too slow")


@pytest.mark.asyncio
async def test_429_storm_mid_sync_is_waited_out_and_nothing_written_twice(
    harness: DynamicsHarness, emulator: DataverseEmulator, tmp_path: Path
) -> None:
    MemoryChannel.sent.clear()
    hub = await build_hub(harness, tmp_path, settings={**harness.settings(), "max_batch_requests": 1})
    try:
        for _ in range(3):
            await _answer(hub, harness)
        connector: Any = hub.connectors[CONNECTOR]
        clock = [datetime.now(UTC)]
        hub.now = lambda: clock[0]
        connector.client.budget.clock = lambda: clock[0].timestamp()
        emulator.throttle(3, 429, 30, writes_only=True, after=1)  # the storm starts after the first write
        for _ in range(10):
            stats = await hub.sync.run(CONNECTOR)
            if await hub.sync.pending(CONNECTOR, due_only=False) == 0:
                break
            assert await hub.sync.pending(CONNECTOR) == 0, "an item was due before Retry-After passed"
            clock[0] += timedelta(seconds=31)
        assert await hub.sync.pending(CONNECTOR, due_only=False) == 0, stats
        writes = Counter(
            c.path for c in emulator.calls_of("batch-part") if c.status < 300 and c.method == "PATCH"
        )
        kinds = Counter(path.split("(")[0] for path in writes)
        assert kinds == {"/contacts": 3, "/cxhub_surveyresponses": 3, "/incidents": 3}, writes
        assert set(writes.values()) == {1}, writes
        throttled = [c for c in emulator.calls_of("api") if c.status == 429]
        assert len(throttled) == 3
    finally:
        await hub.close()


@pytest.mark.asyncio
async def test_webhook_then_write_back_through_the_hub(
    harness: DynamicsHarness, emulator: DataverseEmulator, tmp_path: Path
) -> None:
    """The demo's story end to end: the answer lands on the contact, the case and the case's timeline."""
    MemoryChannel.sent.clear()
    hub = await build_hub(harness, tmp_path)
    try:
        _, contact, incident = seed_case(emulator)
        resolve(emulator, incident)
        reply = await hub.connectors[CONNECTOR].parse_webhook(
            webhook(emulator, "CloseIncident", "incident", incident)
        )
        await hub.engine.receive(CONNECTOR, reply.events, source="webhook")
        await hub.engine.process_pending()
        await hub.engine.dispatch_due()
        await hub.engine.record_answer(MemoryChannel.sent[-1].invitation_id, 10, comment="brilliant")
        assert (await hub.sync.run(CONNECTOR)).written == 3
        assert emulator.row("contact", contact)["cxhub_lastcomment"] == "brilliant"
        assert emulator.row("incident", incident)["cxhub_feedbackscore"] == 10
        assert [r["_regardingobjectid_value"] for r in emulator.rows("cxhub_surveyresponse")] == [incident]
        assert [a["cxhub_comment"] for a in emulator.timeline(contact)] == ["brilliant"]
    finally:
        await hub.close()


def _party_of(emulator: DataverseEmulator, activity_id: str) -> list[tuple[str, str, int]]:
    """(party, its table, participation type) of every party row of an activity."""
    return [
        (p["_partyid_value"], p["_partyid_table"], p["participationtypemask"])
        for p in emulator.parties(activity_id)
    ]


@pytest.mark.asyncio
async def test_the_answer_is_on_the_contacts_timeline_as_a_party_and_on_the_cases_as_regarding(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    _, contact, case = seed_case(emulator)
    results = await connector.write_back([timeline_item(1, contact, case, "r-1")])
    assert [r.status for r in results] == ["ok"]
    [entry] = emulator.rows("cxhub_surveyresponse")
    assert entry["_regardingobjectid_value"] == case  # regarding the case, not the contact
    assert _party_of(emulator, entry["activityid"]) == [(contact, "contact", CUSTOMER)]
    assert [a["activityid"] for a in emulator.timeline(case)] == [entry["activityid"]]
    assert [a["activityid"] for a in emulator.timeline(contact)] == [entry["activityid"]]
    # in the same operation as the activity: no request of its own
    assert [c.path.split("(")[0] for c in emulator.calls_of("batch-part")] == ["/cxhub_surveyresponses"]


@pytest.mark.asyncio
async def test_a_retried_timeline_write_leaves_one_party(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    _, contact, case = seed_case(emulator)
    _, other, _ = seed_case(emulator, "other@example.com")
    batch = [timeline_item(1, contact, case, "r-1"), timeline_item(2, other, None, "r-2")]
    for _ in range(3):  # the same keys again, as after a crash or a full re-sync
        assert [r.status for r in await connector.write_back(batch)] == ["ok", "ok"]
    assert len(emulator.rows("cxhub_surveyresponse")) == 2
    assert sorted(
        (p["_partyid_value"], p["participationtypemask"]) for p in emulator.rows("activityparty")
    ) == sorted([(contact, CUSTOMER), (other, CUSTOMER)])
    assert len(emulator.timeline(contact)) == len(emulator.timeline(other)) == 1


@pytest.mark.asyncio
async def test_a_write_after_a_kill_leaves_one_activity_and_one_party(
    harness: DynamicsHarness, emulator: DataverseEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker dies after Dataverse took the batch and before the hub recorded it: the lease runs out,
    the next run writes the same keys again, and the contact still has one party row per answer."""
    MemoryChannel.sent.clear()
    hub = await build_hub(harness, tmp_path)
    try:
        await _answer(hub, harness)

        record = hub.sync._record

        async def killed_after_the_activity(outcomes: Any, stats: Any) -> None:
            if emulator.rows("cxhub_surveyresponse"):  # the batch that wrote the activity
                raise RuntimeError("the worker was killed before it recorded the batch")
            await record(outcomes, stats)

        monkeypatch.setattr(hub.sync, "_record", killed_after_the_activity)
        with pytest.raises(RuntimeError):
            await hub.sync.run(CONNECTOR)
        monkeypatch.undo()
        [written] = emulator.rows("cxhub_surveyresponse")
        assert await hub.sync.pending(CONNECTOR, due_only=False) > 0  # not recorded: still queued
        later = datetime.now(UTC) + timedelta(seconds=hub.config.sync.lease_seconds + 1)
        hub.now = lambda: later
        stats = await hub.sync.run(CONNECTOR)
        assert stats.error is None
        assert await hub.sync.pending(CONNECTOR, due_only=False) == 0  # nothing left queued
        upserts = [
            c
            for c in emulator.calls_of("batch-part")
            if c.path.startswith("/cxhub_surveyresponses") and c.status < 300
        ]
        assert len(upserts) == 2  # written again after the kill
        [entry] = emulator.rows("cxhub_surveyresponse")
        assert entry["activityid"] == written["activityid"]
        [(party, table, mask)] = _party_of(emulator, entry["activityid"])
        assert (table, mask) == ("contact", CUSTOMER)
        assert [a["activityid"] for a in emulator.timeline(party)] == [entry["activityid"]]
        assert len(emulator.rows("activityparty")) == 1
    finally:
        await hub.close()


@pytest.mark.asyncio
async def test_won_opportunity_feedback_goes_to_the_opportunity(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    owner, contact, _ = seed_case(emulator)
    opportunity = emulator.add("opportunity", name="Renewal", parentcontactid=contact, ownerid=owner)
    emulator.update("opportunity", opportunity, statecode=1)
    [event] = (
        await connector.parse_webhook(webhook(emulator, "WinOpportunity", "opportunity", opportunity))
    ).events
    batch = [
        timeline_item(1, contact, event.record_id, "r-9"),
        feedback_item(2, event.record_id, "r-9", note=True),
        feedback_item(3, event.record_id, "r-10", note=False),
    ]
    results = await connector.write_back(batch)
    assert [r.status for r in sorted(results, key=lambda r: r.item_id)] == ["ok", "ok", "ok"]
    [entry] = emulator.rows("cxhub_surveyresponse")
    assert (entry["_regardingobjectid_value"], entry["_regardingobjectid_table"]) == (
        opportunity,
        "opportunity",
    )
    assert _party_of(emulator, entry["activityid"]) == [(contact, "contact", CUSTOMER)]
    assert [a["activityid"] for a in emulator.timeline(contact)] == [entry["activityid"]]
    [note] = emulator.rows("annotation")
    assert (note["_objectid_value"], note["_objectid_table"]) == (opportunity, "opportunity")
    assert not any(c.path.startswith("/incidents") for c in emulator.calls_of("batch-part"))


@pytest.mark.asyncio
async def test_a_batch_the_sync_claims_fills_one_whole_batch_request(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    """The sync hands the connector ``batch_size`` items of one kind at a time: as many as one ``$batch``
    holds, so 10,000 activities take 10 requests, not 20 half-full ones."""
    assert connector.batch_size == connector.settings.max_batch_requests == 1000
    contact = seed_case(emulator)[1]
    batch = [
        timeline_item(n + 1, contact, None, f"00000000-0000-4000-8000-{n:012d}")
        for n in range(connector.batch_size)
    ]
    results = await connector.write_back(batch)
    assert [r.status for r in results] == ["ok"] * len(batch)
    assert [c.path for c in emulator.calls_of("api") if c.method == "POST"] == ["/$batch"]
    assert len(emulator.rows("cxhub_surveyresponse")) == len(batch)
