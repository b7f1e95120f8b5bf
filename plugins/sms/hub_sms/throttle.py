"""The provider's throughput, shared by every concurrent send of one channel instance.

A long code takes about one text a second; faster, the provider queues the rest and, past its queue, drops
them or answers 429 (``TransientError`` with its Retry-After: the hub reschedules that invitation). So sends
take turns at the configured rate; a send whose turn is further away than ``max_wait`` is handed back to the
hub to be rescheduled instead, which keeps dispatch moving instead of piling up sleeping sends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from hub import TransientError


class Throughput:
    """Turns at most ``per_second`` a second (None: no pacing); a turn further away than ``max_wait``
    seconds raises ``TransientError(sent=False)``."""

    def __init__(
        self, per_second: float | None, max_wait: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.spacing = 0.0 if per_second is None else 1.0 / per_second
        self.max_wait = max_wait
        self.clock = clock
        self._free_at = 0.0

    async def turn(self) -> None:
        """Wait for this send's turn. Booking needs no lock: nothing awaits between reading and writing."""
        now = self.clock()
        start = max(now, self._free_at)
        if start - now > self.max_wait:
            raise TransientError(
                f"{start - now:.0f}s of texts are queued before this one at this rate",
                start - now,
                sent=False,
            )
        self._free_at = start + self.spacing
        if start > now:
            await asyncio.sleep(start - now)

    def state(self) -> dict[str, float]:
        return {"queued_seconds": max(0.0, self._free_at - self.clock())}
