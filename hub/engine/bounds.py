"""How many calls the engine has in flight at once to each CRM and each channel, in one process.

Events and invitations are handled concurrently, so a CRM's or a provider's latency is paid side by side
rather than once per event. Each connector and channel has its own bound (``concurrency`` in its config
section): one slow CRM never takes the slots of another, and no service ever sees more than its bound from
one process, whatever the backlog. A plugin's own limits (a client's cap, an API budget, a send rate) apply
within that bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class Bounds:
    """One semaphore per named connector or channel, sized by ``limit_of(name)`` when first used."""

    def __init__(self, limit_of: Callable[[str], int]) -> None:
        self._limit_of = limit_of
        self._slots: dict[str, asyncio.Semaphore] = {}

    def limit(self, name: str) -> int:
        return max(1, self._limit_of(name))

    @asynccontextmanager
    async def slot(self, name: str) -> AsyncIterator[None]:
        """Hold one of ``name``'s slots for the duration of one call."""
        semaphore = self._slots.get(name)
        if semaphore is None:
            semaphore = self._slots[name] = asyncio.Semaphore(self.limit(name))
        async with semaphore:
            yield
