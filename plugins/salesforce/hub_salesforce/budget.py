"""The API budget governor: the hub's own share of the org's daily API allowance.

Salesforce counts every REST call against one rolling-24-hour allowance shared by every integration of the
org, and reports it on each reply as ``Sforce-Limit-Info: api-usage=used/max``. The hub must never be the
integration that spends it, so it allows itself ``share`` of ``max`` over the window, counted from the calls
the hub made, and stops completely for a while when Salesforce answers REQUEST_LIMIT_EXCEEDED.

Calls are counted per minute. With a usage ledger (``hub.UsageLedger``, the hub's database) the counts of
every hub process are summed and survive a restart: ``share_usage`` adds this process's new calls and reads
the total back; the connector does that around each batch. A REQUEST_LIMIT_EXCEEDED answer is shared the same
way, so that every process pauses, not only the one that was refused. Between two visits a process counts its own new
calls on top of the last total it read, so several workers overshoot by at most the calls of one batch each.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog

from hub import TransientError, UsageLedger

log = structlog.get_logger("hub_salesforce.budget")

#: the ledger's name for REST API calls
METER = "rest_api_calls"
#: the ledger's name for REQUEST_LIMIT_EXCEEDED answers: one process's refusal pauses every process
REFUSALS = "request_limit_exceeded"

#: how long a REQUEST_LIMIT_EXCEEDED that is not the daily allowance (the concurrent long-running request
#: limit) and names no Retry-After stops the calls: such requests last 20 s and more, so some end by then
SHORT_PAUSE_SECONDS = 30.0

_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")


def parse_limit_info(header: str | None) -> tuple[int, int] | None:
    """``(used, max)`` from a Sforce-Limit-Info header; None when absent or unreadable."""
    match = _USAGE.search(header or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


class ApiBudget:
    """Thread-safe: calls run on a thread pool. ``clock`` returns seconds (wall clock by default)."""

    def __init__(
        self,
        share: float,
        window_seconds: float = 86400.0,
        pause_seconds: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.share = share
        self.window_seconds = window_seconds
        self.pause_seconds = pause_seconds
        self.clock = clock
        self.org_used: int | None = None
        self.org_max: int | None = None
        self.paused_until: float = 0.0
        #: calls per minute of this process not yet handed to the ledger
        self._new: Counter[int] = Counter()
        #: calls per minute of every process, as the ledger last said (this process's handed-over ones included)
        self._shared: dict[int, int] = {}
        #: calls taken from ``_new`` and on their way to the ledger: still counted until the totals are back
        self._handing: Counter[int] = Counter()
        #: minutes in which this process was refused with REQUEST_LIMIT_EXCEEDED, not yet in the ledger
        self._new_refusals: Counter[int] = Counter()
        self._lock = threading.Lock()
        #: one visit to the ledger at a time, so that older totals never overwrite newer ones
        self._sharing = asyncio.Lock()
        self._refused = False

    @property
    def allowance(self) -> int | None:
        """How many calls the hub may make per window; None until Salesforce has told the org's maximum."""
        return None if self.org_max is None else max(1, int(self.org_max * self.share))

    def _first_minute(self, now: float) -> int:
        """The oldest minute still inside the rolling window."""
        return int(now // 60) - math.ceil(self.window_seconds / 60) + 1

    def _minutes(self, now: float) -> Counter[int]:
        """Calls per minute inside the window: every process's as last read, plus this one's since."""
        first = self._first_minute(now)
        minutes = Counter({m: c for m, c in self._shared.items() if m >= first})
        for mine in (self._handing, self._new):
            minutes.update({m: c for m, c in mine.items() if m >= first})
        return minutes

    def _frees_at(self, minutes: Counter[int], allowance: int) -> float:
        """When enough of the oldest minutes have left the window for the next call to be allowed."""
        excess = sum(minutes.values()) - allowance + 1
        for minute in sorted(minutes):
            excess -= minutes[minute]
            if excess <= 0:
                return float((minute + math.ceil(self.window_seconds / 60)) * 60)
        return self.clock()

    def acquire(self) -> None:
        """Reserve one call, or raise ``TransientError`` saying when the window allows the next one."""
        with self._lock:
            now = self.clock()
            if now < self.paused_until:
                raise TransientError(
                    "Salesforce refused further calls (REQUEST_LIMIT_EXCEEDED); pausing",
                    retry_after=self.paused_until - now,
                    sent=False,
                )
            allowance = self.allowance
            minutes = self._minutes(now)
            if allowance is not None and sum(minutes.values()) >= allowance:
                self._refused = True
                raise TransientError(
                    f"the hub's API budget ({allowance} calls per {self.window_seconds:.0f} s, "
                    f"{self.share:.0%} of the org's {self.org_max}) is spent",
                    retry_after=max(1.0, self._frees_at(minutes, allowance) - now),
                    sent=False,
                )
            self._new[int(now // 60)] += 1

    async def share_usage(self, ledger: UsageLedger | None) -> None:
        """Hand this process's new calls to the ledger and take every process's total back.

        Without a ledger the count stays in this process. A ledger that fails keeps the calls for the next
        visit: the budget must not stop Salesforce work because the database hiccupped.
        """
        if ledger is None:
            return
        async with self._sharing:
            try:
                await self._visit(ledger)
            except Exception:
                log.exception("salesforce.budget_ledger_failed")

    async def _visit(self, ledger: UsageLedger) -> None:
        """Each meter on its own: a count the ledger did not take is kept for the next visit, and one it
        took is never handed over twice (even when the visit is cancelled half way)."""
        with self._lock:
            new, self._new = self._new, Counter()
            self._handing = Counter(new)
            now = self.clock()
        try:
            totals = await ledger.add_and_read(METER, dict(new), self._first_minute(now))
        except BaseException:
            with self._lock:
                self._new.update(new)
                self._handing = Counter()
            raise
        with self._lock:
            self._shared, self._handing = totals, Counter()
            refusals, self._new_refusals = self._new_refusals, Counter()
        try:
            refused = await ledger.add_and_read(
                REFUSALS, dict(refusals), int((now - self.pause_seconds) // 60) - 1
            )
        except BaseException:
            with self._lock:
                self._new_refusals.update(refusals)
            raise
        if refused:  # another process (or this one before a restart) was told to stop: so are we
            with self._lock:
                latest = max(refused)
                self.paused_until = max(self.paused_until, (latest + 1) * 60 + self.pause_seconds)

    def observe(self, header: str | None) -> None:
        """Read the org's usage from a reply's Sforce-Limit-Info header."""
        usage = parse_limit_info(header)
        if usage is not None:
            with self._lock:
                self.org_used, self.org_max = usage

    def limit_exceeded(self, retry_after: float | None = None, *, spent: bool = True) -> float:
        """Salesforce said REQUEST_LIMIT_EXCEEDED: stop every call for a while; return how long.

        REQUEST_LIMIT_EXCEEDED names several limits. A reply that says when to come back (Retry-After) is
        taken at its word. Without one, only a spent daily allowance (``spent``: the reply's usage at its
        maximum) stops the hub for ``pause_seconds``, in every process through the ledger; any other
        refusal (too many concurrent long-running requests) is over as soon as some of them end, so the
        hub waits ``SHORT_PAUSE_SECONDS`` here only.
        """
        with self._lock:
            now = self.clock()
            if retry_after is not None:
                pause = max(0.0, retry_after)
            elif spent:
                pause = self.pause_seconds
                self._new_refusals[int(now // 60)] += 1
            else:
                pause = min(SHORT_PAUSE_SECONDS, self.pause_seconds)
            self.paused_until = max(self.paused_until, now + pause)
        return pause

    def state(self) -> dict[str, Any]:
        """For ``check`` and diagnostics."""
        with self._lock:
            now = self.clock()
            return {
                "org_used": self.org_used,
                "org_max": self.org_max,
                "hub_spent_in_window": sum(self._minutes(now).values()),
                "hub_allowance": self.allowance,
                "paused_for_seconds": max(0.0, round(self.paused_until - now, 1)),
            }
