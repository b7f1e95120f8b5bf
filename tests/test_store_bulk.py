"""``hub.store.bulk``: executemany with rows turned into the driver's tuples directly, on both databases.

It skips SQLAlchemy's building of each row's parameters, so these tests pin that the rows stored are the
ones SQLAlchemy's own executemany stores: the hub's column types applied (cleaned text and JSON, UTC
datetimes), values the statement carries itself, an upsert's second write re-arming its row.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, insert, select

from hub.engine.writebacks import upsert_bulk, upsert_statement
from hub.store.bulk import Bulk
from hub.store.db import Store
from hub.store.tables import Person, WriteBack

WRITEBACKS = WriteBack.__table__
#: a moment given in another zone: stored and read back as the same moment
NOW = datetime(2026, 12, 6, 9, 30, tzinfo=timezone(timedelta(hours=1)))


def _item(key: str, **changes: Any) -> dict[str, Any]:
    return {
        "connector": "crm",
        "kind": "timeline_entry",
        "key": key,
        "record_id": "P1\x00",  # a NUL: every database stores the text without it
        "person_record_id": "P1",
        "person_id": 7,
        "response_id": "r-1",
        "payload": {"score": 9, "comment": "gr\x00eat", "täg": ["a"]},
        "now": NOW,
        "ready_at": NOW,
        "cap_at": NOW + timedelta(seconds=20),
        **changes,
    }


def _rows(conn: Connection) -> dict[str, dict[str, Any]]:
    columns = [c for c in WRITEBACKS.c if c.name != "id"]
    return {row.key: row._asdict() for row in conn.execute(select(*columns).order_by(WRITEBACKS.c.key))}


async def test_an_upsert_stores_what_sqlalchemys_own_executemany_stores(database_url: str) -> None:
    store = Store(database_url)
    await store.upgrade()
    try:

        def both_ways(conn: Connection) -> dict[str, dict[str, Any]]:
            upsert_bulk(conn.dialect.name).execute(conn, [_item("bulk-1"), _item("bulk-2")])
            conn.execute(upsert_statement(conn.dialect.name), [_item("core-1"), _item("core-2")])
            return _rows(conn)

        rows = await store.write(both_ways)
        for name in ("1", "2"):
            assert {**rows[f"bulk-{name}"], "key": "-"} == {**rows[f"core-{name}"], "key": "-"}
        stored = rows["bulk-1"]
        assert stored["record_id"] == "P1"
        assert stored["payload"] == {"score": 9, "comment": "great", "täg": ["a"]}
        assert (stored["state"], stored["version"], stored["attempts"]) == ("queued", 1, 0)
        assert stored["next_attempt_at"] == stored["created_at"] == NOW
        assert stored["next_attempt_at"].tzinfo == UTC

        later = NOW + timedelta(minutes=5)

        def again(conn: Connection) -> dict[str, dict[str, Any]]:
            conn.execute(WRITEBACKS.update().values(state="dead", attempts=4, last_error="down"))
            upsert_bulk(conn.dialect.name).execute(conn, [_item("bulk-1", payload={"score": 3}, now=later)])
            return _rows(conn)

        rearmed = (await store.write(again))["bulk-1"]
        assert (rearmed["state"], rearmed["version"], rearmed["attempts"]) == ("queued", 2, 0)
        assert rearmed["payload"] == {"score": 3}
        assert rearmed["last_error"] is None
        assert rearmed["created_at"] == NOW and rearmed["updated_at"] == later
    finally:
        await store.dispose()


async def test_no_rows_run_nothing(database_url: str) -> None:
    store = Store(database_url)
    await store.upgrade()
    try:
        await store.write(lambda conn: upsert_bulk(conn.dialect.name).execute(conn, []))
        assert await store.write(_rows) == {}
    finally:
        await store.dispose()


def test_a_default_made_per_row_must_come_with_the_rows() -> None:
    # ``people.created_at`` and ``updated_at`` default to the moment of the insert, made by SQLAlchemy per row
    bulk = Bulk(insert(Person.__table__), ("email", "phone"))
    with (
        create_engine("sqlite://").begin() as conn,
        pytest.raises(ValueError, match=r"created_at, .*updated_at"),
    ):
        bulk.execute(conn, [{"email": "ada@example.com", "phone": None}])
