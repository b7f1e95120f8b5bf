"""A Salesforce that cannot be reached: a call that never left uses no write-back attempt, one that may have
been applied does, and nothing queued is lost.

The refusals are real: the connector logs in at the emulator (HTTPS) and then calls an instance on a
loopback port where nothing listens, or logs in at such a port.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hub_salesforce.bulk import PollPolicy
from hub_salesforce.connector import SalesforceConnector
from hub_salesforce.emulator import SalesforceEmulator, TlsServer
from requests.adapters import HTTPAdapter
from salesforce_support import SalesforceHarness, make_connector, make_settings
from sqlalchemy import select
from test_salesforce_resilience import items_for
from urllib3.exceptions import MaxRetryError, NewConnectionError

from hub import TransientError
from hub.store.tables import WriteBack
from hub.testing import build_hub
from hub.testing.harness import CONNECTOR
from hub.testing.suite import _answer


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def unreachable(
    server: TlsServer, app_keys: tuple[str, str], emulator: SalesforceEmulator, request: pytest.FixtureRequest
) -> AsyncIterator[SalesforceConnector]:
    """Logs in at the emulator; every data call then goes to an instance whose connection is refused."""
    extra: dict[str, Any] = getattr(request, "param", {})
    settings = make_settings(
        server, app_keys[0], emulator, instance_url=f"https://127.0.0.1:{closed_port()}", **extra
    )
    connector = make_connector(settings)
    yield connector
    await connector.aclose()


def one_of_each(emulator: SalesforceEmulator) -> list[Any]:
    contact = emulator.add_contact("Eva", "Holm", email="eva@nordlys.example")
    case = emulator.close_case(emulator.add_case("Slow", contact))["Id"]
    return items_for(contact, case, "r1", 1)


@pytest.mark.parametrize(
    ("kind", "unreachable"),
    [
        ("summary", {}),  # sObject Collections
        ("timeline", {}),  # sObject Collections upsert
        ("case", {}),  # the noted-answer query, then Composite
        ("summary", {"bulk_threshold": 1}),  # Bulk API 2.0
        ("timeline", {"bulk_threshold": 1}),
        ("case", {"bulk_threshold": 1}),
    ],
    indirect=["unreachable"],
)
async def test_a_refused_connection_on_any_write_path_is_not_sent(
    unreachable: SalesforceConnector, emulator: SalesforceEmulator, kind: str
) -> None:
    item = {"summary": 0, "timeline": 1, "case": 2}[kind]
    with pytest.raises(TransientError, match="unreachable") as refused:
        await unreachable.write_back([one_of_each(emulator)[item]])
    assert refused.value.sent is False, "nothing reached Salesforce: no attempt may be used"


async def test_a_refused_connection_while_polling_or_reading_is_not_sent(
    unreachable: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    contact = emulator.add_contact("Eva", "Holm", email="eva@nordlys.example")
    for call in (lambda: unreachable.fetch_events(None), lambda: unreachable.get_person(contact)):
        with pytest.raises(TransientError, match="unreachable") as refused:
            await call()
        assert refused.value.sent is False
    checks = {c.name: c for c in await unreachable.check()}
    assert any(not c.ok and "unreachable" in c.detail for c in checks.values()), checks


async def test_a_token_endpoint_that_refuses_the_connection_is_not_sent(
    server: TlsServer, app_keys: tuple[str, str], emulator: SalesforceEmulator
) -> None:
    settings = make_settings(server, app_keys[0], emulator)
    connector = make_connector(
        settings.model_copy(update={"login_url": f"https://127.0.0.1:{closed_port()}"})
    )
    try:
        with pytest.raises(TransientError, match="unreachable") as refused:
            await connector.write_back([one_of_each(emulator)[0]])
        checks = await connector.check()
    finally:
        await connector.aclose()
    assert refused.value.sent is False
    assert [(c.name, c.ok) for c in checks] == [("connection", False)]


async def test_a_call_that_timed_out_reading_the_reply_may_have_been_applied(
    server: TlsServer, app_keys: tuple[str, str], emulator: SalesforceEmulator
) -> None:
    """The request left: Salesforce may have saved it, so that failure is an attempt like any other."""
    items = one_of_each(emulator)
    connector = make_connector(make_settings(server, app_keys[0], emulator, timeout_seconds=0.3))
    try:
        await connector.client.connect()
        emulator.latency_seconds = 1.5
        with pytest.raises(TransientError, match="ReadTimeout") as timed_out:
            await connector.write_back([items[0]])
    finally:
        emulator.latency_seconds = 0.0
        await connector.aclose()
    assert timed_out.value.sent is True


async def test_an_outage_longer_than_every_attempt_loses_nothing(
    harness: SalesforceHarness, emulator: SalesforceEmulator, tmp_path: Path
) -> None:
    """The hub restarts while Salesforce cannot be reached, syncs many times, then Salesforce is back."""
    hub = await build_hub(harness, tmp_path)
    try:
        response_id = await _answer(hub, harness)
    finally:
        await hub.close()
    down = {**harness.settings(), "instance_url": f"https://127.0.0.1:{closed_port()}"}
    hub = await build_hub(harness, tmp_path, settings=down)
    try:
        max_attempts = hub.config.sync.max_attempts
        for _ in range(max_attempts + 2):
            stats = await hub.sync.run(CONNECTOR)
            assert stats.written == 0 and stats.error is not None and "unreachable" in stats.error
        async with hub.store.session() as s:
            rows = list(await s.scalars(select(WriteBack)))
        assert len(rows) == 3
        assert [(r.state, r.attempts) for r in rows] == [("queued", 0)] * 3
    finally:
        await hub.close()
    hub = await build_hub(harness, tmp_path)
    try:
        assert (await hub.sync.run(CONNECTOR)).written == 3
        assert harness.timeline_entries(response_id) == 1
    finally:
        await hub.close()


class _RefuseJobPolls(HTTPAdapter):
    """Fault injection: after the job is closed, polling its state finds Salesforce refusing connections."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if request.method == "GET":
            refused = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] refused")  # type: ignore[arg-type]
            raise requests.ConnectionError(MaxRetryError(None, request.url or "", refused), request=request)  # type: ignore[arg-type]
        return super().send(request, **kwargs)


async def test_a_bulk_job_closed_before_the_connection_was_refused_counts_as_sent(
    connector: SalesforceConnector, emulator: SalesforceEmulator, server: TlsServer
) -> None:
    """The job runs on in Salesforce and may write its records: that failure uses an attempt."""
    settings = connector.settings.model_copy(update={"bulk_threshold": 1})
    bulk = make_connector(settings)
    try:
        bulk._writer.bulk.policy = PollPolicy(first_seconds=0.01, max_seconds=0.05, timeout_seconds=5)
        await bulk.client.connect()
        version = settings.api_version
        bulk.client.session.mount(f"{server.url}/services/data/v{version}/jobs/ingest/", _RefuseJobPolls())
        with pytest.raises(TransientError, match="unreachable") as refused:
            await bulk.write_back([one_of_each(emulator)[0]])
    finally:
        await bulk.aclose()
    closed = [c for c in emulator.calls if c.method == "PATCH" and c.path.startswith("/jobs/ingest/")]
    assert [c.body for c in closed] == [{"state": "UploadComplete"}], "the job was closed, never aborted"
    assert refused.value.sent is True
