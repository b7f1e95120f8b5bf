"""Group commit: webhooks of one moment share a transaction, and each sender still gets its own outcome."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from hub.models import CaseEvent
from hub.store.group_commit import GATHER_TURNS, GroupCommit
from hub.store.tables import Event


def case(event_id: str) -> CaseEvent:
    return CaseEvent(
        event_id=event_id,
        event_type="case.closed",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        record_type="case",
        record_id=event_id,
        person_id="P1",
    )


async def test_deliveries_of_one_moment_store_each_event_once_and_call_one_of_them_new(make_hub) -> None:
    hub = await make_hub()
    # 30 senders at once: 10 events, each delivered three times (a CRM's retries, webhook and poll overlap)
    deliveries = [(f"case:G{i % 10}:closed", i) for i in range(30)]
    results = await asyncio.gather(
        *(hub.engine.receive("crm", [case(event_id)], "webhook", raw=b"%d" % i) for event_id, i in deliveries)
    )
    new_per_event: dict[str, int] = {}
    for (event_id, _), [new] in zip(deliveries, results, strict=True):
        new_per_event[event_id] = new_per_event.get(event_id, 0) + new
    assert new_per_event == {f"case:G{i}:closed": 1 for i in range(10)}
    async with hub.store.session() as s:
        stored = dict((await s.execute(select(Event.event_id, func.count()).group_by(Event.event_id))).all())
    assert stored == {f"case:G{i}:closed": 1 for i in range(10)}

    # delivered again later: stored already, so not new, and still once
    assert await hub.engine.receive("crm", [case("case:G3:closed"), case("case:G10:closed")], "poll") == [
        False,
        True,
    ]


class Recorder:
    """A write function that records its batches; items named "bad" make a batch fail as a database would."""

    def __init__(self, failure: Exception | None = None, lost_connections: int = 0) -> None:
        self.batches: list[list[str]] = []
        self.failure = failure or IntegrityError("INSERT", {}, Exception("bad row"))
        self.lost_connections = lost_connections

    async def write(self, items: list[str]) -> list[str]:
        await asyncio.sleep(0.01)  # a commit takes a moment: requests arriving meanwhile form the next batch
        if self.lost_connections:
            self.lost_connections -= 1
            raise DBAPIError("COMMIT", {}, Exception("connection reset"), connection_invalidated=True)
        if "bad" in items:
            raise self.failure
        self.batches.append(items)
        return [f"stored {item}" for item in items]


async def test_requests_of_one_moment_share_a_batch_and_later_ones_the_next() -> None:
    written = asyncio.Event()
    recorder = Recorder()

    async def write(items: list[str]) -> list[str]:
        results = await recorder.write(items)
        if len(recorder.batches) == 1:
            await written.wait()  # the first batch's commit takes a while
        return results

    writer: GroupCommit[str, str] = GroupCommit(write)
    first = [asyncio.create_task(writer.submit(f"a{i}")) for i in range(5)]
    while not recorder.batches:  # the first five are being written
        await asyncio.sleep(0)
    later = [asyncio.create_task(writer.submit(f"b{i}")) for i in range(3)]
    await asyncio.sleep(0)
    written.set()
    assert await asyncio.gather(*first, *later) == [f"stored a{i}" for i in range(5)] + [
        f"stored b{i}" for i in range(3)
    ]
    assert recorder.batches == [[f"a{i}" for i in range(5)], [f"b{i}" for i in range(3)]]


async def test_requests_still_on_their_way_join_the_batch_within_a_few_turns_of_the_loop() -> None:
    """A request reaches ``submit`` a turn or two after the others of its moment (its form parsed, its link
    checked): the writer waits for it while requests keep joining, but at most ``GATHER_TURNS`` turns, and
    not at all once a turn brings nobody new, so a lone request waits for one turn only."""
    recorder = Recorder()
    writer: GroupCommit[str, str] = GroupCommit(recorder.write)

    async def after(turns: int, item: str) -> str:
        for _ in range(turns):
            await asyncio.sleep(0)
        return await writer.submit(item)

    joining = [after(turn, f"t{turn}") for turn in range(GATHER_TURNS + 3)]
    assert await asyncio.gather(*joining) == [f"stored t{turn}" for turn in range(GATHER_TURNS + 3)]
    first = recorder.batches[0]
    assert first == [f"t{turn}" for turn in range(GATHER_TURNS + 1)]  # gathered for GATHER_TURNS turns
    assert [item for batch in recorder.batches for item in batch] == [
        f"t{turn}" for turn in range(GATHER_TURNS + 3)
    ]

    recorder.batches.clear()
    assert await writer.submit("alone") == "stored alone"
    assert recorder.batches == [["alone"]]


async def test_an_item_the_database_refuses_fails_its_own_caller_only() -> None:
    recorder = Recorder()
    writer: GroupCommit[str, str] = GroupCommit(recorder.write)
    results = await asyncio.gather(
        *(writer.submit(item) for item in ("x", "bad", "y")), return_exceptions=True
    )
    assert results[0] == "stored x" and results[2] == "stored y"
    assert isinstance(results[1], IntegrityError)
    assert sorted(map(tuple, recorder.batches)) == [("x",), ("y",)]


async def test_an_unreachable_database_fails_the_whole_batch_so_every_sender_retries() -> None:
    unreachable = OperationalError("INSERT", {}, Exception("connection refused"))
    recorder = Recorder(failure=unreachable)
    writer: GroupCommit[str, str] = GroupCommit(recorder.write)
    results = await asyncio.gather(
        *(writer.submit(item) for item in ("x", "bad", "y")), return_exceptions=True
    )
    assert results == [unreachable] * 3
    assert recorder.batches == []


async def test_a_batch_cut_by_a_lost_connection_is_written_once_more() -> None:
    recorder = Recorder(lost_connections=1)
    writer: GroupCommit[str, str] = GroupCommit(recorder.write)
    assert await asyncio.gather(writer.submit("x"), writer.submit("y")) == ["stored x", "stored y"]
    assert recorder.batches == [["x", "y"]]

    recorder.lost_connections = 2  # lost again on the fresh connection: the senders are told to retry
    with pytest.raises(DBAPIError):
        await writer.submit("z")


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_with_two_batches_in_flight_the_next_is_written_while_one_waits_for_the_database(
    in_flight: int,
) -> None:
    """On PostgreSQL a batch spends most of its time waiting for round trips: a second batch then goes out
    beside it, instead of every answer of the moment waiting for the first one's commit. Each caller still
    gets its own outcome, and no item is written twice or left behind."""
    release = asyncio.Event()
    started: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        started.append(items)
        if len(started) == 1:
            await release.wait()  # the first batch waits for the database
        return [item * 10 for item in items]

    writer: GroupCommit[int, int] = GroupCommit(write, in_flight=in_flight)
    first = asyncio.create_task(writer.submit(1))
    while not started:  # the first batch is out
        await asyncio.sleep(0)
    later = [asyncio.create_task(writer.submit(item)) for item in (2, 3)]
    await asyncio.sleep(0.05)
    assert len(started) == in_flight  # one batch at a time, or the second out beside the first
    release.set()
    assert await first == 10 and [await task for task in later] == [20, 30]
    assert sorted(item for batch in started for item in batch) == [1, 2, 3]


async def test_two_writers_gathering_the_same_arrivals_never_write_an_empty_batch() -> None:
    """With two batches in flight both writers may gather the answers of one moment, and the first takes
    them all: the second must not open a transaction for nothing (on PostgreSQL a pool checkout and a commit
    for each such turn, a quarter of the batches under a stream of answers)."""
    written: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        written.append(items)
        await asyncio.sleep(0)
        return items

    writer: GroupCommit[int, int] = GroupCommit(write, in_flight=2)
    for wave in range(20):
        assert await asyncio.gather(*(writer.submit(wave * 10 + k) for k in range(5))) == [
            wave * 10 + k for k in range(5)
        ]
    assert all(written) and sorted(i for batch in written for i in batch) == [
        wave * 10 + k for wave in range(20) for k in range(5)
    ]
