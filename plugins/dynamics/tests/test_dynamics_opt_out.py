"""The hub's own opt-out of a person, as people working in Dynamics see it on the contact: a Yes/No column,
a date and a reason, written through $batch like the summary and in the same PATCH when both travel."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from dynamics_support import make_connector, make_settings, seed_case
from hub_dynamics.connector import DynamicsConnector
from hub_dynamics.emulator import DataverseEmulator
from test_dynamics_writeback import feedback_item, summary_item

from hub.testing import opt_out_item
from hub.testing.server import TlsServer

STOPPED = datetime(2026, 12, 5, 14, 2, tzinfo=UTC)
STARTED = datetime(2026, 12, 9, 8, 15, tzinfo=UTC)
COLUMNS = ("cxhub_surveyoptout", "cxhub_surveyoptoutdate", "cxhub_surveyoptoutreason")


def opt_out_columns(emulator: DataverseEmulator, contact: str) -> tuple[object, ...]:
    row = emulator.row("contact", contact) or {}
    return tuple(row.get(column) for column in COLUMNS)


def contact_patches(emulator: DataverseEmulator) -> int:
    return len([c for c in emulator.calls_of("batch-part") if c.method == "PATCH" and "contacts(" in c.path])


@pytest.mark.asyncio
async def test_an_opt_out_sets_the_contact_columns_and_an_opt_in_afterwards_clears_them(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    contact = seed_case(emulator)[1]

    [stopped] = await connector.write_back([opt_out_item(1, contact)])
    set_columns = opt_out_columns(emulator, contact)
    [started] = await connector.write_back([opt_out_item(1, contact, opted_out=False, changed_at=STARTED)])

    assert (stopped.status, started.status) == ("ok", "ok")
    assert set_columns == (True, "2026-12-05T14:02:00Z", "replied STOP by SMS")
    assert opt_out_columns(emulator, contact) == (False, None, None)


@pytest.mark.asyncio
async def test_a_retried_opt_out_changes_nothing(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    contact = seed_case(emulator)[1]
    await connector.write_back([opt_out_item(1, contact)])
    written = emulator.row("contact", contact) or {}

    [again] = await connector.write_back([opt_out_item(1, contact, attempt=2)])

    after = emulator.row("contact", contact) or {}
    assert again.status == "ok"
    assert _values(after) == _values(written)


def _values(row: dict[str, object]) -> dict[str, object]:
    """The contact's columns, without what Dataverse stamps on every update."""
    return {k: v for k, v in row.items() if k not in ("modifiedon", "_version")}


@pytest.mark.asyncio
async def test_an_opt_out_travelling_with_a_summary_costs_no_request_of_its_own(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    _, contact, case = seed_case(emulator)
    emulator.calls.clear()

    results = await connector.write_back(
        [
            summary_item(1, contact),
            feedback_item(2, case, "r-1", note=False),
            opt_out_item(3, contact.upper()),
        ]
    )

    assert {r.item_id: r.status for r in results} == {1: "ok", 2: "ok", 3: "ok"}
    assert contact_patches(emulator) == 1
    assert len([c for c in emulator.calls_of("api") if c.path.endswith("/$batch")]) == 1
    row = emulator.row("contact", contact) or {}
    assert (row["cxhub_lastscore"], row["cxhub_surveyoptout"]) == (9, True)


@pytest.mark.asyncio
async def test_of_two_changes_in_one_batch_the_newer_wins_whatever_their_order(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    first = seed_case(emulator)[1]
    second = seed_case(emulator, "other@example.com")[1]
    batch = [
        opt_out_item(1, first, opted_out=False, changed_at=STARTED),
        opt_out_item(2, first),
        opt_out_item(3, second, opted_out=False, changed_at=STOPPED),
        opt_out_item(4, second, changed_at=STARTED),
    ]

    results = await connector.write_back(batch)

    assert {r.status for r in results} == {"ok"}
    assert opt_out_columns(emulator, first) == (False, None, None)
    assert opt_out_columns(emulator, second)[0] is True


@pytest.mark.asyncio
async def test_without_opt_out_columns_the_item_is_written_without_a_request(
    emulator: DataverseEmulator, server: TlsServer
) -> None:
    contact = seed_case(emulator)[1]
    connector = make_connector(
        make_settings(server, opt_out={"opted_out": None, "changed_at": None, "reason": None})
    )
    emulator.calls.clear()
    try:
        [result] = await connector.write_back([opt_out_item(1, contact)])
        calls = list(emulator.calls)
        checked = {c.name for c in await connector.check()}
    finally:
        await connector.aclose()
    assert result.status == "ok"
    assert calls == []
    assert not any("optout" in name for name in checked)


@pytest.mark.asyncio
async def test_check_names_a_missing_opt_out_column_and_its_setting(
    emulator: DataverseEmulator, server: TlsServer
) -> None:
    connector = make_connector(make_settings(server, opt_out={"reason": "new_optoutwhy"}))
    try:
        checks = {c.name: c for c in await connector.check()}
    finally:
        await connector.aclose()
    assert checks["contact.cxhub_surveyoptout"].ok
    assert not checks["contact.new_optoutwhy"].ok
    assert "opt_out.reason" in checks["contact.new_optoutwhy"].detail
