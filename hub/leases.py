"""Keeping a claim alive: a lease renewed every third of its length while the work it covers runs.

Write-back batches and invitations are claimed with a lease of ``sync.lease_seconds``, so a process killed
mid-way holds them back from the others only that long. Work that lasts longer (a bulk job, a slow channel)
renews its lease, or another process would take the same items over and write or send them a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("hub.leases")


async def renew_until(
    stop: asyncio.Event, lease_seconds: float, renew: Callable[[], Awaitable[object]], what: str
) -> None:
    """Call ``renew`` every third of a lease until ``stop`` is set.

    A renewal that fails (the database restarting) is logged and tried again a third of a lease later, so
    one hiccup does not let the lease run out. A renewal in flight is never cancelled: the caller sets
    ``stop`` and awaits this task, so no renewal still holds row locks once the caller records its outcome.
    """
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), lease_seconds / 3)
        if stop.is_set():
            return
        try:
            await renew()
        except Exception:  # a database hiccup: the next renewal tries again
            log.warning("lease.renewal_failed", what=what, exc_info=True)
