"""Events: webhooks are hints that lead to a read of the record, polling with change tracking is the safety
net, and the two agree on one event per resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
from dynamics_support import (
    DynamicsHarness,
    later,
    make_connector,
    make_settings,
    reopen,
    resolve,
    seed_case,
    webhook,
)
from hub_dynamics.connector import DynamicsConnector
from hub_dynamics.emulator import DataverseEmulator
from sqlalchemy import select

from hub.store.tables import Invitation
from hub.testing import MemoryChannel, build_hub
from hub.testing.harness import CONNECTOR
from hub.testing.server import TlsServer


async def _drain(connector: DynamicsConnector, cursor: str | None) -> tuple[list[str], str | None]:
    """Poll until no page is waiting; the event ids found and the cursor to keep."""
    found: list[str] = []
    for _ in range(50):
        result = await connector.fetch_events(cursor)
        found += [e.event_id for e in result.events]
        cursor = result.next_cursor
        if not result.has_more:
            return found, cursor
    raise AssertionError("polling never settled")


@pytest.mark.asyncio
async def test_webhook_twice_and_polling_survey_the_person_once(
    harness: DynamicsHarness, emulator: DataverseEmulator, tmp_path: Path
) -> None:
    MemoryChannel.sent.clear()
    hub = await build_hub(harness, tmp_path)
    try:
        _, contact, incident = seed_case(emulator)
        resolve(emulator, incident)
        request = webhook(emulator, "CloseIncident", "incident", incident)
        connector = hub.connectors[CONNECTOR]
        for _ in range(2):  # Dataverse retries a delivery it thinks failed
            reply = await connector.parse_webhook(request)
            assert [e.person_id for e in reply.events] == [contact]
            await hub.engine.receive(CONNECTOR, reply.events, source="webhook")
        stats = await hub.sync.poll(CONNECTOR)
        assert stats.error is None
        await hub.engine.process_pending()
        await hub.engine.dispatch_due()
        async with hub.store.session() as s:
            invitations = list(await s.scalars(select(Invitation)))
        assert [i.status for i in invitations] == ["sent"]
        assert [m.recipient.email for m in MemoryChannel.sent] == ["emma.clarke@brightwater.example"]
    finally:
        await hub.close()


@pytest.mark.asyncio
async def test_a_case_resolved_again_after_reopening_is_surveyed_again(
    harness: DynamicsHarness, emulator: DataverseEmulator, tmp_path: Path
) -> None:
    """Each resolution is an event of its own (the policy here allows any number of surveys): a reopened
    case resolved again surveys its person again, while each resolution, seen by webhook twice and by
    polling, surveys once."""
    MemoryChannel.sent.clear()
    hub = await build_hub(harness, tmp_path)
    try:
        _, _, incident = seed_case(emulator)
        connector = hub.connectors[CONNECTOR]
        for again in (False, True):
            if again:
                reopen(emulator, "incident", incident)
                later(emulator, 60)
            resolve(emulator, incident)
            request = webhook(emulator, "CloseIncident", "incident", incident)
            for _ in range(2):
                reply = await connector.parse_webhook(request)
                await hub.engine.receive(CONNECTOR, reply.events, source="webhook")
            assert (await hub.sync.poll(CONNECTOR)).error is None
            await hub.engine.process_pending()
            await hub.engine.dispatch_due()
        async with hub.store.session() as s:
            invitations = list(await s.scalars(select(Invitation)))
        assert [i.status for i in invitations] == ["sent", "sent"]
        assert [m.recipient.email for m in MemoryChannel.sent] == ["emma.clarke@brightwater.example"] * 2
    finally:
        await hub.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("table", ["incident", "opportunity"])
async def test_each_resolution_or_win_has_its_own_id_that_webhook_and_polling_share(
    emulator: DataverseEmulator, server: TlsServer, table: str
) -> None:
    connector = make_connector(
        make_settings(server, poll_cases=table == "incident", poll_opportunities=table == "opportunity")
    )
    try:
        owner, contact, incident = seed_case(emulator)
        record = incident
        if table == "opportunity":
            record = emulator.add("opportunity", name="Renewal", parentcontactid=contact, ownerid=owner)
        close = emulator.close_incident if table == "incident" else emulator.win_opportunity
        message, outcome = ("CloseIncident", "resolved") if table == "incident" else ("WinOpportunity", "won")
        cursor, ids = None, []
        for again in (False, True):
            if again:
                reopen(emulator, table, record)
                later(emulator, 60)
            activity = close(record)
            request = webhook(emulator, message, table, record)
            hooked = [e.event_id for e in (await connector.parse_webhook(request)).events]
            polled, cursor = await _drain(connector, cursor)
            assert hooked == polled == [f"{table}:{record}:{outcome}:{activity}"]
            ids += hooked
        assert len(set(ids)) == 2
    finally:
        await connector.aclose()


@pytest.mark.asyncio
async def test_a_resolution_without_its_activity_keeps_one_stable_id(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    """A case set to Resolved without a case resolution (a plain Update of its state) falls back to the id
    of the case alone, the same by webhook and by polling."""
    _, _, incident = seed_case(emulator)
    emulator.update("incident", incident, statecode=1, statuscode=5)
    request = webhook(emulator, "Update", "incident", incident, {"statecode": {"Value": 1}})
    [hooked] = (await connector.parse_webhook(request)).events
    polled, _ = await _drain(connector, None)
    assert [hooked.event_id] == polled == [f"incident:{incident}:resolved"]


@pytest.mark.asyncio
async def test_a_poll_page_reads_its_resolutions_in_one_call(
    emulator: DataverseEmulator, server: TlsServer
) -> None:
    """The resolutions of a page's resolved cases come in one query (per 50 cases), not one per case; a
    page without a resolved case reads none."""
    connector = make_connector(make_settings(server, poll_opportunities=False))
    try:
        incidents = [seed_case(emulator, f"p{n}@example.com")[2] for n in range(4)]
        for incident in incidents[:3]:
            resolve(emulator, incident)
        found, cursor = await _drain(connector, None)
        assert len(found) == 3
        reads = [c for c in emulator.calls_of("api") if c.path == "/incidentresolutions"]
        assert len(reads) == 1 and reads[0].status == 200
        emulator.update("incident", incidents[3], title="Still open")
        found, cursor = await _drain(connector, cursor)
        assert found == []
        assert len([c for c in emulator.calls_of("api") if c.path == "/incidentresolutions"]) == 1
    finally:
        await connector.aclose()


@pytest.mark.asyncio
async def test_polling_follows_change_tracking_and_pages(
    emulator: DataverseEmulator, server: TlsServer
) -> None:
    connector = make_connector(make_settings(server, poll_page_size=2, poll_opportunities=False))
    try:
        incidents = [seed_case(emulator, f"p{n}@example.com")[2] for n in range(5)]
        resolutions = {incident: resolve(emulator, incident) for incident in incidents[:4]}
        del resolutions[incidents[3]]
        emulator.update("incident", incidents[3], statecode=0, statuscode=1)
        found, cursor = await _drain(connector, None)
        assert sorted(found) == sorted(f"incident:{i}:resolved:{r}" for i, r in resolutions.items())
        # the delta link is the cursor now: only what changed since comes back
        resolution = resolve(emulator, incidents[4])
        found, cursor = await _drain(connector, cursor)
        assert found == [f"incident:{incidents[4]}:resolved:{resolution}"]
        tracked = [c for c in emulator.calls_of("api") if c.path == "/incidents"]
        assert any("$deltatoken" in c.query for c in tracked)
        assert not any("$filter" in c.query for c in tracked)
    finally:
        await connector.aclose()


@pytest.mark.asyncio
async def test_expired_delta_token_resyncs_from_the_modifiedon_window(
    emulator: DataverseEmulator, server: TlsServer
) -> None:
    connector = make_connector(make_settings(server, poll_opportunities=False))
    try:
        first = seed_case(emulator, "a@example.com")[2]
        resolution = resolve(emulator, first)
        found, cursor = await _drain(connector, None)
        assert found == [f"incident:{first}:resolved:{resolution}"]
        before = seed_case(emulator, "b@example.com")[2]
        resolution = resolve(emulator, before)  # changed while the token was good, but never fetched with it
        emulator.expire_delta_tokens()
        found, cursor = await _drain(connector, cursor)
        assert f"incident:{before}:resolved:{resolution}" in found
        windows = [
            c.query.replace("+", " ")
            for c in emulator.calls_of("api")
            if c.path == "/incidents" and "$filter" in c.query
        ]
        assert windows and "modifiedon ge" in windows[0]
        # and change tracking is back: a later resolution comes through a fresh delta link
        after = seed_case(emulator, "c@example.com")[2]
        resolution = resolve(emulator, after)
        found, cursor = await _drain(connector, cursor)
        assert found == [f"incident:{after}:resolved:{resolution}"]
        last = [c for c in emulator.calls_of("api") if c.path == "/incidents"][-1]
        assert "$deltatoken" in last.query and last.status == 200
    finally:
        await connector.aclose()


@pytest.mark.asyncio
async def test_won_opportunity_surveys_its_contact(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    owner, contact, _ = seed_case(emulator)
    opportunity = emulator.add("opportunity", name="Renewal", parentcontactid=contact, ownerid=owner)
    emulator.win_opportunity(opportunity)
    reply = await connector.parse_webhook(webhook(emulator, "WinOpportunity", "opportunity", opportunity))
    [event] = reply.events
    assert (event.event_type, event.person_id, event.owner_email) == (
        "opportunity.won",
        contact,
        "james@contoso.example",
    )


@pytest.mark.asyncio
async def test_webhook_is_only_a_hint(connector: DynamicsConnector, emulator: DataverseEmulator) -> None:
    """An Update that claims a resolution is checked against the record, which is still open."""
    _, _, incident = seed_case(emulator)
    claim = webhook(emulator, "Update", "incident", incident, {"statecode": {"Value": 1}})
    assert (await connector.parse_webhook(claim)).events == []
    # an Update to an open state is not worth a read at all
    reads = len(emulator.calls_of("api"))
    still_open = webhook(emulator, "Update", "incident", incident, {"statecode": {"Value": 0}})
    assert (await connector.parse_webhook(still_open)).events == []
    assert len(emulator.calls_of("api")) == reads


@pytest.mark.asyncio
async def test_cut_context_reads_the_record(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    _, contact, incident = seed_case(emulator)
    resolve(emulator, incident)
    request = webhook(emulator, "Update", "incident", incident)
    request = request.model_copy(
        update={"headers": {**request.headers, "x-ms-dynamics-msg-size-exceeded": "true"}}
    )
    [event] = (await connector.parse_webhook(request)).events
    assert event.person_id == contact


@pytest.mark.asyncio
async def test_account_case_surveys_the_cases_primary_contact(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    contact = emulator.add("contact", firstname="Ann", lastname="Lee", emailaddress1="ann@example.com")
    account = emulator.add("account", name="Brightwater", primarycontactid=contact)
    incident = emulator.add("incident", title="x", customerid=account, primarycontactid=contact)
    resolve(emulator, incident)
    [event] = (await connector.parse_webhook(webhook(emulator, "CloseIncident", "incident", incident))).events
    assert event.person_id == contact


@pytest.mark.asyncio
async def test_do_not_flags_opt_the_person_out(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    contact = emulator.add("contact", firstname="Bo", emailaddress1="Bo@Example.com", donotbulkemail=True)
    person = await connector.find_person("bo@example.com", None)
    assert person is not None and person.crm_id == contact
    assert person.opted_out and "donotbulkemail" in (person.opt_out_reason or "")
    assert await connector.find_person("nobody@example.com", None) is None
    assert await connector.get_person("not-a-guid") is None


@pytest.mark.asyncio
async def test_a_cursor_pointing_elsewhere_is_never_followed(connector: DynamicsConnector) -> None:
    """The bearer token goes to the environment only, whatever a stored link says."""
    cursor = (
        '{"v": 1, "incidents": {"mode": "delta", "link": "https://attacker.example/api/data/v9.2/incidents",'
        ' "floor": "2026-12-01T00:00:00Z", "since": "2026-12-01T00:00:00Z"},'
        ' "opportunities": {"mode": "seed", "link": null, "floor": "2026-12-01T00:00:00Z", "since": ""}}'
    )
    result = await connector.fetch_events(cursor)
    assert '"window"' in (result.next_cursor or "")  # treated like a refused token: resync by modifiedon
