"""Write-back packed into Composite requests, and the emulator's Composite resource as strict as Salesforce's.

A batch of 1,000 records goes as five sObject Collections subrequests of one Composite request: one API call
where plain Collections took five. Every item must still get its own record's result (saved, refused for
good, or to be retried), a Composite turned away must leave the run waiting as Salesforce asked, and the
emulator must refuse what Salesforce refuses: more than 25 subrequests, more than 5 of them Collections or
queries, more than 200 records in a Collections subrequest, a referenceId of other characters, a bad token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import requests
from hub_salesforce.client import UPDATE, RecordError, SalesforceClient, upsert_collection
from hub_salesforce.connector import SalesforceConnector
from hub_salesforce.emulator import SalesforceEmulator, TlsServer
from salesforce_support import make_connector, make_settings
from test_salesforce_bulk import by_response_id, contacts, summary_item, timeline_item
from test_salesforce_notes_and_roles import answer, closed_case

from hub import TransientError, WriteBackItem, WriteBackResult

VERSION = "v59.0"


@pytest.fixture
async def logged_in(connector: SalesforceConnector) -> SalesforceConnector:
    """The connector after its login, so the counts below are write-back calls only."""
    await connector.client.connect()
    return connector


def composites(emulator: SalesforceEmulator) -> list[Any]:
    return emulator.calls_to("POST", "/composite")


def answers(emulator: SalesforceEmulator, count: int) -> list[WriteBackItem]:
    """``count`` timeline entries of ten contacts."""
    people = contacts(emulator, 10)
    return [timeline_item(n + 1, people[n % 10], f"resp-{n}", "ok") for n in range(count)]


def statuses(results: list[WriteBackResult]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for result in results:
        grouped.setdefault(result.status, []).append(result.item_id)
    return grouped


# --- the connector: 1,000 records a call, one result per item ---------------------------------------------


async def test_a_batch_of_1000_summaries_is_one_api_call_and_each_item_gets_its_own_result(
    logged_in: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    people = contacts(emulator, 1000)
    deleted = {people[5], people[805]}  # in the first and the fifth subrequest
    for contact in deleted:
        del emulator.org.records["Contact"][contact]
    emulator.lock_records(people[300], people[999])  # another transaction holds these rows
    items = [summary_item(n + 1, contact, rating=7, comment=f"c{n}") for n, contact in enumerate(people)]
    used = emulator.api_used

    results = await logged_in.write_back(items)

    assert emulator.api_used == used + 1, "1,000 records, one API call"
    (call,) = composites(emulator)
    assert call.body["allOrNone"] is False
    parts = call.body["compositeRequest"]
    assert [(p["method"], p["url"]) for p in parts] == [
        ("PATCH", f"/services/data/{VERSION}/composite/sobjects")
    ] * 5
    assert [len(p["body"]["records"]) for p in parts] == [200] * 5
    assert all(p["body"]["allOrNone"] is False for p in parts)
    assert [r.item_id for r in results] == [i.id for i in items]
    by_status = statuses(results)
    assert by_status["failed"] == [6, 806]
    assert by_status["transient"] == [301, 1000]
    assert len(by_status["ok"]) == 996
    failed = {r.item_id: r.error for r in results if r.status == "failed"}
    assert all("ENTITY_IS_DELETED" in str(error) for error in failed.values())
    stored = emulator.org.records["Contact"]
    assert stored[people[0]]["CXHub_Latest_Comment__c"] == "c0"
    assert stored[people[998]]["CXHub_Latest_Comment__c"] == "c998"
    assert stored[people[300]]["CXHub_Latest_Comment__c"] is None, "a locked row is left for the retry"

    retry = await logged_in.write_back([items[300], items[999]])
    assert [r.status for r in retry] == ["ok", "ok"]
    assert emulator.calls_to("PATCH", "/composite/sobjects"), "two records need no Composite request"
    assert stored[people[300]]["CXHub_Latest_Comment__c"] == "c300"


async def test_timeline_upserts_pack_into_one_call_and_a_resend_updates_instead_of_adding(
    logged_in: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    items = answers(emulator, 1000)
    assert [r.status for r in await logged_in.write_back(items)] == ["ok"] * 1000
    assert [r.status for r in await logged_in.write_back(items)] == ["ok"] * 1000
    calls = composites(emulator)
    assert len(calls) == 2
    url = f"/services/data/{VERSION}/composite/sobjects/Survey_Response__c/Response_Id__c"
    assert {p["url"] for p in calls[0].body["compositeRequest"]} == {url}
    assert len(by_response_id(emulator)) == 1000, "every answer once, whatever was sent twice"


async def test_a_composite_turned_away_sends_nothing_and_the_run_waits_as_told(
    logged_in: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    items = answers(emulator, 600)
    emulator.fail_next(1, 429, retry_after=42, methods={"POST"})

    with pytest.raises(TransientError) as stopped:
        await logged_in.write_back(items)

    assert stopped.value.retry_after == 42
    assert stopped.value.sent is False, "a 429 was turned away unread: no attempt is counted"
    assert emulator.records("Survey_Response__c") == []


async def test_when_salesforce_fails_after_a_composite_got_through_what_it_saved_stays_saved(
    logged_in: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    items = answers(emulator, 1200)
    # 1,000 records go as one Composite (POST); the last 200 as a plain Collections call (PATCH), which fails
    emulator.fail_next(1, 503, retry_after=5, methods={"PATCH"})

    results = await logged_in.write_back(items)

    assert [r.status for r in results[:1000]] == ["ok"] * 1000
    waiting = results[1000:]
    assert {r.status for r in waiting} == {"transient"}
    assert {r.retry_after for r in waiting} == {5}
    assert len(emulator.records("Survey_Response__c")) == 1000


async def test_the_calls_after_a_failed_one_count_no_attempt(
    server: TlsServer, app_keys: tuple[str, str], emulator: SalesforceEmulator
) -> None:
    items = answers(emulator, 2100)
    # Bulk off: 1,000 + 1,000 records as two Composite requests (the second fails), then 100 as a plain call
    connector = make_connector(make_settings(server, app_keys[0], emulator, bulk_threshold=0))
    emulator.fail_next(1, 503, methods={"POST"}, skip=1)
    try:
        results = await connector.write_back(items)
    finally:
        await connector.aclose()

    assert {r.status for r in results[:1000]} == {"ok"}
    assert {(r.status, r.sent) for r in results[1000:2000]} == {("transient", True)}, "may have been applied"
    assert {(r.status, r.sent) for r in results[2000:]} == {("transient", False)}, "never sent"
    assert emulator.calls_to("PATCH", "/composite/sobjects") == [], "nothing sent after the failure"
    assert len(emulator.records("Survey_Response__c")) == 1000


async def test_a_collections_part_refused_as_a_whole_fails_its_own_records_only(
    logged_in: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    people = contacts(emulator, 30)
    client: SalesforceClient = logged_in.client

    def update(contact: str, rating: int, **extra: Any) -> dict[str, Any]:
        return {"attributes": {"type": "Contact"}, "id": contact, "CXHub_Latest_Rating__c": rating, **extra}

    parts = [
        [update(c, 1) for c in people[:10]],
        [update(c, 2) for c in people[10:19]] + [update(people[19], 2, Mood__c="calm")],
        [update(c, 3) for c in people[20:]],
    ]
    saved = await client.save_collections(UPDATE, parts)

    assert len(composites(emulator)) == 1
    first, second, third = saved
    assert isinstance(first, list) and all(r.success for r in first)
    assert isinstance(second, RecordError) and second.codes == ["INVALID_FIELD"]
    assert isinstance(third, list) and all(r.success for r in third)
    stored = emulator.org.records["Contact"]
    assert [stored[c]["CXHub_Latest_Rating__c"] for c in (people[0], people[10], people[29])] == [1, None, 3]


@pytest.fixture
async def noting(
    server: TlsServer, emulator: SalesforceEmulator, app_keys: tuple[str, str]
) -> AsyncIterator[SalesforceConnector]:
    """A logged-in connector adding the internal comment and a post on the Case's feed."""
    connector = make_connector(make_settings(server, app_keys[0], emulator, case={"chatter_post": "case"}))
    await connector.client.connect()
    yield connector
    await connector.aclose()


async def test_1000_cases_with_notes_read_their_markers_in_one_call_and_are_noted_once(
    noting: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    pairs = [closed_case(emulator, n) for n in range(1000)]
    noted_before = {pairs[7][0], pairs[650][0]}  # an earlier attempt noted these two already
    for n in (7, 650):
        emulator.org.records["Case"][pairs[n][0]]["CXHub_Response_Id__c"] = f"resp-{n}+comment"
    used = emulator.api_used

    results = await noting.write_back([answer(case, n) for n, (case, _) in enumerate(pairs)])

    assert {r.status for r in results} == {"ok"}
    calls = composites(emulator)
    queries = [p for p in calls[0].body["compositeRequest"] if p["method"] == "GET"]
    assert len(queries) == 5, "the markers of 1,000 cases: five queries of 200 in one call"
    # that call, one Composite call per 200 cases still to note, one plain update of the two noted before
    assert emulator.api_used - used == 1 + 5 + 1
    (plain,) = emulator.calls_to("PATCH", "/composite/sobjects")
    assert {r["id"] for r in plain.body["records"]} == noted_before
    comments = [c["ParentId"] for c in emulator.records("CaseComment")]
    assert len(comments) == 998 and set(comments).isdisjoint(noted_before)
    assert len({p["ParentId"] for p in emulator.records("FeedItem")}) == 998


# --- the emulator's Composite resource: strict, one API call ----------------------------------------------


def collection(
    reference: str, records: list[dict[str, Any]], path: str = "composite/sobjects"
) -> dict[str, Any]:
    return {
        "method": "PATCH",
        "url": f"/services/data/{VERSION}/{path}",
        "referenceId": reference,
        "body": {"allOrNone": False, "records": records},
    }


async def _post(client: SalesforceClient, body: dict[str, Any]) -> dict[str, Any]:
    reply = await client.call(lambda sf: sf.restful("composite", method="POST", json=body), "composite")
    assert isinstance(reply, dict)
    return reply


async def test_five_collections_of_200_are_one_api_call_and_a_sixth_is_refused_whole(
    logged_in: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    people = contacts(emulator, 1000)
    records = [{"attributes": {"type": "Contact"}, "id": c, "CXHub_Latest_Rating__c": 8} for c in people]
    five = [collection(f"p{n}", records[n * 200 : (n + 1) * 200]) for n in range(5)]
    used = emulator.api_used
    reply = await _post(logged_in.client, {"allOrNone": False, "compositeRequest": five})
    assert emulator.api_used == used + 1
    assert [r["httpStatusCode"] for r in reply["compositeResponse"]] == [200] * 5
    assert all(len(r["body"]) == 200 for r in reply["compositeResponse"])

    for record in records:
        record["CXHub_Latest_Rating__c"] = 2
    six = [*five, collection("p5", records[:1])]
    with pytest.raises(RecordError) as refused:
        await _post(logged_in.client, {"compositeRequest": six})
    assert refused.value.status == 400 and refused.value.codes == ["LIMIT_EXCEEDED"]
    query = {
        "method": "GET",
        "url": f"/services/data/{VERSION}/query/?q=SELECT+Id+FROM+Contact",
        "referenceId": "q",
    }
    with pytest.raises(RecordError) as mixed:
        await _post(logged_in.client, {"compositeRequest": [*five, query]})
    assert mixed.value.codes == ["LIMIT_EXCEEDED"], "queries and Collections share the limit of five"
    assert {r["CXHub_Latest_Rating__c"] for r in emulator.records("Contact")} == {8}, "nothing of them ran"


async def test_a_collections_subrequest_over_200_records_is_refused_alone(
    logged_in: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    people = contacts(emulator, 202)
    records = [{"attributes": {"type": "Contact"}, "id": c, "CXHub_Latest_Rating__c": 5} for c in people]
    reply = await _post(
        logged_in.client,
        {
            "allOrNone": False,
            "compositeRequest": [collection("big", records[:201]), collection("small", records[201:])],
        },
    )
    big, small = reply["compositeResponse"]
    assert big["httpStatusCode"] == 400 and big["body"][0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert small["httpStatusCode"] == 200 and small["body"][0]["success"] is True
    rated = [c for c in people if emulator.org.records["Contact"][c]["CXHub_Latest_Rating__c"] == 5]
    assert rated == [people[201]]


@pytest.mark.parametrize("reference", ["has-dash", "has space", "", None, 7])
async def test_a_reference_id_of_other_characters_refuses_the_whole_request(
    logged_in: SalesforceConnector, emulator: SalesforceEmulator, reference: object
) -> None:
    contact = contacts(emulator, 1)[0]
    good = collection(
        "good", [{"attributes": {"type": "Contact"}, "id": contact, "CXHub_Latest_Rating__c": 3}]
    )
    bad = {**good, "referenceId": reference}
    if reference is None:
        del bad["referenceId"]
    with pytest.raises(RecordError) as refused:
        await _post(logged_in.client, {"compositeRequest": [good, bad]})
    assert refused.value.status == 400 and refused.value.codes == ["INVALID_API_INPUT"]
    assert emulator.org.records["Contact"][contact]["CXHub_Latest_Rating__c"] is None


async def test_a_composite_with_a_bad_token_is_refused_unread_and_costs_no_api_call(
    server: TlsServer, logged_in: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    contact = contacts(emulator, 1)[0]
    body = {
        "compositeRequest": [
            collection("c", [{"attributes": {"type": "Contact"}, "id": contact, "CXHub_Latest_Rating__c": 1}])
        ]
    }
    used = emulator.api_used
    reply = requests.post(
        f"{logged_in.client.instance_url}/services/data/{VERSION}/composite",
        json=body,
        headers={"Authorization": "Bearer not-a-session"},
        verify=server.ca_file,
        timeout=10,
    )
    assert reply.status_code == 401
    assert reply.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID", "fields": []}
    ]
    assert emulator.api_used == used
    assert emulator.org.records["Contact"][contact]["CXHub_Latest_Rating__c"] is None


async def test_upsert_parts_of_other_objects_cannot_share_one_path(
    logged_in: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    """An upsert subrequest takes records of the object its url names, as a plain upsert call does."""
    contact = contacts(emulator, 1)[0]
    upsert = upsert_collection("Survey_Response__c", "Response_Id__c")
    saved = await logged_in.client.save_collections(
        upsert,
        [
            [{"attributes": {"type": "Survey_Response__c"}, "Response_Id__c": "a", "Contact__c": contact}],
            [{"attributes": {"type": "Contact"}, "Response_Id__c": "b"}],
        ],
    )
    assert isinstance(saved[0], list) and saved[0][0].success
    assert isinstance(saved[1], RecordError) and saved[1].codes == ["INVALID_TYPE"]
    assert list(by_response_id(emulator)) == ["a"]
