"""The API budget governor with a usage ledger: no call counted twice or lost, and waits that are honest.

The ledger here is an in-memory stand-in with fault switches; the real one (the hub's database) is shown in
``tests/test_usage_ledger.py`` and, across worker processes, in ``test_salesforce_resilience.py``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping

import pytest
from hub_salesforce.budget import METER, ApiBudget

from hub import TransientError


class Ledger:
    """Sums counts per meter; ``fail`` names a meter whose next visit raises, ``gate`` holds visits."""

    def __init__(self) -> None:
        self.totals: dict[str, Counter[int]] = {}
        self.fail: str | None = None
        self.gate: asyncio.Event | None = None

    async def add_and_read(self, meter: str, counts: Mapping[int, int], since_minute: int) -> dict[int, int]:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail == meter:
            self.fail = None
            raise OSError("database is locked")
        total = self.totals.setdefault(meter, Counter())
        total.update(counts)
        return {m: c for m, c in total.items() if m >= since_minute}


def budget_of(allowance: int, now: list[float]) -> ApiBudget:
    budget = ApiBudget(share=allowance / 1000, clock=lambda: now[0])
    budget.org_max = 1000
    return budget


async def test_a_visit_that_fails_half_way_hands_no_call_over_twice() -> None:
    ledger, now = Ledger(), [1_000_000.0]
    budget = budget_of(100, now)
    for _ in range(10):
        budget.acquire()
    ledger.fail = "request_limit_exceeded"  # the calls are stored, then the second meter fails
    await budget.share_usage(ledger)
    await budget.share_usage(ledger)
    assert sum(ledger.totals[METER].values()) == 10
    assert budget.state()["hub_spent_in_window"] == 10

    for _ in range(5):
        budget.acquire()
    ledger.fail = METER  # the calls were not stored: they wait for the next visit
    await budget.share_usage(ledger)
    assert budget.state()["hub_spent_in_window"] == 15
    await budget.share_usage(ledger)
    assert sum(ledger.totals[METER].values()) == 15


async def test_calls_on_their_way_to_the_ledger_still_count() -> None:
    ledger, now = Ledger(), [1_000_000.0]
    budget = budget_of(10, now)
    for _ in range(10):
        budget.acquire()
    ledger.gate = asyncio.Event()
    visit = asyncio.create_task(budget.share_usage(ledger))
    await asyncio.sleep(0.01)  # the visit holds the calls and waits on the database
    with pytest.raises(TransientError, match="is spent"):
        budget.acquire()
    ledger.gate.set()
    await visit
    assert budget.state()["hub_spent_in_window"] == 10


def test_a_spent_budget_waits_until_enough_old_minutes_have_left_the_window() -> None:
    now = [86_400.0 * 30]
    budget = budget_of(10, now)
    for minute, calls in ((0, 6), (1, 3), (2, 1)):
        now[0] = 86_400.0 * 30 + minute * 60
        for _ in range(calls):
            budget.acquire()
    with pytest.raises(TransientError) as refused:
        budget.acquire()
    assert refused.value.sent is False, "nothing was sent: the sync counts no attempt"
    # one call frees up when the first minute (6 calls) leaves the 24-hour window, 24 h after it began
    assert refused.value.retry_after == pytest.approx(86_400 - 120)
    now[0] += refused.value.retry_after
    budget.acquire()
