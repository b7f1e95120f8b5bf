"""Pacing of sends, so a burst of closed cases never exceeds the mail provider's rate limit.

Providers throttle or temporarily block senders that exceed their rate (Microsoft 365 and Gmail count messages
per minute), which would turn one busy hour into many deferred invitations. Spacing sends evenly keeps the
channel under the limit without ever rejecting a message itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class RateLimiter:
    """Lets callers through at most ``per_second`` times a second, evenly spaced, in arrival order.

    ``per_second=None`` lets everything through at once.
    """

    def __init__(self, per_second: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        if per_second is not None and per_second <= 0:
            raise ValueError("per_second must be positive (or None for no limit)")
        self._interval = 0.0 if per_second is None else 1.0 / per_second
        self._clock = clock
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        """Return when the caller may send; each call books the next free slot."""
        if not self._interval:
            return
        async with self._lock:
            now = self._clock()
            delay = self._next - now
            self._next = max(now, self._next) + self._interval
            if delay > 0:
                await asyncio.sleep(delay)
