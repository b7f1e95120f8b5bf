"""The API budget governor: the hub's own share of the org's daily API allowance.

Salesforce counts every REST call against one rolling-24-hour allowance shared by every integration of the
org, and reports it on each reply as ``Sforce-Limit-Info: api-usage=used/max``. The hub must never be the
integration that spends it, so it allows itself ``share`` of ``max`` over the window, counted from the calls
it made itself, and stops completely for a while when Salesforce answers REQUEST_LIMIT_EXCEEDED.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from hub import TransientError

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
        self._spent: deque[float] = deque()
        self._lock = threading.Lock()
        self._refused = False

    @property
    def allowance(self) -> int | None:
        """How many calls the hub may make per window; None until Salesforce has told the org's maximum."""
        return None if self.org_max is None else max(1, int(self.org_max * self.share))

    def _forget_old(self, now: float) -> None:
        while self._spent and self._spent[0] <= now - self.window_seconds:
            self._spent.popleft()

    def acquire(self) -> None:
        """Reserve one call, or raise ``TransientError`` saying when the window allows the next one."""
        with self._lock:
            now = self.clock()
            if now < self.paused_until:
                raise TransientError(
                    "Salesforce refused further calls (REQUEST_LIMIT_EXCEEDED); pausing",
                    retry_after=self.paused_until - now,
                )
            self._forget_old(now)
            allowance = self.allowance
            if allowance is not None and len(self._spent) >= allowance:
                retry_after = self._spent[0] + self.window_seconds - now
                self._refused = True
                raise TransientError(
                    f"the hub's API budget ({allowance} calls per {self.window_seconds:.0f} s, "
                    f"{self.share:.0%} of the org's {self.org_max}) is spent",
                    retry_after=max(1.0, retry_after),
                )
            self._spent.append(now)

    def observe(self, header: str | None) -> None:
        """Read the org's usage from a reply's Sforce-Limit-Info header."""
        usage = parse_limit_info(header)
        if usage is not None:
            with self._lock:
                self.org_used, self.org_max = usage

    def limit_exceeded(self) -> float:
        """Salesforce said REQUEST_LIMIT_EXCEEDED: stop every call for ``pause_seconds``; return the pause."""
        with self._lock:
            self.paused_until = self.clock() + self.pause_seconds
        return self.pause_seconds

    def state(self) -> dict[str, Any]:
        """For ``check`` and diagnostics."""
        with self._lock:
            now = self.clock()
            self._forget_old(now)
            return {
                "org_used": self.org_used,
                "org_max": self.org_max,
                "hub_spent_in_window": len(self._spent),
                "hub_allowance": self.allowance,
                "paused_for_seconds": max(0.0, round(self.paused_until - now, 1)),
            }
