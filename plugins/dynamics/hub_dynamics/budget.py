"""Staying inside Dataverse's service protection limits: 6000 requests per user per 5-minute sliding window.

The hub allows itself ``share`` of that (the application user may be shared with other integrations),
counted per minute. With the hub's usage ledger (``hub.UsageLedger``) the counts of every hub process are
summed, so several workers keep to one allowance; ``share_usage`` hands over this process's new calls and
reads the totals back (the connector does it around each batch and poll). A 429 that stops a whole write is
left to the hub's sync, which holds every worker of the connector for the Retry-After; one that comes half-way
through a write (some items already written) is held here (``hold``). A refused call raises ``TransientError(sent=False)``: it never
reached Dataverse, so the sync spends no attempt on it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable

import structlog

from hub import TransientError, UsageLedger

log = structlog.get_logger("hub_dynamics.budget")

METER = "dataverse_requests"
WINDOW_SECONDS = 300.0
WINDOW_REQUESTS = 6000


class WindowBudget:
    """Calls per minute inside the sliding window; the event loop is the only caller (no lock needed)."""

    def __init__(self, share: float, clock: Callable[[], float] = time.time) -> None:
        self.allowance = max(1, int(WINDOW_REQUESTS * share))
        self.clock = clock
        self.held_until = 0.0
        self._new: Counter[int] = Counter()
        self._shared: dict[int, int] = {}
        self._sharing = asyncio.Lock()

    def _first_minute(self, now: float) -> int:
        return int(now // 60) - math.ceil(WINDOW_SECONDS / 60) + 1

    def spent(self, now: float | None = None) -> int:
        first = self._first_minute(self.clock() if now is None else now)
        minutes = Counter({m: c for m, c in self._shared.items() if m >= first})
        minutes.update({m: c for m, c in self._new.items() if m >= first})
        return sum(minutes.values())

    def acquire(self) -> None:
        """Reserve one request, or say (as ``TransientError(sent=False)``) when the window allows one."""
        now = self.clock()
        if now < self.held_until:
            raise TransientError(
                "Dataverse asked the hub to wait (service protection limit)",
                retry_after=self.held_until - now,
                sent=False,
            )
        if self.spent(now) >= self.allowance:
            wait = 60.0 - now % 60
            raise TransientError(
                f"the hub's share of Dataverse's service protection window ({self.allowance} requests "
                "per 5 minutes) is spent",
                retry_after=wait,
                sent=False,
            )
        self._new[int(now // 60)] += 1

    def hold(self, seconds: float) -> None:
        """A 429 came half-way through a write: no call of this process before Retry-After has passed,
        so the next batch of the same run does not knock again (it is refused here, sent=False, and the
        hub then holds the connector)."""
        self.held_until = max(self.held_until, self.clock() + seconds)

    async def share_usage(self, ledger: UsageLedger | None) -> None:
        """Hand this process's new counts to the ledger and read every process's totals back."""
        if ledger is None:
            return
        async with self._sharing:
            new, self._new = self._new, Counter()
            try:
                self._shared = await ledger.add_and_read(METER, dict(new), self._first_minute(self.clock()))
            except Exception:
                self._new.update(new)
                log.exception("dynamics.budget_ledger_failed")
