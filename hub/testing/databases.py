"""Real databases for tests: a fresh SQLite file or a fresh PostgreSQL database, dropped afterwards.

The hub runs on both, and some defects show on one only (PostgreSQL refuses a NUL in text, SQLite stores it),
so a test that goes through the store should run on each. A fixture is one line::

    @pytest.fixture(params=["sqlite", "postgresql"])
    def database_url(request, tmp_path):
        with fresh_database(request.param, tmp_path, migrated=True) as url:
            yield url

A test that opens a hub gets a database already at the newest migration (``migrated=True``, what the
``database_url`` fixture of the hub's own tests asks for): the migrations run once per process into a
template, and every test's database is a copy of it (a file copy on SQLite, ``CREATE DATABASE ... TEMPLATE``
on PostgreSQL). Running the ten migrations for each of about a thousand tests took a fifth of the suite's
time. A test of the migrations themselves asks for an empty database.

PostgreSQL is reached through ``CXHUB_TEST_POSTGRES_URL`` (an admin URL that may create databases; default
``postgresql://postgres@127.0.0.1:5432/postgres``). When it cannot be reached the test is skipped, unless the
environment variable ``CI`` is set: there a missing database must fail the run, not hide half of it.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import sqlite3
import tempfile
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


#: this process's migrated templates, by kind: a SQLite file's path, a PostgreSQL database's name
_TEMPLATES: dict[str, str] = {}


def _migrate(url: str) -> None:
    """Every migration on the empty database at ``url``, as ``cxhub db upgrade`` runs them."""
    from alembic import command  # imported when a template is made, not by every test module

    from hub.store.db import alembic_config

    command.upgrade(alembic_config(url), "head")


def _base_url() -> str:
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")


def _sqlite_template() -> str:
    """A SQLite file at the newest migration, made once per process, checkpointed so the file alone is the
    database (its copies need no WAL beside them)."""
    found = _TEMPLATES.get("sqlite")
    if found is None:
        folder = tempfile.mkdtemp(prefix="cxhub-template-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        found = os.path.join(folder, "template.db")
        _migrate(f"sqlite+aiosqlite:///{found}")
        with sqlite3.connect(found) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        _TEMPLATES["sqlite"] = found
    return found


def _postgres_template() -> str:
    """A PostgreSQL database at the newest migration, made once per process (dropped when it ends), that
    ``CREATE DATABASE ... TEMPLATE`` copies; nothing stays connected to it."""
    found = _TEMPLATES.get("postgresql")
    if found is None:
        found = f"cxhub_template_{uuid.uuid4().hex[:12]}"
        asyncio.run(_postgres(f'CREATE DATABASE "{found}"'))
        atexit.register(lambda: asyncio.run(_postgres(f'DROP DATABASE IF EXISTS "{found}" WITH (FORCE)')))
        _migrate(f"{_base_url()}/{found}")
        _TEMPLATES["postgresql"] = found
    return found


@contextmanager
def fresh_database(
    kind: str, folder: Path, prefix: str = "cxhub_test", *, migrated: bool = False
) -> Iterator[str]:
    """The SQLAlchemy URL of a database of ``kind`` (``"sqlite"`` or ``"postgresql"``) of its own: empty, or
    with ``migrated`` at the newest migration (a copy of the process's template)."""
    if kind == "sqlite":
        path = folder / "hub.db"
        if migrated:
            shutil.copyfile(_sqlite_template(), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    if kind != "postgresql":
        raise ValueError(f"no test database of kind {kind!r}")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        template = f' TEMPLATE "{_postgres_template()}"' if migrated else ""
        asyncio.run(_postgres(f'CREATE DATABASE "{name}"{template}'))
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL} ({exc}); CI is not set")
    try:
        yield f"{_base_url()}/{name}"
    finally:
        asyncio.run(_postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
