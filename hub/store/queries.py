"""Statements that differ by database dialect, written once."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession


def insert_for(session: AsyncSession | AsyncConnection | Connection, table: Any) -> Any:
    """An INSERT that supports ``on_conflict_do_nothing`` / ``on_conflict_do_update`` on this database."""
    bind = session.get_bind() if isinstance(session, AsyncSession) else session
    dialect = bind.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {dialect}; use SQLite or PostgreSQL")
