"""PostgreSQL upkeep where the server's autovacuum is off: the hub's tables vacuumed and analyzed as
autovacuum would have done it.

Why the hub cares: its tables start empty and grow by thousands of rows a minute under load, and its
connections keep their prepared statements. PostgreSQL plans a prepared statement once for all values
(its generic plan) from the table sizes of that moment, and keeps the plan until the table's statistics
change. A survey page read planned while ``responses`` was empty went on reading every answer (a
sequential scan) for each page, six times the database's time per page after one answer load; the answer
batches and the sync's claims did the same with ``responses`` and ``writebacks``. Autovacuum's ANALYZE is
what replaces such plans, and its VACUUM what keeps the constantly re-armed write-back rows from bloating
their table. A server run with ``autovacuum = off`` (test and benchmark servers often are, some managed
ones per table) does neither, so the hub does it for its own tables, at autovacuum's own thresholds, read
from the server's settings, and logs each (``upkeep.done``). Where autovacuum is on, this looks and does
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from hub.store.db import Store
from hub.store.tables import Base

log = structlog.get_logger("hub.store.upkeep")

#: how often a serving or worker process looks (one read of the statistics views; the work is done only
#: past a threshold): autovacuum looks every minute, but the hub's tables grow faster than most
UPKEEP_SECONDS = 15.0

#: each hub table the server's autovacuum does not look after, and how far it is from the thresholds
_TABLES = text(
    """
    SELECT c.relname AS name,
           s.n_dead_tup AS dead,
           s.n_mod_since_analyze AS changed,
           current_setting('autovacuum_vacuum_threshold')::float8
             + current_setting('autovacuum_vacuum_scale_factor')::float8 * greatest(c.reltuples, 0)
             AS vacuum_at,
           current_setting('autovacuum_analyze_threshold')::float8
             + current_setting('autovacuum_analyze_scale_factor')::float8 * greatest(c.reltuples, 0)
             AS analyze_at
    FROM pg_class c
    JOIN pg_stat_user_tables s ON s.relid = c.oid
    WHERE c.relnamespace = current_schema()::regnamespace
      AND c.relname = ANY(:names)
      AND (current_setting('autovacuum') = 'off'
           OR coalesce(c.reloptions, '{}') && ARRAY['autovacuum_enabled=false', 'autovacuum_enabled=off'])
    ORDER BY c.relname
    """
)


@dataclass(frozen=True)
class Work:
    """What one table needs: ``VACUUM (ANALYZE)`` when its dead rows passed the threshold, else ``ANALYZE``."""

    table: str
    vacuum: bool

    def statement(self, connection: AsyncConnection) -> str:
        name = connection.dialect.identifier_preparer.quote(self.table)
        return f"VACUUM (ANALYZE) {name}" if self.vacuum else f"ANALYZE {name}"


async def due(connection: AsyncConnection) -> list[Work]:
    """The hub's tables that autovacuum leaves alone and that passed one of its thresholds."""
    rows = await connection.execute(_TABLES, {"names": sorted(Base.metadata.tables)})
    work: list[Work] = []
    for row in rows.mappings():
        if row["dead"] > row["vacuum_at"]:
            work.append(Work(row["name"], vacuum=True))
        elif row["changed"] > row["analyze_at"]:
            work.append(Work(row["name"], vacuum=False))
    return work


async def keep_up(store: Store) -> list[Work]:
    """Vacuum and analyze what is due (nothing on SQLite, nothing where autovacuum is on); returns it.

    Outside any transaction (VACUUM cannot run in one), throttled like autovacuum itself
    (``vacuum_cost_delay`` as the server's ``autovacuum_vacuum_cost_delay``), so the pages and answers
    served meanwhile keep their share of the disk."""
    if store.is_sqlite:
        return []
    async with store.engine.connect() as connection:
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        work = await due(connection)
        if work:
            await connection.exec_driver_sql(
                "SELECT set_config('vacuum_cost_delay', current_setting('autovacuum_vacuum_cost_delay'), false)"
            )
        for item in work:
            await connection.exec_driver_sql(item.statement(connection))
            log.info("upkeep.done", table=item.table, vacuum=item.vacuum)
        return work
