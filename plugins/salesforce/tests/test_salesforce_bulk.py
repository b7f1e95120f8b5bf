"""Full re-syncs through Bulk API 2.0, and the emulator's Bulk and Composite resources, over real HTTPS.

A full re-sync hands the connector thousands of items of one kind: they must cost a handful of API calls
(one ingest job) instead of one sObject Collections call per 200, be written exactly once, arrive byte for
byte, and still come back with one exact result per item.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hub_salesforce.bulk import PollPolicy, build_csv, parse_results
from hub_salesforce.client import RecordError, SalesforceClient
from hub_salesforce.connector import SalesforceConnector
from hub_salesforce.emulator import Call, SalesforceEmulator, TlsServer
from salesforce_support import SalesforceHarness, make_connector, make_settings
from sqlalchemy import insert, select

from hub import (
    CaseFeedback,
    NpsCategory,
    PersonSummary,
    SurveyKind,
    TimelineEntry,
    TransientError,
    WriteBackItem,
)
from hub.store.tables import WriteBack
from hub.testing import build_hub
from hub.testing.harness import CONNECTOR

#: polls without the production waits: the emulator still answers InProgress a few times first
FAST = PollPolicy(first_seconds=0.01, factor=2.0, max_seconds=0.05, timeout_seconds=20.0)
ANSWERED = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)

#: comments that break naive CSV: quotes, delimiters, line breaks of both kinds, padding, non-ASCII
TRICKY = [
    "Blåbærsyltetøy på Ærø, og så kom Åse 🫐",
    'She said "fine", then left',
    "line one\nline two\r\nline three\rend",
    "  padded, with spaces  ",
    "👍🏽 👨\u200d👩\u200d👧 ✨",
    "semi;colon|pipe\ttab`back^caret",
    '""',
    'ends with a quote"',
    "Zürich – naïve café, 1,5 stars",
    "\nstarts with a line break",
]


def timeline_item(item_id: int, contact: str, response_id: str, comment: str | None) -> WriteBackItem:
    return WriteBackItem(
        id=item_id,
        key=f"timeline:{response_id}",
        record_id=contact,
        payload=TimelineEntry(
            response_id=response_id,
            campaign="support",
            survey_kind=SurveyKind.NPS,
            rating=item_id % 11,
            score=(item_id % 11) * 10,
            category=NpsCategory.PROMOTER,
            comment=comment,
            answered_at=ANSWERED + timedelta(seconds=item_id),
            channel="email",
            case_id=None,
            language="nb",
        ),
    )


def summary_item(item_id: int, contact: str, rating: int, comment: str | None) -> WriteBackItem:
    return WriteBackItem(
        id=item_id,
        key=f"summary:{contact}",
        record_id=contact,
        payload=PersonSummary(
            latest_rating=rating,
            latest_score=rating * 10,
            latest_category=NpsCategory.PASSIVE,
            latest_date=ANSWERED,
            latest_comment=comment,
            average_rating=rating,
            average_rating_30_days=None,
            average_score=rating * 10,
            count=3,
        ),
    )


def contacts(emulator: SalesforceEmulator, count: int) -> list[str]:
    return [
        emulator.add_contact("Kari", f"Nordmann{n}", email=f"kari.{n}@nordlys.example") for n in range(count)
    ]


def by_response_id(emulator: SalesforceEmulator) -> dict[str, dict[str, Any]]:
    return {r["Response_Id__c"]: r for r in emulator.records("Survey_Response__c")}


def new_calls(emulator: SalesforceEmulator, since: int) -> list[Call]:
    return emulator.calls[since:]


def bulk_calls(calls: list[Call]) -> list[Call]:
    return [c for c in calls if "/jobs/ingest" in c.path]


def collection_calls(calls: list[Call]) -> list[Call]:
    """sObject Collections calls, plain or packed as the subrequests of one Composite request."""
    return [c for c in calls if c.path.startswith("/composite/sobjects") or c.path == "/composite"]


@pytest.fixture
async def fast_connector(connector: SalesforceConnector) -> SalesforceConnector:
    """The connector with quick Bulk polling; logged in, so login calls do not mix with the counts."""
    connector._writer.bulk.policy = FAST
    await connector.client.connect()
    return connector


@pytest.fixture
def small_threshold(
    server: TlsServer, app_keys: tuple[str, str], emulator: SalesforceEmulator
) -> Iterator[SalesforceConnector]:
    """A connector that goes Bulk from 50 records, so the switch-over can be tested with small batches."""
    connector = make_connector(make_settings(server, app_keys[0], emulator, bulk_threshold=50))
    connector._writer.bulk.policy = FAST
    yield connector


@pytest.fixture
async def small(small_threshold: SalesforceConnector) -> AsyncIterator[SalesforceConnector]:
    await small_threshold.client.connect()
    yield small_threshold
    await small_threshold.aclose()


# --- the connector ---------------------------------------------------------------------------------


async def test_full_resync_of_5000_timeline_entries_is_one_bulk_job_written_exactly_once(
    fast_connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    people = contacts(emulator, 1000)
    items = [
        timeline_item(n + 1, people[n // 5], f"resp-{n:05d}", None if n == 7 else TRICKY[n % len(TRICKY)])
        for n in range(5000)
    ]
    since, used = len(emulator.calls), emulator.api_used

    results = await fast_connector.write_back(items)

    assert [r.status for r in results] == ["ok"] * 5000
    calls = new_calls(emulator, since)
    assert collection_calls(calls) == [], "a re-sync of 5,000 records must not go 200 at a time"
    assert len(calls) == len(bulk_calls(calls)) <= 8, [(c.method, c.path) for c in calls]
    assert math.ceil(5000 / 200) == 25  # what Collections would have cost
    assert len(emulator.calls_to("POST", "/jobs/ingest")) == 1
    assert len(emulator.calls_to("PUT", "/batches")) == 1
    assert emulator.api_used - used == len(calls), "every Bulk call counts against the org's allowance"
    written = by_response_id(emulator)
    assert len(written) == 5000
    for item, result in zip(items, results, strict=True):
        entry = item.payload
        assert isinstance(entry, TimelineEntry)
        record = written[entry.response_id]
        assert result.remote_id == record["Id"]
        assert record["Contact__c"] == item.record_id
        assert record["Rating__c"] == entry.rating
        if entry.comment is None:
            assert record["Comment__c"] is None
        else:
            assert record["Comment__c"].encode("utf-8") == entry.comment.encode("utf-8")

    # the same re-sync again (a crash, an admin pressing the button twice): updated, never duplicated
    again = await fast_connector.write_back(items)
    assert [r.status for r in again] == ["ok"] * 5000
    assert [r.remote_id for r in again] == [r.remote_id for r in results]
    assert len(emulator.records("Survey_Response__c")) == 5000
    assert len(emulator.calls_to("POST", "/jobs/ingest")) == 2


async def test_below_the_threshold_collections_are_used_and_from_it_one_job(
    small: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    people = contacts(emulator, 50)
    since = len(emulator.calls)
    results = await small.write_back([timeline_item(n + 1, people[n], f"r-{n}", "ok") for n in range(49)])
    assert [r.status for r in results] == ["ok"] * 49
    calls = new_calls(emulator, since)
    assert bulk_calls(calls) == [] and len(collection_calls(calls)) == 1

    since = len(emulator.calls)
    results = await small.write_back([timeline_item(n + 1, people[n], f"s-{n}", "ok") for n in range(50)])
    assert [r.status for r in results] == ["ok"] * 50
    calls = new_calls(emulator, since)
    assert collection_calls(calls) == [] and len(emulator.calls_to("POST", "/jobs/ingest")) == 1
    assert len(emulator.records("Survey_Response__c")) == 99


async def test_bulk_threshold_zero_never_uses_bulk(
    server: TlsServer, app_keys: tuple[str, str], emulator: SalesforceEmulator
) -> None:
    connector = make_connector(make_settings(server, app_keys[0], emulator, bulk_threshold=0))
    try:
        people = contacts(emulator, 10)
        items = [timeline_item(n + 1, people[n % 10], f"r-{n}", "x") for n in range(450)]
        assert [r.status for r in await connector.write_back(items)] == ["ok"] * 450
    finally:
        await connector.aclose()
    assert emulator.calls_to("POST", "/jobs/ingest") == []
    (composite,) = emulator.calls_to("POST", "/composite")
    parts = composite.body["compositeRequest"]
    assert [len(part["body"]["records"]) for part in parts] == [200, 200, 50]
    assert emulator.calls_to("PATCH", "/composite/sobjects") == []


async def test_rows_refused_in_a_job_fail_exactly_their_items(
    small: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    people = contacts(emulator, 60)
    gone = {people[3], people[40]}
    for contact in gone:
        del emulator.org.records["Contact"][contact]
    timeline = [timeline_item(n + 1, people[n], f"r-{n}", f"comment {n}") for n in range(60)]
    results = await small.write_back(timeline)
    failed = {r.item_id for r in results if r.status == "failed"}
    assert failed == {i.id for i in timeline if i.record_id in gone}
    assert all(r.status == "ok" for r in results if r.item_id not in failed)
    assert all("FIELD_INTEGRITY_EXCEPTION" in (r.error or "") for r in results if r.status == "failed")
    assert len(emulator.records("Survey_Response__c")) == 58

    emulator.org.records["Contact"][people[2]].update(
        CXHub_Latest_Comment__c="old", CXHub_Average_Rating_30d__c=5.0
    )
    summaries = [summary_item(100 + n, people[n], 7, "fine, really" if n % 2 else None) for n in range(60)]
    results = await small.write_back(summaries)
    assert {r.item_id for r in results if r.status == "failed"} == {
        i.id for i in summaries if i.record_id in gone
    }
    assert all("ENTITY_IS_DELETED" in (r.error or "") for r in results if r.status == "failed")
    assert len(emulator.calls_to("POST", "/jobs/ingest")) == 2
    contact = emulator.org.records["Contact"][people[1]]
    assert contact["CXHub_Latest_Rating__c"] == 7 and contact["CXHub_Latest_Comment__c"] == "fine, really"
    assert emulator.org.records["Contact"][people[2]]["CXHub_Latest_Comment__c"] is None  # #N/A: null
    assert emulator.org.records["Contact"][people[2]]["CXHub_Average_Rating_30d__c"] is None


async def test_a_job_that_fails_is_retried_as_transient_and_written_once(
    small: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    people = contacts(emulator, 100)
    items = [timeline_item(n + 1, people[n], f"r-{n}", "x") for n in range(100)]

    emulator.bulk.fail_next_jobs(1, "InternalServerError : the batch was retried too often")
    with pytest.raises(TransientError) as failed:
        await small.write_back(items)
    job = small._writer.bulk.jobs[-1]
    assert job in str(failed.value) and "Failed" in str(failed.value)
    assert emulator.records("Survey_Response__c") == []

    # a job that fails half way: what it wrote is ok, the rows it never reached are retried
    emulator.bulk.fail_next_jobs(1, "InternalServerError : gave up", after_rows=30)
    results = await small.write_back(items)
    assert [r.status for r in results] == ["ok"] * 30 + ["transient"] * 70
    assert all("not processed" in (r.error or "") for r in results[30:])
    assert len(emulator.records("Survey_Response__c")) == 30

    results = await small.write_back(items)
    assert [r.status for r in results] == ["ok"] * 100
    assert len(emulator.records("Survey_Response__c")) == 100


async def test_a_job_failed_by_its_data_fails_its_items_at_once_instead_of_retrying_forever(
    small: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    """A field the org lacks fails the job as InvalidBatch: sending the same data again would fail alike."""
    people = contacts(emulator, 100)
    items = [timeline_item(n + 1, people[n], f"r-{n}", "x") for n in range(100)]
    emulator.drop_field("Survey_Response__c", "Channel__c")
    results = await small.write_back(items)
    assert [r.status for r in results] == ["failed"] * 100
    assert all("InvalidBatch : Field name not found : Channel__c" in (r.error or "") for r in results)
    assert len(emulator.calls_to("POST", "/jobs/ingest")) == 1, "one job, not one per retry"
    assert emulator.records("Survey_Response__c") == []


async def test_a_job_still_running_at_the_timeout_is_aborted_and_retried(
    small: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    people = contacts(emulator, 50)
    items = [timeline_item(n + 1, people[n], f"r-{n}", "x") for n in range(50)]
    small._writer.bulk.policy = PollPolicy(first_seconds=0.01, max_seconds=0.05, timeout_seconds=0.3)
    emulator.bulk.polls_to_finish = 10_000
    with pytest.raises(TransientError) as late:
        await small.write_back(items)
    job = small._writer.bulk.jobs[-1]
    assert job in str(late.value)
    assert emulator.bulk.jobs[job].state == "Aborted"
    polls = emulator.calls_to("GET", f"/jobs/ingest/{job}")
    assert 2 <= len(polls) < 30, "the waits between polls must grow"
    assert emulator.records("Survey_Response__c") == []


async def test_a_session_expiring_during_a_job_is_renewed_once(
    small: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    people = contacts(emulator, 50)
    items = [timeline_item(n + 1, people[n], f"r-{n}", "x") for n in range(50)]
    emulator.expire_sessions(after_calls=2)  # create and upload pass, the close finds the session gone
    results = await small.write_back(items)
    assert [r.status for r in results] == ["ok"] * 50
    assert small.client.logins == 2
    assert len(emulator.calls_to("POST", "/jobs/ingest")) == 1
    assert len(emulator.records("Survey_Response__c")) == 50


async def test_full_resync_through_the_hub_takes_one_bulk_job_per_kind(
    emulator: SalesforceEmulator, server: TlsServer, harness: SalesforceHarness, tmp_path: Path
) -> None:
    people = contacts(emulator, 500)
    cases = [emulator.add_case(f"Case {n}", people[n % 500]) for n in range(2000)]
    hub = await build_hub(harness, tmp_path, settings=harness.settings())
    try:
        connector = hub.connectors[CONNECTOR]
        assert isinstance(connector, SalesforceConnector) and connector.bulk_batch_size == 10_000
        connector._writer.bulk.policy = FAST
        rows: list[dict[str, Any]] = []
        for n in range(2500):
            entry = timeline_item(n + 1, people[n % 500], f"0000-{n:08d}", TRICKY[n % len(TRICKY)])
            rows.append(
                _row("timeline_entry", entry.key, entry.record_id, entry.payload.model_dump(mode="json"))
            )
        for n, case in enumerate(cases):
            feedback = CaseFeedback(
                response_id=f"0000-{n:08d}",
                rating=9,
                score=90,
                category=NpsCategory.PROMOTER,
                comment=TRICKY[n % len(TRICKY)],
                processed_at=ANSWERED,
            )
            rows.append(_row("case_feedback", f"case:{n}", case, feedback.model_dump(mode="json")))
        async with hub.store.session() as s:
            await s.execute(insert(WriteBack), rows)
        assert await hub.sync.requeue_all(CONNECTOR) == 4500

        since = len(emulator.calls)
        stats = await hub.sync.run(CONNECTOR, kind="full")

        assert stats.written == 4500 and stats.error is None, stats
        calls = new_calls(emulator, since)
        assert collection_calls(calls) == []
        created = [c for c in calls if c.method == "POST" and c.path == "/jobs/ingest"]
        assert sorted(c.body["object"] for c in created) == ["Case", "Survey_Response__c"]
        assert len(calls) <= 2 * 8 + 2, [(c.method, c.path) for c in calls]
        assert len(emulator.records("Survey_Response__c")) == 2500
        closed = emulator.org.records["Case"]
        assert all(closed[case]["CXHub_Rating__c"] == 9 for case in cases)
        assert closed[cases[2]]["CXHub_Comment__c"] == TRICKY[2]
        async with hub.store.session() as s:
            states = set(await s.scalars(select(WriteBack.state)))
        assert states == {"done"}

        # an ordinary sync of the same items keeps the Collections, 1,000 records (one Composite) a call
        await hub.sync.requeue_all(CONNECTOR)
        jobs = len(emulator.calls_to("POST", "/jobs/ingest"))
        since = len(emulator.calls)
        stats = await hub.sync.run(CONNECTOR)
        assert stats.written == 4500
        assert len(emulator.calls_to("POST", "/jobs/ingest")) == jobs
        assert len(collection_calls(new_calls(emulator, since))) == math.ceil(2500 / 1000) + 2000 // 1000
        assert len(emulator.records("Survey_Response__c")) == 2500
    finally:
        await hub.close()


def _row(kind: str, key: str, record_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A write-back the hub wrote long ago (state done): what ``requeue_all`` re-arms for a full re-sync."""
    return {
        "connector": CONNECTOR,
        "kind": kind,
        "key": key,
        "record_id": record_id,
        "person_record_id": record_id if kind == "timeline_entry" else None,
        "payload": payload,
        "state": "done",
    }


# --- the emulator's Bulk API 2.0 --------------------------------------------------------------------


async def _job(client: SalesforceClient, **spec: Any) -> dict[str, Any]:
    reply = await client.request("POST", "jobs/ingest", "create job", json=spec)
    body = reply.json()
    assert isinstance(body, dict)
    return body


async def _run_job(
    client: SalesforceClient, emulator: SalesforceEmulator, data: bytes, **spec: Any
) -> dict[str, Any]:
    """Create, upload, close and poll a job to its end; the final job info."""
    emulator.bulk.polls_to_finish = 0
    job = await _job(client, contentType="CSV", lineEnding="LF", **spec)
    await client.request(
        "PUT", f"jobs/ingest/{job['id']}/batches", "upload", data=data, content_type="text/csv"
    )
    closed = (
        await client.request("PATCH", f"jobs/ingest/{job['id']}", "close", json={"state": "UploadComplete"})
    ).json()
    assert closed["state"] == "UploadComplete"
    info = (await client.request("GET", f"jobs/ingest/{job['id']}", "poll")).json()
    assert isinstance(info, dict)
    return info


async def test_emulator_refuses_an_upsert_job_without_external_id_and_unknown_objects(
    fast_connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    client = fast_connector.client
    with pytest.raises(RecordError) as no_key:
        await _job(client, object="Survey_Response__c", operation="upsert")
    assert no_key.value.codes == ["INVALIDJOB"] and "External ID was blank" in str(no_key.value)
    with pytest.raises(RecordError) as not_external:
        await _job(client, object="Survey_Response__c", operation="upsert", externalIdFieldName="Comment__c")
    assert not_external.value.codes == ["INVALIDJOB"]
    with pytest.raises(RecordError) as unknown:
        await _job(client, object="Survey_Answer__c", operation="insert")
    assert unknown.value.codes == ["INVALIDJOB"] and "Survey_Answer__c" in str(unknown.value)
    with pytest.raises(RecordError) as operation:
        await _job(client, object="Contact", operation="merge")
    assert operation.value.codes == ["INVALIDJOB"]
    with pytest.raises(RecordError) as content:
        await _job(client, object="Contact", operation="insert", contentType="JSON")
    assert content.value.codes == ["INVALIDJOB"]
    with pytest.raises(RecordError) as extra:
        await _job(client, object="Contact", operation="insert", priority="high")
    assert extra.value.codes == ["JSON_PARSER_ERROR"]
    assert emulator.bulk.jobs == {}
    job = await _job(
        client, object="Survey_Response__c", operation="upsert", externalIdFieldName="Response_Id__c"
    )
    assert job["state"] == "Open" and job["externalIdFieldName"] == "Response_Id__c"
    assert job["contentUrl"] == f"services/data/v59.0/jobs/ingest/{job['id']}/batches"


async def test_emulator_takes_one_upload_only_while_the_job_is_open(
    fast_connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    client = fast_connector.client
    job = (await _job(client, object="Contact", operation="insert"))["id"]
    with pytest.raises(RecordError) as media:
        await client.request(
            "PUT", f"jobs/ingest/{job}/batches", "upload", data=b"LastName\nBerg\n", content_type="text/plain"
        )
    assert media.value.status == 415
    await client.request(
        "PUT", f"jobs/ingest/{job}/batches", "upload", data=b"LastName\nBerg\n", content_type="text/csv"
    )
    with pytest.raises(RecordError) as twice:
        await client.request(
            "PUT", f"jobs/ingest/{job}/batches", "upload", data=b"LastName\nDahl\n", content_type="text/csv"
        )
    assert twice.value.codes == ["BULK_API_ERROR"]
    with pytest.raises(RecordError) as early:
        await client.request("GET", f"jobs/ingest/{job}/successfulResults/", "results", accept="text/csv")
    assert early.value.codes == ["INVALIDJOBSTATE"]
    with pytest.raises(RecordError) as delete_open:
        await client.request("DELETE", f"jobs/ingest/{job}", "delete")
    assert delete_open.value.codes == ["INVALIDJOBSTATE"]
    await client.request("PATCH", f"jobs/ingest/{job}", "close", json={"state": "UploadComplete"})
    with pytest.raises(RecordError) as closed:
        await client.request(
            "PUT", f"jobs/ingest/{job}/batches", "upload", data=b"LastName\nDahl\n", content_type="text/csv"
        )
    assert closed.value.codes == ["INVALIDJOBSTATE"]
    with pytest.raises(RecordError) as reopen:
        await client.request("PATCH", f"jobs/ingest/{job}", "reopen", json={"state": "Open"})
    assert reopen.value.codes == ["INVALIDJOBSTATE"]
    states = []
    for _ in range(emulator.bulk.polls_to_finish + 1):
        states.append((await client.request("GET", f"jobs/ingest/{job}", "poll")).json()["state"])
    assert states == ["InProgress"] * emulator.bulk.polls_to_finish + ["JobComplete"]
    assert [r["LastName"] for r in emulator.records("Contact")] == ["Berg"]
    await client.request("DELETE", f"jobs/ingest/{job}", "delete")
    with pytest.raises(RecordError) as gone:
        await client.request("GET", f"jobs/ingest/{job}", "poll")
    assert gone.value.status == 404


async def test_emulator_fails_a_job_with_an_unknown_column_and_writes_nothing(
    fast_connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    contact = emulator.add_contact("Eva", "Holm")
    data = f"Id,CXHub_Latest_Rating__c,Mood__c\n{contact},9,glad\n".encode()
    info = await _run_job(fast_connector.client, emulator, data, object="Contact", operation="update")
    assert info["state"] == "Failed"
    assert info["errorMessage"] == "InvalidBatch : Field name not found : Mood__c"
    assert info["numberRecordsProcessed"] == 0
    assert emulator.org.records["Contact"][contact]["CXHub_Latest_Rating__c"] is None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"LastName,FirstName\r\nBerg,Eva\r\n", "LineEnding is invalid"),
        (b'LastName,FirstName\nBerg, "Eva"\n', "double quote inside an unquoted value"),
        (b'LastName,FirstName\n"Berg"x,Eva\n', "after a closing quote"),
        (b'LastName,FirstName\n"Berg,Eva\n', "unclosed quoted value"),
        (b"LastName,FirstName\nBerg\n", "row 2 has 1 values"),
        ("LastName\nBj\u00f8rg\n".encode("latin-1"), "not UTF-8"),
    ],
)
async def test_emulator_fails_a_job_whose_csv_is_malformed(
    fast_connector: SalesforceConnector, emulator: SalesforceEmulator, data: bytes, problem: str
) -> None:
    info = await _run_job(fast_connector.client, emulator, data, object="Contact", operation="insert")
    assert info["state"] == "Failed" and problem in info["errorMessage"]
    assert emulator.records("Contact") == []


async def test_emulator_results_carry_status_codes_and_the_rows_as_uploaded(
    fast_connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    client = fast_connector.client
    contact = emulator.add_contact("Eva", "Holm")
    emulator.org.create("Survey_Response__c", {"Response_Id__c": "twin", "Contact__c": contact}, system=True)
    emulator.org.create("Survey_Response__c", {"Response_Id__c": "twin", "Contact__c": contact}, system=True)
    rows = [
        {"Response_Id__c": "new", "Contact__c": contact, "Comment__c": 'a "b", c\nd', "Rating__c": 9},
        {"Response_Id__c": "twin", "Contact__c": contact, "Rating__c": 3},
        {"Response_Id__c": "lost", "Contact__c": "0035g0000099999AAA", "Rating__c": 1},
        {"Response_Id__c": "word", "Contact__c": contact, "Rating__c": "nine"},
        {"Response_Id__c": "dup", "Contact__c": contact},
        {"Response_Id__c": "dup", "Contact__c": contact},
    ]
    data = build_csv(["Response_Id__c", "Contact__c", "Comment__c", "Rating__c"], rows)
    used = emulator.api_used
    info = await _run_job(
        client,
        emulator,
        data,
        object="Survey_Response__c",
        operation="upsert",
        externalIdFieldName="Response_Id__c",
    )
    assert info["state"] == "JobComplete"
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (6, 5)
    ok = await client.request("GET", f"jobs/ingest/{info['id']}/successfulResults/", "ok", accept="text/csv")
    assert ok.headers["Content-Type"].startswith("text/csv")
    assert ok.headers["Sforce-Limit-Info"] == f"api-usage={emulator.api_used}/{emulator.daily_limit}"
    assert emulator.api_used == used + 5, "create, upload, close, poll and results each count"
    [success] = parse_results(ok.content)
    assert success["sf__Created"] == "true" and success["Comment__c"] == 'a "b", c\nd'
    assert success["sf__Id"] == next(
        r["Id"] for r in emulator.records("Survey_Response__c") if r["Response_Id__c"] == "new"
    )
    failed = await client.request(
        "GET", f"jobs/ingest/{info['id']}/failedResults/", "failed", accept="text/csv"
    )
    errors = {
        row["Response_Id__c"] + ":" + row["sf__Error"].split(":")[0] for row in parse_results(failed.content)
    }
    assert errors == {
        "twin:DUPLICATE_EXTERNAL_ID",
        "lost:FIELD_INTEGRITY_EXCEPTION",
        "word:INVALID_TYPE_ON_FIELD_IN_RECORD",
        "dup:DUPLICATE_EXTERNAL_ID",
    }
    assert all(row["sf__Error"].endswith("--") for row in parse_results(failed.content))
    unprocessed = await client.request(
        "GET", f"jobs/ingest/{info['id']}/unprocessedrecords/", "left", accept="text/csv"
    )
    assert parse_results(unprocessed.content) == []


async def test_emulator_empty_leaves_a_field_and_na_nulls_it(
    fast_connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    first = emulator.add_contact("Eva", "Holm", CXHub_Latest_Comment__c="kept", CXHub_Latest_Rating__c=5.0)
    second = emulator.add_contact(
        "Ida", "Lund", CXHub_Latest_Comment__c="dropped", CXHub_Latest_Rating__c=5.0
    )
    data = f"Id,CXHub_Latest_Comment__c,CXHub_Latest_Rating__c\n{first},,8\n{second},#N/A,#N/A\n".encode()
    info = await _run_job(fast_connector.client, emulator, data, object="Contact", operation="update")
    assert info["state"] == "JobComplete" and info["numberRecordsFailed"] == 0
    records = emulator.org.records["Contact"]
    assert (records[first]["CXHub_Latest_Comment__c"], records[first]["CXHub_Latest_Rating__c"]) == (
        "kept",
        8.0,
    )
    assert (records[second]["CXHub_Latest_Comment__c"], records[second]["CXHub_Latest_Rating__c"]) == (
        None,
        None,
    )


async def test_a_comment_that_is_literally_na_is_not_turned_into_null(
    small: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    people = contacts(emulator, 60)
    items = [timeline_item(n + 1, people[n], f"r-{n}", "#N/A" if n == 5 else "fine") for n in range(60)]
    results = await small.write_back(items)
    assert [r.status for r in results] == ["ok"] * 60
    assert by_response_id(emulator)["r-5"]["Comment__c"] == "#N/A"
    assert len(emulator.calls_to("POST", "/jobs/ingest")) == 1
    assert len(emulator.calls_to("PATCH", "/composite/sobjects")) == 1


async def test_collections_roll_back_with_all_or_none_only(
    fast_connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    """The Collections handler copies the org only for allOrNone; both modes must still behave."""
    contact = emulator.add_contact("Eva", "Holm")
    records = [
        {"attributes": {"type": "Contact"}, "id": contact, "CXHub_Latest_Rating__c": 4},
        {"attributes": {"type": "Contact"}, "id": "0035g0000099999AAA", "CXHub_Latest_Rating__c": 5},
    ]

    async def send(all_or_none: bool) -> list[dict[str, Any]]:
        body = {"allOrNone": all_or_none, "records": records}
        reply = await fast_connector.client.call(
            lambda sf: sf.restful("composite/sobjects", method="PATCH", json=body), "update"
        )
        assert isinstance(reply, list)
        return reply

    rolled_back = await send(True)
    assert [r["errors"][0]["statusCode"] for r in rolled_back] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "ENTITY_IS_DELETED",
    ]
    assert emulator.org.records["Contact"][contact]["CXHub_Latest_Rating__c"] is None
    partial = await send(False)
    assert [r["success"] for r in partial] == [True, False]
    assert emulator.org.records["Contact"][contact]["CXHub_Latest_Rating__c"] == 4


# --- the emulator's Composite resource --------------------------------------------------------------


async def _composite(connector: SalesforceConnector, body: dict[str, Any]) -> dict[str, Any]:
    reply = await connector.client.call(
        lambda sf: sf.restful("composite", method="POST", json=body), "composite"
    )
    assert isinstance(reply, dict)
    return reply


async def test_composite_references_resolve_in_one_api_call(
    fast_connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    used = emulator.api_used
    reply = await _composite(
        fast_connector,
        {
            "allOrNone": True,
            "compositeRequest": [
                {
                    "method": "POST",
                    "url": "/services/data/v59.0/sobjects/Contact",
                    "referenceId": "newContact",
                    "body": {"LastName": "Åsheim", "Email": "aasheim@nordlys.example"},
                },
                {
                    "method": "POST",
                    "url": "/services/data/v59.0/sobjects/Case",
                    "referenceId": "newCase",
                    "body": {"Subject": "Login for @{newContact.id}", "ContactId": "@{newContact.id}"},
                },
                {
                    "method": "GET",
                    "url": "/services/data/v59.0/query/?q=SELECT+Id,ContactId+FROM+Case+WHERE+Id='@{newCase.id}'",
                    "referenceId": "found",
                },
                {
                    "method": "PATCH",
                    "url": "/services/data/v59.0/sobjects/Contact/@{found.records[0].ContactId}",
                    "referenceId": "renamed",
                    "body": {"FirstName": "Åse"},
                },
            ],
        },
    )
    assert emulator.api_used == used + 1, "a composite request is one API call"
    results = {r["referenceId"]: r for r in reply["compositeResponse"]}
    assert [r["httpStatusCode"] for r in reply["compositeResponse"]] == [201, 201, 200, 204]
    contact_id = results["newContact"]["body"]["id"]
    case_id = results["newCase"]["body"]["id"]
    assert results["newCase"]["httpHeaders"]["Location"] == f"/services/data/v59.0/sobjects/Case/{case_id}"
    case = emulator.org.records["Case"][case_id]
    assert case["ContactId"] == contact_id and case["Subject"] == f"Login for {contact_id}"
    assert results["found"]["body"]["records"][0]["ContactId"] == contact_id
    assert emulator.org.records["Contact"][contact_id]["FirstName"] == "Åse"


async def test_composite_all_or_none_rolls_back_and_halts_the_rest(
    fast_connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    requests = [
        {
            "method": "POST",
            "url": "/services/data/v59.0/sobjects/Contact",
            "referenceId": "a",
            "body": {"LastName": "A"},
        },
        {
            "method": "POST",
            "url": "/services/data/v59.0/sobjects/Contact",
            "referenceId": "b",
            "body": {"Mood__c": "x"},
        },
        {
            "method": "POST",
            "url": "/services/data/v59.0/sobjects/Case",
            "referenceId": "c",
            "body": {"Subject": "s", "ContactId": "@{b.id}"},
        },
        {
            "method": "POST",
            "url": "/services/data/v59.0/sobjects/Contact",
            "referenceId": "d",
            "body": {"LastName": "D"},
        },
    ]
    reply = await _composite(fast_connector, {"allOrNone": True, "compositeRequest": requests})
    codes = [(r["httpStatusCode"], r["body"][0]["errorCode"]) for r in reply["compositeResponse"]]
    assert codes == [
        (400, "PROCESSING_HALTED"),
        (400, "INVALID_FIELD"),
        (400, "PROCESSING_HALTED"),
        (400, "PROCESSING_HALTED"),
    ]
    assert emulator.records("Contact") == [] and emulator.records("Case") == []

    reply = await _composite(fast_connector, {"allOrNone": False, "compositeRequest": requests})
    statuses = [r["httpStatusCode"] for r in reply["compositeResponse"]]
    assert statuses == [201, 400, 400, 201]
    assert reply["compositeResponse"][2]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert sorted(r["LastName"] for r in emulator.records("Contact")) == ["A", "D"]
    assert emulator.records("Case") == []


async def test_composite_refuses_more_than_25_subrequests_or_5_queries(
    fast_connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    create = [
        {
            "method": "POST",
            "url": "/services/data/v59.0/sobjects/Contact",
            "referenceId": f"c{n}",
            "body": {"LastName": f"N{n}"},
        }
        for n in range(26)
    ]
    with pytest.raises(RecordError) as too_many:
        await _composite(fast_connector, {"allOrNone": False, "compositeRequest": create})
    assert too_many.value.codes == ["LIMIT_EXCEEDED"]
    queries = [
        {
            "method": "GET",
            "url": "/services/data/v59.0/query/?q=SELECT+Id+FROM+Contact",
            "referenceId": f"q{n}",
        }
        for n in range(6)
    ]
    with pytest.raises(RecordError) as too_many_queries:
        await _composite(fast_connector, {"compositeRequest": queries})
    assert too_many_queries.value.codes == ["LIMIT_EXCEEDED"]
    with pytest.raises(RecordError) as header:
        await _composite(
            fast_connector,
            {"compositeRequest": [{**create[0], "httpHeaders": {"Authorization": "Bearer stolen"}}]},
        )
    assert header.value.codes == ["INVALID_API_INPUT"]
    with pytest.raises(RecordError) as twice:
        await _composite(
            fast_connector, {"compositeRequest": [create[0], {**create[1], "referenceId": "c0"}]}
        )
    assert twice.value.codes == ["INVALID_API_INPUT"]
    assert emulator.records("Contact") == [], "a refused composite request runs no subrequest"
    reply = await _composite(fast_connector, {"compositeRequest": create[:25]})
    assert [r["httpStatusCode"] for r in reply["compositeResponse"]] == [201] * 25
    assert len(emulator.records("Contact")) == 25
