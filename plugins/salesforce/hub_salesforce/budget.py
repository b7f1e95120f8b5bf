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
        #: minutes in which this process was refused with REQUEST_LIMIT_EXCEEDED, not yet in the ledger
        self._new_refusals: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._refused = False

    @property
    def allowance(self) -> int | None:
        """How many calls the hub may make per window; None until Salesforce has told the org's maximum."""
        return None if self.org_max is None else max(1, int(self.org_max * self.share))

    def _first_minute(self, now: float) -> int:
        """The oldest minute still inside the rolling window."""
        return int(now // 60) - math.ceil(self.window_seconds / 60) + 1

    def _spent(self, now: float) -> tuple[int, int | None]:
        """(calls in the window, the oldest minute holding any); the caller holds the lock."""
        first = self._first_minute(now)
        minutes = Counter({m: c for m, c in self._shared.items() if m >= first})
        minutes.update({m: c for m, c in self._new.items() if m >= first})
        used = [m for m, c in minutes.items() if c > 0]
        return sum(minutes.values()), min(used) if used else None

    def acquire(self) -> None:
        """Reserve one call, or raise ``TransientError`` saying when the window allows the next one."""
        with self._lock:
            now = self.clock()
            if now < self.paused_until:
                raise TransientError(
                    "Salesforce refused further calls (REQUEST_LIMIT_EXCEEDED); pausing",
                    retry_after=self.paused_until - now,
                )
            allowance = self.allowance
            spent, oldest = self._spent(now)
            if allowance is not None and spent >= allowance:
                frees_at = (oldest + math.ceil(self.window_seconds / 60)) * 60 if oldest is not None else now
                self._refused = True
                raise TransientError(
                    f"the hub's API budget ({allowance} calls per {self.window_seconds:.0f} s, "
                    f"{self.share:.0%} of the org's {self.org_max}) is spent",
                    retry_after=max(1.0, frees_at - now),
                )
            self._new[int(now // 60)] += 1

    async def share_usage(self, ledger: UsageLedger | None) -> None:
        """Hand this process's new calls to the ledger and take every process's total back.

        Without a ledger the count stays in this process. A ledger that fails keeps the calls for the next
        visit: the budget must not stop Salesforce work because the database hiccupped.
        """
        if ledger is None:
            return
        with self._lock:
            new, self._new = self._new, Counter()
            refusals, self._new_refusals = self._new_refusals, Counter()
            now = self.clock()
            since = self._first_minute(now)
        try:
            totals = await ledger.add_and_read(METER, dict(new), since)
            refused = await ledger.add_and_read(
                REFUSALS, dict(refusals), int((now - self.pause_seconds) // 60) - 1
            )
        except Exception:
            log.exception("salesforce.budget_ledger_failed")
            with self._lock:
                self._new.update(new)
                self._new_refusals.update(refusals)
            return
        with self._lock:
            self._shared = totals
            if refused:  # another process (or this one before a restart) was told to stop: so are we
                latest = max(refused)
                self.paused_until = max(self.paused_until, (latest + 1) * 60 + self.pause_seconds)

    def observe(self, header: str | None) -> None:
        """Read the org's usage from a reply's Sforce-Limit-Info header."""
        usage = parse_limit_info(header)
        if usage is not None:
            with self._lock:
                self.org_used, self.org_max = usage

    def limit_exceeded(self) -> float:
        """Salesforce said REQUEST_LIMIT_EXCEEDED: stop every call for ``pause_seconds``; return the pause."""
        with self._lock:
            now = self.clock()
            self.paused_until = now + self.pause_seconds
            self._new_refusals[int(now // 60)] += 1
        return self.pause_seconds

    def state(self) -> dict[str, Any]:
        """For ``check`` and diagnostics."""
        with self._lock:
            now = self.clock()
            return {
                "org_used": self.org_used,
                "org_max": self.org_max,
                "hub_spent_in_window": self._spent(now)[0],
                "hub_allowance": self.allowance,
                "paused_for_seconds": max(0.0, round(self.paused_until - now, 1)),
            }
