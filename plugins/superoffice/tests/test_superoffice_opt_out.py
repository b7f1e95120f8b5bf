"""The hub's own opt-out of a person, as people working in SuperOffice see it: a ticked box, a date, a reason."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hub_superoffice.connector import SuperOfficeConnector
from hub_superoffice.emulator import BackgroundServer, DemoSeed, SuperOfficeEmulator
from superoffice_support import make_connector, make_settings, present
from test_superoffice_writeback import feedback_item, summary_item

from hub import WriteBackItem
from hub.testing import opt_out_item as kit_item

STOPPED = datetime(2026, 12, 5, 14, 2, tzinfo=UTC)
STARTED = datetime(2026, 12, 9, 8, 15, tzinfo=UTC)


def opt_out_item(item_id: int, person_id: int, **change: Any) -> WriteBackItem:
    return kit_item(item_id, str(person_id), **change)


def opt_out_fields(emulator: SuperOfficeEmulator, person_id: int) -> tuple[str, str, str]:
    fields = present(emulator.person(person_id))["CustomFields"]
    return fields["x_cxhub_opted_out"], fields["x_cxhub_opt_out_date"], fields["x_cxhub_opt_out_reason"]


async def test_an_opt_out_ticks_the_person_and_an_opt_in_afterwards_clears_it(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    karen = seed.persons["karen"]

    [stopped] = await connector.write_back([opt_out_item(1, karen)])
    ticked = opt_out_fields(emulator, karen)
    [started] = await connector.write_back([opt_out_item(1, karen, opted_out=False, changed_at=STARTED)])

    assert (stopped.status, stopped.remote_id, started.status) == ("ok", str(karen), "ok")
    assert (
        ticked[0] == "True"
        and ticked[1].startswith("2026-12-05T14:02")
        and ticked[2] == "replied STOP by SMS"
    )
    assert opt_out_fields(emulator, karen) == ("False", "", "")


async def test_a_retried_opt_out_changes_nothing(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    karen = seed.persons["karen"]
    await connector.write_back([opt_out_item(1, karen)])
    written = present(emulator.person(karen))

    [again] = await connector.write_back([opt_out_item(1, karen, attempt=2)])

    assert again.status == "ok"
    after = present(emulator.person(karen))
    assert after["CustomFields"] == written["CustomFields"]
    assert emulator.appointments(karen) == []


async def test_an_opt_out_travelling_with_a_summary_costs_no_call_of_its_own(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    karen, ticket = seed.persons["karen"], seed.tickets["login"]
    emulator.clear_calls()

    results = await connector.write_back(
        [summary_item(1, karen), feedback_item(2, ticket, "r-1"), opt_out_item(3, karen)]
    )

    assert [(r.item_id, r.status) for r in results] == [(1, "ok"), (2, "ok"), (3, "ok")]
    assert emulator.count_calls("PATCH", "/Person/") == 1
    fields = present(emulator.person(karen))["CustomFields"]
    assert (fields["x_cxhub_last_rating"], fields["x_cxhub_opted_out"]) == ("9", "True")


async def test_of_two_changes_in_one_batch_the_newer_wins_whatever_their_order(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    karen, emma = seed.persons["karen"], seed.persons["emma"]
    newer_opt_in = opt_out_item(1, karen, opted_out=False, changed_at=STARTED)
    older_opt_out = opt_out_item(2, karen)
    newer_opt_out = opt_out_item(3, emma, changed_at=STARTED)
    older_opt_in = opt_out_item(4, emma, opted_out=False, changed_at=STOPPED)

    results = await connector.write_back([newer_opt_in, older_opt_out, older_opt_in, newer_opt_out])

    assert {r.status for r in results} == {"ok"}
    assert opt_out_fields(emulator, karen) == ("False", "", "")
    assert opt_out_fields(emulator, emma)[0] == "True"


async def test_without_opt_out_fields_the_item_is_written_without_a_call(
    server: BackgroundServer, partner_keys: tuple[str, str], emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    settings = make_settings(
        server, partner_keys[0], opt_out={"opted_out": "", "changed_at": None, "reason": ""}
    )
    connector = make_connector(settings)
    emulator.clear_calls()
    try:
        [result] = await connector.write_back([opt_out_item(1, seed.persons["karen"])])
        checked = {c.name for c in await connector.check()}
    finally:
        await connector.aclose()
    assert result.status == "ok"
    assert emulator.count_calls("PATCH") == 0
    assert not any("opt_out" in name for name in checked)


async def test_check_names_a_missing_opt_out_field_and_its_setting(
    server: BackgroundServer, partner_keys: tuple[str, str], seed: DemoSeed
) -> None:
    connector = make_connector(make_settings(server, partner_keys[0], opt_out={"reason": "x_why_not"}))
    try:
        checks = {c.name: c for c in await connector.check()}
    finally:
        await connector.aclose()
    assert checks["Person.x_cxhub_opted_out"].ok
    assert not checks["Person.x_why_not"].ok
    assert "opt_out.reason" in checks["Person.x_why_not"].detail
