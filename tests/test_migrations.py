"""Migrations build exactly the schema the code declares, on SQLite and PostgreSQL, and run on a live database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from hub.store import Store
from hub.store.db import alembic_config
from hub.store.tables import Base


async def test_migrations_match_the_tables(empty_database_url) -> None:
    store = Store(empty_database_url)
    await store.upgrade()
    assert await store.is_current()

    def diff(conn):
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)

    async with store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
    await store.dispose()


async def test_upgrading_a_database_with_data_keeps_it(empty_database_url) -> None:
    store = Store(empty_database_url)
    await asyncio.to_thread(command.upgrade, alembic_config(empty_database_url), "0001")
    async with store.engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO people (email, created_at, updated_at) VALUES ('a@example.com', :t, :t)"),
            {
                "t": datetime(2026, 1, 1, tzinfo=UTC)
                if "postgresql" in empty_database_url
                else "2026-01-01 00:00:00"
            },
        )
    await store.upgrade()
    async with store.engine.connect() as conn:
        row = (await conn.execute(text("SELECT email, email_rejected FROM people"))).one()
    assert tuple(row) == ("a@example.com", None)
    await store.dispose()


async def test_processes_starting_together_migrate_once_and_the_others_wait(
    empty_database_url, tmp_path
) -> None:
    """Two web servers and two workers started at once on an empty database: every one comes up."""
    import sys

    config = tmp_path / "cxhub.toml"
    config.write_text(f'[hub]\ndatabase_url = "{empty_database_url}"\nplugins = []\n')

    async def upgrade() -> tuple[int, bytes]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hub",
            "db",
            "upgrade",
            "-c",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        return process.returncode or 0, output

    results = await asyncio.gather(*(upgrade() for _ in range(4)))
    assert [code for code, _ in results] == [0, 0, 0, 0], [output.decode()[-2000:] for _, output in results]
    store = Store(empty_database_url)
    assert await store.is_current()
    await store.dispose()
