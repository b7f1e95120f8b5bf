"""SOQL polling: closed cases and won opportunities, paged through nextRecordsUrl; people by email."""

from __future__ import annotations

import json

from hub_salesforce.connector import SalesforceConnector
from hub_salesforce.emulator import SalesforceEmulator
from hub_salesforce.soql import quote


async def test_polling_follows_next_records_url_and_events_are_stable(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    emulator.page_size = 2
    contact = emulator.add_contact("Lea", "Berg", email="lea@nordlys.example")
    closed = [emulator.close_case(emulator.add_case(f"Case {n}", contact))["Id"] for n in range(5)]
    emulator.add_case("still open", contact)
    emulator.win_opportunity("Renewal", contact)

    seen, cursor, pages = [], None, 0
    while True:
        result = await connector.fetch_events(cursor)
        seen += result.events
        cursor, pages = result.next_cursor, pages + 1
        if not result.has_more:
            break
    assert pages == 3
    assert sorted(e.record_id for e in seen if e.event_type == "case.closed") == sorted(closed)
    assert [e.event_type for e in seen].count("opportunity.won") == 1
    assert all(e.event_id.startswith(("case:", "opportunity:")) for e in seen)
    assert len(emulator.calls_to("GET", "/query/01g")) == 2  # the two nextRecordsUrl pages

    again = await connector.fetch_events(cursor)  # the overlap re-reads: same ids, dropped by the hub
    assert again.events and {e.event_id for e in again.events} <= {e.event_id for e in seen}
    assert (
        json.loads(again.next_cursor or "{}")["case"]["since"] >= json.loads(cursor or "{}")["case"]["since"]
    )


async def test_find_person_escapes_literals_and_reads_opt_outs(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    tricky = "o'brien\\x@nordlys.example"
    contact = emulator.add_contact("Sean", "O'Brien", email=tricky, MobilePhone="+4790000000", DoNotCall=True)
    person = await connector.find_person(tricky, None)
    assert person is not None and person.crm_id == contact
    assert person.opted_out and person.opt_out_reason == "DoNotCall"
    assert await connector.find_person("nobody@nordlys.example", "+4799999999") is None
    assert (await connector.get_person(contact)) == person
    assert await connector.get_person("0035g0000000009999AAA") is None
    assert quote("a'b\\c") == "'a\\'b\\\\c'"
