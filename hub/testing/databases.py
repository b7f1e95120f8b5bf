"""Real databases for tests: a fresh SQLite file or a fresh PostgreSQL database, dropped afterwards.

The hub runs on both, and some defects show on one only (PostgreSQL refuses a NUL in text, SQLite stores it),
so a test that goes through the store should run on each. A fixture is one line::

    @pytest.fixture(params=["sqlite", "postgresql"])
    def database_url(request, tmp_path):
        with fresh_database(request.param, tmp_path) as url:
            yield url

PostgreSQL is reached through ``CXHUB_TEST_POSTGRES_URL`` (an admin URL that may create databases; default
``postgresql://postgres@127.0.0.1:5432/postgres``). When it cannot be reached the test is skipped, unless the
environment variable ``CI`` is set: there a missing database must fail the run, not hide half of it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "CXHUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


async def _postgres(statement: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def fresh_database(kind: str, folder: Path, prefix: str = "cxhub_test") -> Iterator[str]:
    """The SQLAlchemy URL of an empty database of ``kind`` (``"sqlite"`` or ``"postgresql"``)."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{folder / 'hub.db'}"
        return
    if kind != "postgresql":
        raise ValueError(f"no test database of kind {kind!r}")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_postgres(f'CREATE DATABASE "{name}"'))
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL} ({exc}); CI is not set")
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
