"""The usage ledger: API calls per minute summed over every hub process on one database, across restarts."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from hub.store.tables import Usage
from hub.store.usage import KEEP_EXTRA_MINUTES, StoreUsageLedger


async def test_two_processes_add_their_calls_and_both_read_the_sum(make_hub) -> None:
    hub = await make_hub()
    worker_a, worker_b = StoreUsageLedger(hub.store, "crm"), StoreUsageLedger(hub.store, "crm")
    assert await worker_a.add_and_read("calls", {1000: 3, 1001: 2}, since_minute=1000) == {1000: 3, 1001: 2}
    assert await worker_b.add_and_read("calls", {1001: 4}, since_minute=1000) == {1000: 3, 1001: 6}
    assert await worker_a.add_and_read("calls", {}, since_minute=1001) == {1001: 6}, "older minutes left out"


async def test_connectors_and_meters_are_counted_apart(make_hub) -> None:
    hub = await make_hub()
    org_one, org_two = StoreUsageLedger(hub.store, "sf_eu"), StoreUsageLedger(hub.store, "sf_us")
    await org_one.add_and_read("calls", {500: 7}, since_minute=0)
    await org_one.add_and_read("bulk_jobs", {500: 1}, since_minute=0)
    assert await org_two.add_and_read("calls", {500: 1}, since_minute=0) == {500: 1}
    assert await org_one.add_and_read("calls", {}, since_minute=0) == {500: 7}


async def test_concurrent_additions_to_one_minute_lose_nothing(make_hub) -> None:
    hub = await make_hub()
    workers = [StoreUsageLedger(hub.store, "crm") for _ in range(5)]
    await asyncio.gather(
        *(w.add_and_read("calls", {42: 10}, since_minute=0) for w in workers for _ in range(4))
    )
    assert await workers[0].add_and_read("calls", {}, since_minute=0) == {42: 200}


async def test_minutes_long_past_the_window_are_dropped_from_the_table(make_hub) -> None:
    hub = await make_hub()
    ledger = StoreUsageLedger(hub.store, "crm")
    await ledger.add_and_read("calls", {10: 1, 5000: 1}, since_minute=0)
    await ledger.add_and_read("calls", {}, since_minute=10 + KEEP_EXTRA_MINUTES + 1)
    async with hub.store.session() as s:
        kept = sorted(await s.scalars(select(Usage.minute)))
    assert kept == [5000]
