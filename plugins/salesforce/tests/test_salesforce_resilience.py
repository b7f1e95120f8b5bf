"""Sessions that expire mid-sync, an API budget that runs out, and the limits the emulator enforces."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hub_salesforce.client import RecordError
from hub_salesforce.connector import SalesforceConnector
from hub_salesforce.emulator import SalesforceEmulator, TlsServer, generate_key_pair
from salesforce_support import SalesforceHarness, make_connector, make_settings
from sqlalchemy import select

from hub import (
    CaseFeedback,
    NpsCategory,
    PersonSummary,
    SurveyKind,
    TimelineEntry,
    TransientError,
    WriteBackItem,
)
from hub.store import Store
from hub.store.tables import WriteBack
from hub.store.usage import StoreUsageLedger
from hub.testing import build_hub
from hub.testing.harness import CONNECTOR
from hub.testing.memory import MemoryChannel
from hub.testing.suite import _answer


def items_for(contact: str, case: str, response_id: str, first_id: int) -> list[WriteBackItem]:
    now = datetime.now(UTC)
    return [
        WriteBackItem(
            id=first_id,
            key=f"summary:{contact}",
            record_id=contact,
            payload=PersonSummary(
                latest_rating=9,
                latest_score=90,
                latest_category=NpsCategory.PROMOTER,
                latest_date=now,
                latest_comment="quick",
                average_rating=9,
                average_rating_30_days=9,
                average_score=90,
                count=1,
            ),
        ),
        WriteBackItem(
            id=first_id + 1,
            key=f"timeline:{response_id}",
            record_id=contact,
            payload=TimelineEntry(
                response_id=response_id,
                campaign="support",
                survey_kind=SurveyKind.NPS,
                rating=9,
                score=90,
                category=NpsCategory.PROMOTER,
                comment="quick",
                answered_at=now,
                channel="email",
                case_id=case,
                language="en",
            ),
        ),
        WriteBackItem(
            id=first_id + 2,
            key=f"case:{response_id}",
            record_id=case,
            payload=CaseFeedback(
                response_id=response_id,
                rating=9,
                score=90,
                category=NpsCategory.PROMOTER,
                comment="quick",
                processed_at=now,
                internal_comment=True,
            ),
        ),
    ]


async def test_session_expiring_mid_sync_is_renewed_and_nothing_is_written_twice(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    batch: list[WriteBackItem] = []
    for n in range(3):
        contact = emulator.add_contact("Kari", f"Dahl{n}", email=f"kari.{n}@nordlys.example")
        case = emulator.close_case(emulator.add_case("Broken", contact))["Id"]
        batch += items_for(contact, case, f"resp-{n}", n * 10 + 1)
    await connector.client.connect()
    emulator.expire_sessions(after_calls=2)  # the third call of the run finds its session gone
    results = await connector.write_back(batch)
    assert [r.status for r in results] == ["ok"] * len(batch), results
    assert connector.client.logins == 2 and emulator.logins == 2
    # the refused call is the one repeated after the new login; every write went out exactly once
    refused = [c for c in emulator.calls if c.status == 401]
    assert len(refused) == 1 and emulator.calls[emulator.calls.index(refused[0]) + 2].path == refused[0].path
    writes = [c.path for c in emulator.calls if c.method in ("PATCH", "POST") and "composite" in c.path]
    assert len(writes) == len(set(writes)) == 3  # summaries, timeline upsert, case update with its comment
    assert sorted(r["Response_Id__c"] for r in emulator.records("Survey_Response__c")) == [
        "resp-0",
        "resp-1",
        "resp-2",
    ]
    assert len(emulator.records("CaseComment")) == 3
    # the whole batch again, as after a crash: still one of each
    assert [r.status for r in await connector.write_back(batch)] == ["ok"] * len(batch)
    assert len(emulator.records("Survey_Response__c")) == 3
    assert len(emulator.records("CaseComment")) == 3


async def test_exhausted_budget_pauses_sync_and_resumes_later_with_nothing_lost(
    emulator: SalesforceEmulator, server: TlsServer, harness: SalesforceHarness, tmp_path: Path
) -> None:
    emulator.daily_limit = 1000
    MemoryChannel.sent.clear()
    hub = await build_hub(harness, tmp_path, settings={**harness.settings(), "api_budget_share": 0.01})
    try:
        response_id = await _answer(hub, harness)
        budget = hub.connectors[CONNECTOR].client.budget  # type: ignore[attr-defined]
        clock = [budget.clock()]
        budget.clock = lambda: clock[0]
        assert budget.allowance == 10
        with pytest.raises(TransientError):
            for _ in range(20):
                budget.acquire()  # another part of the hub spent the rest of the share
        calls_before = len(emulator.calls)
        stats = await hub.sync.run(CONNECTOR)
        assert stats.written == 0 and stats.error is not None and "budget" in stats.error
        assert len(emulator.calls) == calls_before, "no call may reach Salesforce once the budget is spent"
        async with hub.store.session() as s:
            rows = list(await s.scalars(select(WriteBack)))
        assert len(rows) == 3 and all(r.state == "queued" for r in rows)
        assert min(r.next_attempt_at for r in rows) >= hub.now() + timedelta(seconds=3600)

        clock[0] += 86400  # the rolling window has moved on
        later = max(r.next_attempt_at for r in rows) + timedelta(seconds=1)
        hub.now = lambda: later
        assert (await hub.sync.run(CONNECTOR)).written == 3
        assert harness.timeline_entries(response_id) == 1
    finally:
        await hub.close()


async def test_request_limit_exceeded_stops_calls_for_a_while(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    await connector.client.connect()
    emulator.api_used = emulator.daily_limit
    with pytest.raises(TransientError) as first:
        await connector.get_person("0035g0000000000001AAA")
    assert first.value.retry_after == connector.settings.limit_pause_seconds
    calls = len(emulator.calls)
    with pytest.raises(TransientError):
        await connector.get_person("0035g0000000000001AAA")
    assert len(emulator.calls) == calls, "the pause must keep the hub from hammering"


async def test_jwt_signed_with_a_wrong_key_is_refused(
    server: TlsServer, emulator: SalesforceEmulator
) -> None:
    stranger = make_connector(make_settings(server, generate_key_pair()[0], emulator))
    try:
        results = await stranger.check()
    finally:
        await stranger.aclose()
    assert [(r.name, r.ok) for r in results] == [("credentials", False)]
    assert "invalid_grant" in results[0].detail
    assert emulator.logins == 0


async def test_emulator_refuses_more_than_200_records(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    contact = emulator.add_contact("Eva", "Holm", email="eva@nordlys.example")
    records = [{"attributes": {"type": "Contact"}, "id": contact, "Title": "x"} for _ in range(201)]
    body = {"allOrNone": False, "records": [{k: v for k, v in r.items() if k != "Title"} for r in records]}
    with pytest.raises(RecordError) as refused:
        await connector.client.call(
            lambda sf: sf.restful("composite/sobjects", method="PATCH", json=body), "too many"
        )
    assert refused.value.codes == ["EXCEEDED_ID_LIMIT"]
    with pytest.raises(ValueError):
        await connector.client.update_records(body["records"])


async def test_summaries_are_coalesced_per_contact_in_one_call(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    contact = emulator.add_contact("Eva", "Holm", email="eva@nordlys.example")
    case = emulator.close_case(emulator.add_case("Slow", contact))["Id"]
    first = items_for(contact, case, "r1", 1)[0]
    newer = first.model_copy(
        update={"id": 2, "payload": first.payload.model_copy(update={"latest_rating": 3, "count": 2})}
    )
    await connector.client.connect()
    before = len(emulator.calls)
    results = await connector.write_back([newer, first])
    assert [r.status for r in results] == ["ok", "ok"]
    assert len(emulator.calls) - before == 1
    assert emulator.org.records["Contact"][contact]["CXHub_Latest_Rating__c"] == 3


async def test_a_call_that_hangs_times_out_as_a_transient_error_and_the_next_one_works(
    server: TlsServer, app_keys: tuple[str, str], emulator: SalesforceEmulator
) -> None:
    """simple-salesforce sets no timeout; without ours a hung Salesforce would hold the write forever."""
    contact = emulator.add_contact("Kari", "Dahl", email="kari@nordlys.example")
    connector = make_connector(make_settings(server, app_keys[0], emulator, timeout_seconds=0.3))
    try:
        await connector.client.connect()
        emulator.latency_seconds = 1.5
        with pytest.raises(TransientError, match=r"Salesforce unreachable \(ReadTimeout\)"):
            await connector.get_person(contact)
        emulator.latency_seconds = 0.0
        person = await connector.get_person(contact)
    finally:
        await connector.aclose()
    assert person is not None and person.email == "kari@nordlys.example"


async def test_workers_and_a_restarted_hub_keep_to_one_budget_through_the_database(
    server: TlsServer, app_keys: tuple[str, str], emulator: SalesforceEmulator, tmp_path: Path
) -> None:
    """Two worker processes on one database, then a third started later: 10 calls between them, not 10 each."""
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    await store.upgrade()
    emulator.daily_limit = 1000
    contact = emulator.add_contact("Kari", "Dahl", email="kari@nordlys.example")
    settings = make_settings(server, app_keys[0], emulator, api_budget_share=0.01)  # 10 calls a day
    workers = [make_connector(settings, usage=StoreUsageLedger(store, CONNECTOR)) for _ in range(3)]
    first, second, restarted = workers
    try:
        for _ in range(6):
            await first.get_person(contact)
        await first.client.budget.share_usage(first.ctx.usage)  # as after each batch
        await second.client.budget.share_usage(second.ctx.usage)  # as before each batch
        for _ in range(4):
            await second.get_person(contact)
        calls = len(emulator.calls)
        with pytest.raises(TransientError, match=r"the hub's API budget \(10 calls per 86400 s"):
            await second.get_person(contact)
        assert len(emulator.calls) == calls, "the refused call never reached Salesforce"
        await second.client.budget.share_usage(second.ctx.usage)
        checks = {c.name: c for c in await restarted.check()}  # a new process: `cxhub check`
    finally:
        for worker in workers:
            await worker.aclose()
        await store.dispose()
    # the new process logs in and makes one call: the reply that tells it the org's allowance; then it stops
    made = [(c.method, c.path) for c in emulator.calls[calls:]]
    assert made == [("POST", "/services/oauth2/token"), ("GET", "/sobjects/Contact/describe")]
    assert not checks["fields"].ok and "budget" in checks["fields"].detail
    budget = checks["api budget"]
    assert (
        not budget.ok and "the hub spent 11 of its 10" in budget.detail and "share is spent" in budget.detail
    )


async def test_calls_go_through_the_configured_proxy(
    server: TlsServer, app_keys: tuple[str, str], emulator: SalesforceEmulator
) -> None:
    """A real CONNECT proxy on loopback: login and data calls tunnel through it, TLS still checked end to end."""
    tunnels: list[str] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = request.split(b"\r\n", 1)[0].decode().split(" ")
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            writer.close()
            return
        tunnels.append(target)
        host, port = target.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    proxy = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    contact = emulator.add_contact("Kari", "Dahl", email="kari@nordlys.example")
    connector = make_connector(make_settings(server, app_keys[0], emulator, proxy=f"http://127.0.0.1:{port}"))
    try:
        person = await connector.get_person(contact)
    finally:
        await connector.aclose()
        proxy.close()
    assert person is not None and person.email == "kari@nordlys.example"
    target = server.url.removeprefix("https://")
    assert tunnels and set(tunnels) == {target}, "every call, the login included, went through the proxy"


async def test_request_limit_exceeded_pauses_every_worker_on_the_database(
    server: TlsServer, app_keys: tuple[str, str], emulator: SalesforceEmulator, tmp_path: Path
) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    await store.upgrade()
    contact = emulator.add_contact("Kari", "Dahl", email="kari@nordlys.example")
    settings = make_settings(server, app_keys[0], emulator)
    refused, other = (make_connector(settings, usage=StoreUsageLedger(store, CONNECTOR)) for _ in range(2))
    try:
        await other.get_person(contact)  # the other worker is up and has talked to Salesforce
        emulator.api_used = emulator.daily_limit  # the org's allowance is gone, spent by someone else
        with pytest.raises(TransientError, match="REQUEST_LIMIT_EXCEEDED"):
            await refused.get_person(contact)
        await refused.client.budget.share_usage(refused.ctx.usage)  # after its batch
        await other.client.budget.share_usage(other.ctx.usage)  # before its next batch
        calls = len(emulator.calls)
        with pytest.raises(TransientError, match="pausing") as paused:
            await other.get_person(contact)
        assert len(emulator.calls) == calls, "the other worker did not hammer Salesforce"
        assert paused.value.retry_after is not None
        assert paused.value.retry_after >= settings.limit_pause_seconds - 60
        state = other.client.budget.state()
    finally:
        await refused.aclose()
        await other.aclose()
        await store.dispose()
    assert state["paused_for_seconds"] > 0
