"""The usage ledger: calls per minute that every hub process adds to and reads from.

A connector's budget governor counts its calls in memory between two visits to the ledger, then adds them
here and reads back the sum of every process, so that three workers on one PostgreSQL database, or a hub
restarted at noon, still keep to one share of the CRM's allowance. One small transaction per visit; a
connector visits around its batches, not per call.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from hub.store.db import Store
from hub.store.tables import Usage

#: rows older than this many minutes before the oldest minute asked for are dropped
KEEP_EXTRA_MINUTES = 24 * 60


class StoreUsageLedger:
    """``UsageLedger`` (``hub.contracts``) on the hub's database, for one connector instance."""

    def __init__(self, store: Store, connector: str) -> None:
        self.store = store
        self.connector = connector

    async def add_and_read(self, meter: str, counts: Mapping[int, int], since_minute: int) -> dict[int, int]:
        insert = sqlite_insert if self.store.is_sqlite else postgresql_insert
        rows = [
            {"connector": self.connector, "meter": meter, "minute": minute, "count": count}
            for minute, count in sorted(counts.items())
            if count
        ]
        mine = (Usage.connector == self.connector, Usage.meter == meter)
        async with self.store.session() as s:
            if rows:
                statement = insert(Usage).values(rows)
                await s.execute(
                    statement.on_conflict_do_update(
                        index_elements=[Usage.connector, Usage.meter, Usage.minute],
                        set_={"count": Usage.count + statement.excluded.count},
                    )
                )
            await s.execute(delete(Usage).where(*mine, Usage.minute < since_minute - KEEP_EXTRA_MINUTES))
            found = await s.execute(
                select(Usage.minute, Usage.count).where(*mine, Usage.minute >= since_minute)
            )
            return {minute: count for minute, count in found.all()}
