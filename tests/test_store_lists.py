"""``hub.store.lists``: a list given at execution, one statement whatever its length.

The answer batches and the sync's claims read and update rows by lists of ids of every length from 1 to a
few hundred. On PostgreSQL each length used to be another SQL text, so another prepared statement on each
connection; these tests pin that the rows found are the ones ``IN`` finds, on both databases, and that
PostgreSQL is sent one text for every length.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, event, insert, select, update

from hub.store.db import Store
from hub.store.lists import one_of
from hub.store.tables import Person

PEOPLE = Person.__table__


async def test_rows_are_found_by_a_list_of_any_length_with_one_statement(database_url: str) -> None:
    store = Store(database_url)
    await store.upgrade()
    sent: list[str] = []

    def remember(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", remember)
    try:

        def found(conn: Connection) -> list[list[str]]:
            conn.execute(insert(PEOPLE), [{"name": f"P{k}", "email": f"p{k}@example.com"} for k in range(6)])
            ids = list(conn.scalars(select(PEOPLE.c.id).order_by(PEOPLE.c.id)))
            sent.clear()
            by_id = select(PEOPLE.c.name).where(one_of(PEOPLE.c.id, "ids")).order_by(PEOPLE.c.name)
            by_email = select(PEOPLE.c.name).where(one_of(Person.email, "emails")).order_by(PEOPLE.c.name)
            return [
                list(conn.scalars(by_id, {"ids": ids[:1]})),
                list(conn.scalars(by_id, {"ids": [ids[4], ids[1], ids[4]]})),
                list(conn.scalars(by_id, {"ids": [*ids, 10**9]})),
                list(conn.scalars(by_email, {"emails": ["p2@example.com", "nobody@example.com"]})),
            ]

        assert await store.write(found) == [
            ["P0"],
            ["P1", "P4"],
            ["P0", "P1", "P2", "P3", "P4", "P5"],
            ["P2"],
        ]
        if store.engine.dialect.name == "postgresql":
            # one text per query, however long its list: prepared once per connection
            assert sent[0] == sent[1] == sent[2]
            assert "ANY" in sent[0]
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", remember)
        await store.dispose()


async def test_an_update_by_a_list_changes_those_rows_only(database_url: str) -> None:
    store = Store(database_url)
    await store.upgrade()
    try:

        def renamed(conn: Connection) -> list[str]:
            conn.execute(insert(PEOPLE), [{"name": f"Q{k}"} for k in range(4)])
            ids = list(conn.scalars(select(PEOPLE.c.id).order_by(PEOPLE.c.id)))
            conn.execute(
                update(PEOPLE).where(one_of(PEOPLE.c.id, "ids")).values(name="changed"), {"ids": ids[1:3]}
            )
            return list(conn.scalars(select(PEOPLE.c.name).order_by(PEOPLE.c.id)))

        assert await store.write(renamed) == ["Q0", "changed", "changed", "Q3"]
    finally:
        await store.dispose()
