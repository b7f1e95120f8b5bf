"""PostgreSQL upkeep where autovacuum is off: the hub's tables analyzed and vacuumed at autovacuum's own
thresholds, so that plans made while a table was empty do not outlive its growth."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import text, update

from hub.scheduler import Scheduler
from hub.store import upkeep
from hub.store.tables import WriteBack, utcnow


async def _without_autovacuum(hub) -> None:
    """``writebacks`` left alone by the server's autovacuum, whatever the server's own setting."""
    if hub.store.is_sqlite:
        pytest.skip("SQLite has no autovacuum for the hub to stand in for, nor plans kept across statements")
    async with hub.store.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE writebacks SET (autovacuum_enabled = false)"))


async def _queue(hub, count: int, prefix: str) -> None:
    now = utcnow()
    async with hub.store.session() as s:
        s.add_all(
            WriteBack(
                connector="crm", kind="timeline_entry", key=f"{prefix}-{k}", record_id="R1", ready_at=now
            )
            for k in range(count)
        )
        await s.commit()


async def _stat(hub, column: str) -> int:
    """A column of the table's statistics, once the writing sessions have reported them (at most a second
    after their commit)."""
    async with hub.store.engine.connect() as conn:
        await conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        value = await conn.scalar(
            text(f"SELECT {column} FROM pg_stat_user_tables WHERE relname = 'writebacks'")
        )
        return int(value or 0)


async def _until_reported(hub, column: str, at_least: int) -> None:
    for _ in range(100):
        if await _stat(hub, column) >= at_least:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"writebacks.{column} never reached {at_least}")


async def test_a_plan_made_while_the_table_was_empty_is_replaced_once_the_hub_analyzes_it(make_hub) -> None:
    hub = await make_hub()
    await _without_autovacuum(hub)
    async with hub.store.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        # statistics that know the table empty (an install analyzed before its first answers), and a hot
        # statement as a pooled connection keeps it: planned for all values once it ran five times
        await conn.exec_driver_sql("ANALYZE writebacks")
        await conn.exec_driver_sql("PREPARE by_id(int) AS SELECT key FROM writebacks WHERE id = $1")
        for _ in range(6):
            await conn.exec_driver_sql("EXECUTE by_id(1)")

        async def plan() -> str:
            return "\n".join(row[0] for row in await conn.exec_driver_sql("EXPLAIN EXECUTE by_id(1)"))

        assert "Seq Scan" in await plan()
        await _queue(hub, 20, "few")
        await _until_reported(hub, "n_mod_since_analyze", 20)
        assert await upkeep.keep_up(hub.store) == []  # below autovacuum's threshold (50 rows and a tenth)
        await _queue(hub, 3000, "many")
        await _until_reported(hub, "n_mod_since_analyze", 3020)
        assert "Seq Scan" in await plan()  # still reading every row for one: nobody analyzed the table
        assert await upkeep.keep_up(hub.store) == [upkeep.Work("writebacks", vacuum=False)]
        assert "Seq Scan" not in await plan() and "Index" in await plan()


async def test_dead_rows_past_the_threshold_are_vacuumed(make_hub) -> None:
    """Every re-armed, leased or written item leaves a dead row version behind; without VACUUM the table
    and its indexes only grow."""
    hub = await make_hub()
    await _without_autovacuum(hub)
    await _queue(hub, 1000, "item")
    await _until_reported(hub, "n_mod_since_analyze", 1000)
    assert await upkeep.keep_up(hub.store) == [upkeep.Work("writebacks", vacuum=False)]
    async with hub.store.session() as s:
        await s.execute(update(WriteBack).values(next_attempt_at=utcnow() + timedelta(seconds=1)))
        await s.commit()
    await _until_reported(hub, "n_dead_tup", 1000)
    assert await upkeep.keep_up(hub.store) == [upkeep.Work("writebacks", vacuum=True)]
    assert await _stat(hub, "n_dead_tup") == 0
    assert await _stat(hub, "vacuum_count") == 1


async def test_the_upkeep_job_runs_on_postgresql_only(make_hub) -> None:
    hub = await make_hub()
    scheduler = Scheduler(hub)
    scheduler.setup()
    jobs = {job.id for job in scheduler.scheduler.get_jobs()}
    assert ("upkeep" in jobs) is (not hub.store.is_sqlite)
