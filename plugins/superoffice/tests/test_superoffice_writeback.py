"""Writing answers back: what lands in SuperOffice, that a retry never duplicates it, and how failures read."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime
from urllib.parse import unquote_plus

import pytest
from hub_superoffice.client import MAX_QUERY_STRING, RecordError, Slots
from hub_superoffice.connector import SuperOfficeConnector
from hub_superoffice.emulator import BackgroundServer, DemoSeed, SuperOfficeEmulator
from pydantic import SecretStr
from superoffice_support import make_connector, make_settings, present

from hub import (
    AuthError,
    CaseFeedback,
    NpsCategory,
    PersonSummary,
    SurveyKind,
    TimelineEntry,
    WriteBackItem,
)

ANSWERED = datetime(2030, 3, 4, 9, 30, tzinfo=UTC)


def summary_item(
    item_id: int, person_id: int, rating: int = 9, comment: str | None = "Hurtig og venlig hjælp"
) -> WriteBackItem:
    return WriteBackItem(
        id=item_id,
        key=f"summary:{person_id}:{item_id}",
        record_id=str(person_id),
        payload=PersonSummary(
            latest_rating=rating,
            latest_score=rating * 10.0,
            latest_category=NpsCategory.PROMOTER if rating >= 9 else NpsCategory.DETRACTOR,
            latest_date=ANSWERED,
            latest_comment=comment,
            average_rating=8.5,
            average_rating_30_days=None,
            average_score=85.0,
            count=2,
        ),
    )


def timeline_item(
    item_id: int,
    person_id: int,
    response_id: str,
    ticket_id: int | None = None,
    comment: str | None = "Hurtig og venlig hjælp",
) -> WriteBackItem:
    return WriteBackItem(
        id=item_id,
        key=f"timeline:{response_id}",
        record_id=str(person_id),
        payload=TimelineEntry(
            response_id=response_id,
            campaign="support-nps",
            survey_kind=SurveyKind.NPS,
            rating=9,
            score=90.0,
            category=NpsCategory.PROMOTER,
            comment=comment,
            answered_at=ANSWERED,
            channel="email",
            case_id=str(ticket_id) if ticket_id else None,
            language="da",
        ),
    )


def feedback_item(
    item_id: int,
    ticket_id: int,
    response_id: str,
    *,
    note: bool = True,
    status: str | None = None,
    comment: str | None = "Ventede for længe",
) -> WriteBackItem:
    return WriteBackItem(
        id=item_id,
        key=f"feedback:{response_id}",
        record_id=str(ticket_id),
        payload=CaseFeedback(
            response_id=response_id,
            rating=3,
            score=30.0,
            category=NpsCategory.DETRACTOR,
            comment=comment,
            processed_at=ANSWERED,
            set_status=status,
            internal_comment=note,
        ),
    )


async def test_summary_timeline_and_feedback_land_where_configured_and_a_retry_adds_nothing(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    karen, ticket = seed.persons["karen"], seed.tickets["login"]
    batch = [summary_item(1, karen), timeline_item(2, karen, "r-1", ticket), feedback_item(3, ticket, "r-1")]

    first = await connector.write_back(batch)
    again = await connector.write_back(batch)

    assert [(r.item_id, r.status) for r in first] == [(1, "ok"), (2, "ok"), (3, "ok")]
    assert [(r.status, r.remote_id) for r in again] == [(r.status, r.remote_id) for r in first]
    fields = present(emulator.person(karen))["CustomFields"]
    assert fields["x_cxhub_last_rating"] == "9"
    assert fields["x_cxhub_last_category"] == "promoter"
    assert fields["x_cxhub_last_comment"] == "Hurtig og venlig hjælp"
    assert fields["x_cxhub_avg_rating"] == "8.5"
    assert fields["x_cxhub_avg_rating_30d"] == ""
    assert fields["x_cxhub_count"] == "2"
    [activity] = emulator.appointments(karen)
    assert activity["ExtraFields"]["x_cxhub_response_id"] == "timeline:r-1"
    assert activity["Completed"] == "Completed"
    assert "9 (promoter)" in activity["Description"] and "Hurtig og venlig hjælp" in activity["Description"]
    ticket_fields = present(emulator.ticket(ticket))["CustomFields"]
    assert (ticket_fields["x_cxhub_rating"], ticket_fields["x_cxhub_received"]) == ("3", "True")
    assert ticket_fields["x_cxhub_comment"] == "Ventede for længe"
    [message] = emulator.ticket_messages(ticket)
    assert message["Slevel"] == "Internal"
    assert "3 (detractor)" in message["Body"] and "Ventede for længe" in message["Body"]
    assert emulator.count_calls("POST", "/TicketMessage") == 1
    assert all(
        call.query == "notify=false" for call in emulator.calls if call.path.endswith("/TicketMessage")
    )


async def test_two_copies_of_one_item_in_a_batch_create_one_entry(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    karen = seed.persons["karen"]
    results = await connector.write_back([timeline_item(1, karen, "r-2"), timeline_item(2, karen, "r-2")])
    assert [r.status for r in results] == ["ok", "ok"]
    assert len(emulator.appointments(karen)) == 1


async def test_extra_table_timeline_writes_one_row_per_answer(
    server: BackgroundServer, partner_keys: tuple[str, str], emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    settings = make_settings(server, partner_keys[0], timeline={"mode": "extra_table"})
    connector = make_connector(settings)
    emma = seed.persons["emma"]
    try:
        batch = [timeline_item(1, emma, "r-3", seed.tickets["export"]), timeline_item(2, emma, "r-4")]
        assert [r.status for r in await connector.write_back(batch)] == ["ok", "ok"]
        assert [r.status for r in await connector.write_back(batch)] == ["ok", "ok"]
        checks = await connector.check()
    finally:
        await connector.aclose()
    rows = emulator.table_rows("y_cxhub_feedback")
    assert sorted(row["x_cxhub_response_id"] for row in rows) == ["timeline:r-3", "timeline:r-4"]
    assert {row["x_person"] for row in rows} == {str(emma)}
    assert {row.get("x_ticket", "") for row in rows} == {str(seed.tickets["export"]), ""}
    assert all(c.ok for c in checks if c.name.startswith("y_cxhub_feedback."))
    assert emulator.appointments(emma) == []


async def test_credentials_expiring_mid_batch_are_renewed_and_nothing_is_written_twice(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    people = [seed.persons[name] for name in ("karen", "søren", "emma", "oliver")]
    tickets = list(seed.tickets.values())
    batch = [timeline_item(i, person, f"r-{i}") for i, person in enumerate(people, start=1)]
    batch += [feedback_item(10 + i, ticket, f"f-{i}") for i, ticket in enumerate(tickets)]
    await connector.get_person(str(people[0]))  # log in
    emulator.expire_credentials_after(5)

    results = await connector.write_back(batch)

    assert {r.status for r in results} == {"ok"}
    assert emulator.count_calls("POST", "/PartnerSystemUser/Authenticate") == 2
    assert emulator.count_calls(status=401) >= 1
    assert [len(emulator.appointments(person)) for person in people] == [1, 1, 1, 1]
    assert [len(emulator.ticket_messages(ticket)) for ticket in tickets] == [1, 1, 1, 1]


async def test_an_unknown_field_fails_that_item_only_and_says_which_field(
    server: BackgroundServer, partner_keys: tuple[str, str], emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    settings = make_settings(server, partner_keys[0], person={"count": "x_cxhub_answer_count"})
    connector = make_connector(settings)
    try:
        results = await connector.write_back(
            [summary_item(1, seed.persons["karen"]), feedback_item(2, seed.tickets["login"], "r-5")]
        )
        checks = {c.name: c for c in await connector.check()}
    finally:
        await connector.aclose()
    assert [r.status for r in results] == ["failed", "ok"]
    assert "x_cxhub_answer_count" in (results[0].error or "")
    assert present(emulator.person(seed.persons["karen"]))["CustomFields"]["x_cxhub_last_rating"] == ""
    assert not checks["Person.x_cxhub_answer_count"].ok
    assert "person.count" in checks["Person.x_cxhub_answer_count"].detail


async def test_a_person_deleted_in_superoffice_fails_the_item(connector: SuperOfficeConnector) -> None:
    [result] = await connector.write_back([summary_item(1, 999_999)])
    assert result.status == "failed" and "404" in (result.error or "")


async def test_busy_superoffice_makes_items_transient_with_retry_after(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    emulator.fail_next(1, status=503, retry_after=12, path_contains="/Person/")
    [result] = await connector.write_back([summary_item(1, seed.persons["karen"])])
    assert (result.status, result.retry_after) == ("transient", 12)
    [retried] = await connector.write_back([summary_item(1, seed.persons["karen"])])
    assert retried.status == "ok"


async def test_requests_in_flight_never_exceed_max_in_flight(
    server: BackgroundServer, partner_keys: tuple[str, str], emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    connector = make_connector(make_settings(server, partner_keys[0], max_in_flight=2))
    emulator.set_latency(0.05)
    try:
        batch = [summary_item(i, person) for i, person in enumerate(seed.persons.values(), start=1)]
        assert {r.status for r in await connector.write_back(batch)} == {"ok"}
    finally:
        await connector.aclose()
    assert emulator.max_in_flight_seen == 2


async def test_ticket_status_change_after_feedback(
    server: BackgroundServer, partner_keys: tuple[str, str], emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    settings = make_settings(server, partner_keys[0], ticket={"status_ids": {"reopened": 1}})
    connector = make_connector(settings)
    login, export = seed.tickets["login"], seed.tickets["export"]
    emulator.close_ticket(login)
    try:
        results = await connector.write_back(
            [
                feedback_item(1, login, "r-6", status="reopened"),
                feedback_item(2, export, "r-7", status="escalated"),
            ]
        )
    finally:
        await connector.aclose()
    assert [r.status for r in results] == ["ok", "failed"]
    assert "escalated" in (results[1].error or "")
    assert present(emulator.ticket(login))["BaseStatus"] == "Active"


async def test_no_internal_message_unless_the_hub_asks(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    [result] = await connector.write_back([feedback_item(1, seed.tickets["login"], "r-8", note=False)])
    assert result.status == "ok"
    assert emulator.ticket_messages(seed.tickets["login"]) == []


async def test_refused_credentials_stop_the_run(
    server: BackgroundServer, partner_keys: tuple[str, str], seed: DemoSeed
) -> None:
    settings = make_settings(server, partner_keys[0], "basic", auth={"password": SecretStr("wrong-password")})
    connector = make_connector(settings)
    try:
        with pytest.raises(AuthError):
            await connector.write_back([summary_item(1, seed.persons["karen"])])
    finally:
        await connector.aclose()


async def test_an_empty_field_name_leaves_that_value_out(
    server: BackgroundServer, partner_keys: tuple[str, str], emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    settings = make_settings(server, partner_keys[0], person={"latest_comment": "", "count": ""})
    connector = make_connector(settings)
    try:
        [result] = await connector.write_back([summary_item(1, seed.persons["karen"])])
        checked = {c.name for c in await connector.check()}
    finally:
        await connector.aclose()
    fields = present(emulator.person(seed.persons["karen"]))["CustomFields"]
    assert result.status == "ok"
    assert (fields["x_cxhub_last_rating"], fields["x_cxhub_last_comment"], fields["x_cxhub_count"]) == (
        "9",
        "",
        "",
    )
    assert "Person.x_cxhub_last_rating" in checked and "Person.x_cxhub_count" not in checked


@pytest.mark.parametrize("mode", ["appointment", "extra_table"])
async def test_a_comment_added_later_updates_the_entries_instead_of_adding_new_ones(
    mode: str,
    server: BackgroundServer,
    partner_keys: tuple[str, str],
    emulator: SuperOfficeEmulator,
    seed: DemoSeed,
) -> None:
    connector = make_connector(make_settings(server, partner_keys[0], timeline={"mode": mode}))
    karen, ticket = seed.persons["karen"], seed.tickets["login"]
    first = [
        timeline_item(1, karen, "r-9", ticket, comment=None),
        feedback_item(2, ticket, "r-9", comment=None),
    ]
    amended = [timeline_item(1, karen, "r-9", ticket), feedback_item(2, ticket, "r-9")]
    try:
        assert {r.status for r in await connector.write_back(first)} == {"ok"}
        assert {r.status for r in await connector.write_back(amended)} == {"ok"}
    finally:
        await connector.aclose()
    if mode == "appointment":
        [entry] = emulator.appointments(karen)
        assert "Hurtig og venlig hjælp" in entry["Description"]
    else:
        [row] = emulator.table_rows("y_cxhub_feedback")
        assert row["x_comment"] == "Hurtig og venlig hjælp"
    [message] = emulator.ticket_messages(ticket)
    assert "Ventede for længe" in message["Body"]


# --- frugal look-ups: one archive query for the timeline keys of a batch ------------------------------------


def _new_people(emulator: SuperOfficeEmulator, count: int) -> list[int]:
    return [
        emulator.add_person("Batch", f"Person {i}", email=f"batch{i}@nordlys.example") for i in range(count)
    ]


async def _logged_in(connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, person: int) -> None:
    await connector.get_person(str(person))
    emulator.clear_calls()


async def test_a_batch_of_new_timeline_entries_costs_one_lookup_and_one_create_each(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    people = _new_people(emulator, 12)
    await _logged_in(connector, emulator, people[0])
    batch = [timeline_item(i, person, f"{uuid.uuid4()}") for i, person in enumerate(people, start=1)]

    results = await connector.write_back(batch)

    assert {r.status for r in results} == {"ok"}
    assert emulator.count_calls("GET", "/archive/dynamic") == 1
    assert emulator.count_calls("POST", "/Appointment") == len(batch)
    assert len(emulator.calls) == 1 + len(batch)
    [lookup] = [call for call in emulator.calls if call.path.endswith("/archive/dynamic")]
    assert " or " in unquote_plus(lookup.query)
    assert [len(emulator.appointments(person)) for person in people] == [1] * len(people)


async def test_a_retried_batch_creates_nothing_twice(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    people = _new_people(emulator, 10)
    await _logged_in(connector, emulator, people[0])
    batch = [timeline_item(i, person, f"{uuid.uuid4()}") for i, person in enumerate(people, start=1)]
    emulator.fail_next(3, status=503, path_contains="/Appointment", methods={"POST"})

    first = await connector.write_back(batch)
    emulator.clear_calls()
    second = await connector.write_back(batch)
    calls_of_second = list(emulator.calls)
    emulator.clear_calls()
    third = await connector.write_back(batch)

    assert sorted(r.status for r in first) == ["ok"] * 7 + ["transient"] * 3
    assert {r.status for r in second} == {r.status for r in third} == {"ok"}
    assert [len(emulator.appointments(person)) for person in people] == [1] * len(people)
    # the retry looks all keys up at once, creates the three that failed and updates the seven others
    assert Counter((c.method, c.path.rsplit("/api/v1/", 1)[1].split("/")[0]) for c in calls_of_second) == {
        ("GET", "archive"): 1,
        ("POST", "Appointment"): 3,
        ("PATCH", "Appointment"): 7,
    }
    assert emulator.count_calls("GET", "/archive/dynamic") == 1
    assert emulator.count_calls("POST") == 0
    assert emulator.count_calls("PATCH", "/Appointment/") == len(batch)
    assert [r.remote_id for r in third] == [r.remote_id for r in second]


@pytest.mark.parametrize("mode", ["appointment", "extra_table"])
async def test_many_keys_are_split_into_lookups_that_fit_a_query_string(
    mode: str,
    server: BackgroundServer,
    partner_keys: tuple[str, str],
    emulator: SuperOfficeEmulator,
    seed: DemoSeed,
) -> None:
    connector = make_connector(make_settings(server, partner_keys[0], timeline={"mode": mode}))
    people = _new_people(emulator, 50)
    batch = [timeline_item(i, person, f"{uuid.uuid4()}") for i, person in enumerate(people, start=1)]
    try:
        await _logged_in(connector, emulator, people[0])
        assert {r.status for r in await connector.write_back(batch)} == {"ok"}
        lookups = [call for call in emulator.calls if call.path.endswith("/archive/dynamic")]
        assert {r.status for r in await connector.write_back(batch)} == {"ok"}
    finally:
        await connector.aclose()
    assert 2 <= len(lookups) <= 4  # about 20 keys of the hub's length fit one query string
    assert all(len(call.query) <= MAX_QUERY_STRING for call in lookups)
    if mode == "appointment":
        assert [len(emulator.appointments(person)) for person in people] == [1] * len(people)
    else:
        keys = Counter(row["x_cxhub_response_id"] for row in emulator.table_rows("y_cxhub_feedback"))
        assert sorted(keys) == sorted(item.key for item in batch) and set(keys.values()) == {1}


async def test_a_failed_lookup_fails_its_items_and_the_retry_writes_them_once(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    people = _new_people(emulator, 4)
    await _logged_in(connector, emulator, people[0])
    batch = [timeline_item(i, person, f"{uuid.uuid4()}") for i, person in enumerate(people, start=1)]
    batch.append(summary_item(9, seed.persons["karen"]))
    emulator.fail_next(1, status=503, retry_after=7, path_contains="/archive/dynamic")

    first = await connector.write_back(batch)
    again = await connector.write_back(batch)

    assert [(r.status, r.retry_after) for r in first[:4]] == [("transient", 7)] * 4
    assert first[4].status == "ok"  # the summary did not wait for the timeline's look-up
    assert {r.status for r in again} == {"ok"}
    assert [len(emulator.appointments(person)) for person in people] == [1] * len(people)


async def test_concurrent_batches_look_up_separately(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    people = _new_people(emulator, 6)
    await _logged_in(connector, emulator, people[0])
    batches = [
        [timeline_item(i, person, f"{uuid.uuid4()}") for i, person in enumerate(people[:3])],
        [timeline_item(i, person, f"{uuid.uuid4()}") for i, person in enumerate(people[3:])],
    ]
    results = await asyncio.gather(*(connector.write_back(batch) for batch in batches))
    assert {r.status for batch in results for r in batch} == {"ok"}
    assert emulator.count_calls("GET", "/archive/dynamic") == 2
    assert emulator.count_calls("POST", "/Appointment") == 6


async def test_a_mixed_batch_keeps_max_in_flight_calls_busy(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    people = _new_people(emulator, 8)
    tickets = [emulator.add_ticket(f"Request {i}", person) for i, person in enumerate(people)]
    await _logged_in(connector, emulator, people[0])
    batch: list[WriteBackItem] = []
    for i, (person, ticket) in enumerate(zip(people, tickets, strict=True)):
        response = f"{uuid.uuid4()}"
        batch += [
            summary_item(3 * i, person),
            timeline_item(3 * i + 1, person, response, ticket),
            feedback_item(3 * i + 2, ticket, response, note=False),
        ]
    emulator.set_latency(0.05)

    results = await connector.write_back(batch)

    assert {r.status for r in results} == {"ok"}
    assert emulator.max_in_flight_seen == connector.settings.max_in_flight == 8
    # 8 summaries + 8 ticket updates + 8 creations + 1 look-up for the 8 timeline keys
    assert len(emulator.calls) == 3 * len(people) + 1


# --- the archive syntax the look-up relies on, as the emulator accepts and refuses it ----------------------


@pytest.mark.parametrize(
    ("restriction", "accepted"),
    [
        (
            "appointment.x_cxhub_response_id eq 'timeline:a' or appointment.x_cxhub_response_id eq 'timeline:b'",
            True,
        ),
        (
            "(appointment.x_cxhub_response_id eq 'timeline:a' or appointment.person_id eq 1) and appointment.appointment_id gt 0",
            True,
        ),
        ("appointment.appointment_id oneOf (1, 2, 3)", True),
        ("appointment.appointment_id in (1,2)", True),
        # list operators are documented for ids, not for text columns: refused, the unforgiving reading
        ("appointment.x_cxhub_response_id oneOf ('timeline:a', 'timeline:b')", False),
        ("appointment.x_cxhub_response_id in ('timeline:a')", False),
        ("appointment.x_cxhub_response_id eq 'timeline:a' or", False),
        ("(appointment.x_cxhub_response_id eq 'timeline:a'", False),
    ],
)
async def test_dynamic_archive_filter_syntax(
    connector: SuperOfficeConnector, restriction: str, accepted: bool
) -> None:
    params = {"$select": "appointment.appointment_id", "$filter": restriction}
    if accepted:
        response = await connector.client.request("GET", "archive/dynamic", params=params, what="probe")
        assert response.status_code == 200
    else:
        with pytest.raises(RecordError, match="400"):
            await connector.client.request("GET", "archive/dynamic", params=params, what="probe")


async def test_or_binds_looser_than_and_in_the_archive(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    karen, emma = seed.persons["karen"], seed.persons["emma"]
    await connector.write_back([timeline_item(1, karen, "r-a"), timeline_item(2, emma, "r-b")])

    async def matching(restriction: str) -> list[int]:
        response = await connector.client.request(
            "GET",
            "archive/dynamic",
            params={"$select": "appointment.person_id", "$filter": restriction},
            what="probe",
        )
        return sorted(int(row["appointment.person_id"]) for row in response.json()["value"])

    key = "appointment.x_cxhub_response_id"
    assert await matching(f"{key} eq 'timeline:r-a' or {key} eq 'timeline:r-b'") == sorted([karen, emma])
    assert await matching(
        f"{key} eq 'timeline:r-a' or {key} eq 'timeline:r-b' and appointment.person_id eq {karen}"
    ) == [karen]
    assert await matching(
        f"({key} eq 'timeline:r-a' or {key} eq 'timeline:r-b') and appointment.person_id eq {emma}"
    ) == [emma]


# --- max_in_flight: the look-up a batch's creations wait for is sent before queued writes -------------------


async def test_the_lookup_goes_before_writes_already_queued(
    server: BackgroundServer, partner_keys: tuple[str, str], emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    connector = make_connector(make_settings(server, partner_keys[0], max_in_flight=1))
    people = _new_people(emulator, 3)
    batch = [summary_item(i, person) for i, person in enumerate(people, start=1)]
    batch += [timeline_item(10 + i, person, f"{uuid.uuid4()}") for i, person in enumerate(people)]
    try:
        await _logged_in(connector, emulator, people[0])
        assert {r.status for r in await connector.write_back(batch)} == {"ok"}
    finally:
        await connector.aclose()
    order = [(call.method, call.path.rsplit("/api/v1/", 1)[1].split("/")[0]) for call in emulator.calls]
    # the first summary had the only slot; the look-up came next, before the two summaries queued earlier
    assert order[:2] == [("PATCH", "Person"), ("GET", "archive")]
    assert sorted(order[2:]) == sorted([("PATCH", "Person")] * 2 + [("POST", "Appointment")] * 3)


async def _use(slots: Slots, log: list[str], name: str, first: bool = False) -> None:
    async with slots.hold(first=first):
        log.append(name)
        await asyncio.sleep(0)


async def test_slots_serve_waiting_lookups_first_then_writes_in_order() -> None:
    slots, log = Slots(1), []
    async with slots.hold():
        tasks = [
            asyncio.create_task(_use(slots, log, "write 1")),
            asyncio.create_task(_use(slots, log, "write 2")),
            asyncio.create_task(_use(slots, log, "look-up", first=True)),
        ]
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert log == ["look-up", "write 1", "write 2"]


async def test_slots_are_not_lost_when_waiters_are_cancelled() -> None:
    slots, log = Slots(1), []
    async with slots.hold():
        gave_up = asyncio.create_task(_use(slots, log, "gave up while waiting"))
        await asyncio.sleep(0)
        gave_up.cancel()
        handed_over = asyncio.create_task(_use(slots, log, "gave up holding the turn"))
        await asyncio.sleep(0)
    handed_over.cancel()  # its turn came when the slot was released, but it never ran
    await asyncio.gather(gave_up, handed_over, return_exceptions=True)
    await asyncio.wait_for(_use(slots, log, "next"), timeout=1)
    await asyncio.wait_for(asyncio.gather(*(_use(slots, log, f"w{i}") for i in range(3))), timeout=1)
    assert log == ["next", "w0", "w1", "w2"]
