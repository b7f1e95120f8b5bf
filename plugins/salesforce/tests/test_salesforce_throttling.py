"""Salesforce's throttling replies, each taken for what it says: a Retry-After is honoured as given, the
concurrent request limit is a short wait, and only the spent daily allowance stops every worker for
``limit_pause_seconds``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hub_salesforce.budget import SHORT_PAUSE_SECONDS, parse_limit_info
from hub_salesforce.connector import SalesforceConnector
from hub_salesforce.emulator import (
    CONCURRENT_LIMIT_MESSAGE,
    DAILY_LIMIT_MESSAGE,
    SalesforceEmulator,
    TlsServer,
)
from salesforce_support import make_connector, make_settings

from hub import TransientError
from hub.store import Store
from hub.store.usage import StoreUsageLedger
from hub.testing.harness import CONNECTOR


@pytest.fixture
async def workers(
    server: TlsServer, app_keys: tuple[str, str], emulator: SalesforceEmulator, tmp_path: Path
) -> AsyncIterator[tuple[SalesforceConnector, SalesforceConnector]]:
    """Two hub processes sharing one database, as ``cxhub worker`` runs them."""
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    await store.upgrade()
    settings = make_settings(server, app_keys[0], emulator)
    pair = (
        make_connector(settings, usage=StoreUsageLedger(store, CONNECTOR)),
        make_connector(settings, usage=StoreUsageLedger(store, CONNECTOR)),
    )
    yield pair
    for worker in pair:
        await worker.aclose()
    await store.dispose()


async def refused_then_shared(
    refused: SalesforceConnector, other: SalesforceConnector, contact: str
) -> TransientError:
    """One call refused; then both workers visit the ledger as they do around each batch."""
    with pytest.raises(TransientError, match="REQUEST_LIMIT_EXCEEDED") as refusal:
        await refused.get_person(contact)
    await refused.client.budget.share_usage(refused.ctx.usage)
    await other.client.budget.share_usage(other.ctx.usage)
    return refusal.value


@pytest.mark.parametrize("status", [429, 403])
async def test_a_limit_reply_with_retry_after_pauses_that_long_and_no_longer(
    workers: tuple[SalesforceConnector, SalesforceConnector], emulator: SalesforceEmulator, status: int
) -> None:
    refused, other = workers
    contact = emulator.add_contact("Kari", "Dahl", email="kari@nordlys.example")
    await refused.get_person(contact)
    emulator.fail_next(
        1, status, retry_after=5, code="REQUEST_LIMIT_EXCEEDED", message=CONCURRENT_LIMIT_MESSAGE
    )
    error = await refused_then_shared(refused, other, contact)
    assert error.retry_after == 5 and error.sent is False
    state = refused.client.budget.state()
    assert 0 < state["paused_for_seconds"] <= 5, "stretched beyond the Retry-After Salesforce gave"
    assert other.client.budget.state()["paused_for_seconds"] == 0
    assert await other.get_person(contact) is not None, "the other worker goes on"
    budget = refused.client.budget
    later = budget.clock() + 6
    budget.clock = lambda: later
    assert await refused.get_person(contact) is not None, "after the Retry-After the calls go again"


async def test_the_concurrent_request_limit_is_a_short_pause_not_the_daily_one(
    workers: tuple[SalesforceConnector, SalesforceConnector], emulator: SalesforceEmulator
) -> None:
    refused, other = workers
    contact = emulator.add_contact("Kari", "Dahl", email="kari@nordlys.example")
    await other.get_person(contact)
    emulator.refuse_concurrent()
    error = await refused_then_shared(refused, other, contact)
    assert CONCURRENT_LIMIT_MESSAGE in str(error)
    assert error.retry_after == SHORT_PAUSE_SECONDS < refused.settings.limit_pause_seconds
    assert error.sent is False, "a refused call writes nothing and uses no attempt"
    assert 0 < refused.client.budget.state()["paused_for_seconds"] <= SHORT_PAUSE_SECONDS
    assert other.client.budget.state()["paused_for_seconds"] == 0
    assert await other.get_person(contact) is not None


async def test_the_spent_daily_allowance_still_pauses_every_worker_for_the_long_pause(
    workers: tuple[SalesforceConnector, SalesforceConnector], emulator: SalesforceEmulator
) -> None:
    refused, other = workers
    contact = emulator.add_contact("Kari", "Dahl", email="kari@nordlys.example")
    await other.get_person(contact)
    emulator.api_used = emulator.daily_limit
    error = await refused_then_shared(refused, other, contact)
    assert DAILY_LIMIT_MESSAGE in str(error)
    assert error.retry_after == refused.settings.limit_pause_seconds and error.sent is False
    assert other.client.budget.state()["paused_for_seconds"] >= refused.settings.limit_pause_seconds - 60


async def test_the_emulator_answers_the_concurrent_limit_as_salesforce_does(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    await connector.client.connect()
    used = emulator.api_used
    emulator.refuse_concurrent()
    reply = await connector.client.call(
        lambda sf: sf.session.get(
            f"{sf.base_url}sobjects/Contact/describe", headers={"Authorization": f"Bearer {sf.session_id}"}
        ),
        "raw",
    )
    assert reply.status_code == 403 and "Retry-After" not in reply.headers
    assert reply.json() == [
        {"message": CONCURRENT_LIMIT_MESSAGE, "errorCode": "REQUEST_LIMIT_EXCEEDED", "fields": []}
    ]
    usage = parse_limit_info(reply.headers["Sforce-Limit-Info"])
    assert usage is not None and used <= usage[0] < usage[1], "the daily allowance is not what was refused"
