"""The send rate: turns spaced evenly in arrival order, and a turn too far away handed back to the hub."""

from __future__ import annotations

import asyncio

import pytest
from hub_sms.throttle import Throughput

from hub import TransientError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(asyncio, "sleep", fake.sleep)
    return fake


async def test_turns_are_spaced_by_the_rate(clock: Clock) -> None:
    pace = Throughput(per_second=2, max_wait=10, clock=clock)
    for _ in range(4):
        await pace.turn()
    assert clock.slept == [0.5, 1.0, 1.5]


async def test_time_that_passed_is_not_waited_again(clock: Clock) -> None:
    pace = Throughput(per_second=1, max_wait=10, clock=clock)
    await pace.turn()
    clock.now += 5
    await pace.turn()
    assert clock.slept == []


async def test_a_turn_beyond_max_wait_is_handed_back_unsent_and_books_nothing(clock: Clock) -> None:
    pace = Throughput(per_second=1, max_wait=2, clock=clock)
    for _ in range(3):
        await pace.turn()
    with pytest.raises(TransientError) as refused:
        await pace.turn()
    assert refused.value.sent is False and refused.value.retry_after == 3
    clock.now += 1
    await pace.turn()  # the refused turn took no slot
    assert clock.slept == [1.0, 2.0, 2.0]


async def test_no_rate_means_no_wait(clock: Clock) -> None:
    pace = Throughput(per_second=None, max_wait=1, clock=clock)
    for _ in range(100):
        await pace.turn()
    assert clock.slept == []
