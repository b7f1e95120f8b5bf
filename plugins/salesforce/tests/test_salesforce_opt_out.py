"""The hub's own opt-out of a person, as people working in Salesforce see it on the Contact: a checkbox, a
date and a reason, sent in the per-Contact update of the summaries (one record of one call when both travel)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hub_salesforce.connector import SalesforceConnector
from hub_salesforce.emulator import SalesforceEmulator, TlsServer
from salesforce_support import make_connector, make_settings
from test_salesforce_resilience import items_for

from hub.testing import opt_out_item

STARTED = datetime(2026, 12, 9, 8, 15, tzinfo=UTC)
FIELDS = ("CXHub_Survey_Opt_Out__c", "CXHub_Survey_Opt_Out_Date__c", "CXHub_Survey_Opt_Out_Reason__c")


def shown(emulator: SalesforceEmulator, contact: str) -> tuple[Any, ...]:
    record = emulator.org.records["Contact"][contact]
    return tuple(record.get(name) for name in FIELDS)


def writes(emulator: SalesforceEmulator) -> list[Any]:
    """The write calls (everything but queries, logins and describes) the connector made."""
    return [c for c in emulator.calls if c.method in ("POST", "PATCH") and "oauth2" not in c.path]


async def test_an_opt_out_ticks_the_contact_and_an_opt_in_afterwards_clears_it(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    contact = emulator.add_contact("Karen", "Holm", "karen@example.com")

    [stopped] = await connector.write_back([opt_out_item(1, contact, reason="replied STOPP by SMS")])
    ticked = shown(emulator, contact)
    [started] = await connector.write_back([opt_out_item(1, contact, opted_out=False, changed_at=STARTED)])

    assert (stopped.status, started.status) == ("ok", "ok")
    assert (
        ticked[0] is True
        and str(ticked[1]).startswith("2026-12-05T14:02")
        and ticked[2] == "replied STOPP by SMS"
    )
    assert shown(emulator, contact) == (False, None, None)


async def test_a_retried_opt_out_changes_nothing(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    contact = emulator.add_contact("Karen", "Holm", "karen@example.com")
    await connector.write_back([opt_out_item(1, contact)])
    written = shown(emulator, contact)

    [again] = await connector.write_back([opt_out_item(1, contact, attempt=2)])

    assert again.status == "ok"
    assert shown(emulator, contact) == written


async def test_an_opt_out_travelling_with_a_summary_costs_no_call_of_its_own(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    contact = emulator.add_contact("Karen", "Holm", "karen@example.com")
    [summary] = items_for(contact, "", "r-1", 1)[:1]
    await connector.write_back([summary])  # logged in, the org described
    emulator.calls.clear()

    results = await connector.write_back([summary, opt_out_item(2, contact)])

    assert [r.status for r in results] == ["ok", "ok"]
    [call] = writes(emulator)
    assert len(call.body["records"]) == 1
    record = emulator.org.records["Contact"][contact]
    assert (record["CXHub_Latest_Rating__c"], record["CXHub_Survey_Opt_Out__c"]) == (9, True)


async def test_of_two_changes_in_one_batch_the_newer_wins_whatever_their_order(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    first = emulator.add_contact("Karen", "Holm", "karen@example.com")
    second = emulator.add_contact("Emma", "Clarke", "emma@example.com")
    batch = [
        opt_out_item(1, first, opted_out=False, changed_at=STARTED),
        opt_out_item(2, first),
        opt_out_item(3, second),
        opt_out_item(4, second, opted_out=False, changed_at=STARTED),
    ]

    results = await connector.write_back(batch)

    assert {r.status for r in results} == {"ok"}
    assert shown(emulator, first) == (False, None, None)
    assert shown(emulator, second) == (False, None, None)


async def test_without_opt_out_fields_the_item_is_written_without_a_call(
    server: TlsServer, app_keys: tuple[str, str], emulator: SalesforceEmulator
) -> None:
    contact = emulator.add_contact("Karen", "Holm", "karen@example.com")
    before = shown(emulator, contact)
    settings = make_settings(
        server, app_keys[0], emulator, opt_out={"opted_out": "", "changed_at": "", "reason": ""}
    )
    connector = make_connector(settings)
    try:
        [result] = await connector.write_back([opt_out_item(1, contact)])
    finally:
        await connector.aclose()
    assert result.status == "ok"
    assert writes(emulator) == []
    assert shown(emulator, contact) == before


async def test_check_names_a_missing_opt_out_field_with_its_config_key(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    emulator.drop_field("Contact", "CXHub_Survey_Opt_Out_Reason__c")

    contact = next(result for result in await connector.check() if result.name == "Contact")

    assert not contact.ok
    assert "missing: CXHub_Survey_Opt_Out_Reason__c (opt_out.reason)" in contact.detail
