"""The hub's share of Dataverse's 5-minute service protection window, summed over every hub process
through the usage ledger; a call the window has no room for is refused before it is sent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import pytest
from dynamics_support import make_connector, make_settings, seed_case
from hub_dynamics.budget import METER, WindowBudget
from hub_dynamics.emulator import DataverseEmulator

from hub import TransientError
from hub.testing.server import TlsServer


class Ledger:
    """The hub's usage ledger in memory: minute -> calls per meter, shared by every budget given it."""

    def __init__(self) -> None:
        self.meters: dict[str, Counter[int]] = {}

    async def add_and_read(self, meter: str, counts: Mapping[int, int], since_minute: int) -> dict[int, int]:
        totals = self.meters.setdefault(meter, Counter())
        totals.update(counts)
        return {m: c for m, c in totals.items() if m >= since_minute}


@pytest.mark.asyncio
async def test_two_processes_keep_to_one_allowance() -> None:
    now = [1_000_000.0]
    ledger = Ledger()
    first = WindowBudget(share=4 / 6000, clock=lambda: now[0])
    second = WindowBudget(share=4 / 6000, clock=lambda: now[0])
    for _ in range(3):
        first.acquire()
    await first.share_usage(ledger)
    await second.share_usage(ledger)
    second.acquire()  # the fourth call of the window
    with pytest.raises(TransientError) as refused:
        second.acquire()
    assert refused.value.sent is False and refused.value.retry_after and refused.value.retry_after <= 60
    now[0] += 301  # the window has slid past those calls
    second.acquire()


@pytest.mark.asyncio
async def test_the_connector_reports_its_calls_to_the_ledger(
    emulator: DataverseEmulator, server: TlsServer
) -> None:
    ledger = Ledger()
    connector = make_connector(make_settings(server), usage=ledger)
    try:
        contact = seed_case(emulator)[1]
        await connector.fetch_events(None)
        await connector.get_person(contact)
        await connector.fetch_events(None)
        assert sum(ledger.meters[METER].values()) >= 3
    finally:
        await connector.aclose()


@pytest.mark.asyncio
async def test_check_says_when_the_window_holds_the_sync(
    emulator: DataverseEmulator, server: TlsServer
) -> None:
    """`cxhub check` runs in a fresh process: what the workers spent reaches it through the usage ledger."""
    import time

    ledger = Ledger()
    ledger.meters[METER] = Counter({int(time.time() // 60): 3000})  # the workers' calls of this minute
    connector = make_connector(make_settings(server), usage=ledger)
    try:
        results = {r.name: r for r in await connector.check()}
    finally:
        await connector.aclose()
    window = results["service protection"]
    assert not window.ok and "of the hub's 3000 requests per 5 minutes" in window.detail
    assert "window_request_share" in window.detail
