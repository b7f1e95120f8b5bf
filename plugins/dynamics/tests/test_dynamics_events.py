"""Events: webhooks are hints that lead to a read of the record, polling with change tracking is the safety
net, and the two agree on one event per resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
from dynamics_support import DynamicsHarness, make_connector, make_settings, resolve, seed_case, webhook
from hub_dynamics.connector import DynamicsConnector
from hub_dynamics.emulator import DataverseEmulator, TlsServer
from sqlalchemy import select

from hub.store.tables import Invitation
from hub.testing import MemoryChannel, build_hub
from hub.testing.harness import CONNECTOR


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
async def test_polling_follows_change_tracking_and_pages(
    emulator: DataverseEmulator, server: TlsServer
) -> None:
    connector = make_connector(make_settings(server, poll_page_size=2, poll_opportunities=False))
    try:
        incidents = [seed_case(emulator, f"p{n}@example.com")[2] for n in range(5)]
        for incident in incidents[:3]:
            resolve(emulator, incident)
        found, cursor = await _drain(connector, None)
        assert sorted(found) == sorted(f"incident:{i}:resolved" for i in incidents[:3])
        # the delta link is the cursor now: only what changed since comes back
        resolve(emulator, incidents[3])
        found, cursor = await _drain(connector, cursor)
        assert found == [f"incident:{incidents[3]}:resolved"]
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
        resolve(emulator, first)
        found, cursor = await _drain(connector, None)
        assert found == [f"incident:{first}:resolved"]
        before = seed_case(emulator, "b@example.com")[2]
        resolve(emulator, before)  # changed while the token was still good, but never fetched with it
        emulator.expire_delta_tokens()
        found, cursor = await _drain(connector, cursor)
        assert f"incident:{before}:resolved" in found
        windows = [
            c.query.replace("+", " ")
            for c in emulator.calls_of("api")
            if c.path == "/incidents" and "$filter" in c.query
        ]
        assert windows and "modifiedon ge" in windows[0]
        # and change tracking is back: a later resolution comes through a fresh delta link
        after = seed_case(emulator, "c@example.com")[2]
        resolve(emulator, after)
        found, cursor = await _drain(connector, cursor)
        assert found == [f"incident:{after}:resolved"]
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
    emulator.update("opportunity", opportunity, statecode=1, actualclosedate="2026-12-01T10:00:00Z")
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
