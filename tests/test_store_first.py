"""``Store.first``: the read every survey link starts with, the same on both databases.

On PostgreSQL it goes straight through asyncpg (``hub.store.driver_reads``), so these tests pin what it must
keep of SQLAlchemy: the hub's own column types (aware UTC datetimes, cleaned text) converted, and a dropped
connection failing one read as ``OperationalError`` and no more.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.exc import OperationalError

from hub.engine.answers import (
    _BATCH_QUERY,
    _IDENTITIES_AT,
    _LINK_AT,
    _LINKS_QUERY,
    _PAGE_QUERY,
    _RESPONSE_AT,
    _RESPONSE_COLUMNS,
    _UNLOCKED_BATCH_QUERY,
    _VERSIONS_AT,
)
from hub.engine.common import hash_token
from hub.engine.writebacks import _IDENTITIES
from hub.store.aggregates import pairs
from hub.store.db import Store
from hub.store.driver_reads import DriverReads
from hub.store.sqlite_reads import rows
from hub.store.tables import Invitation, JobLock
from hub.testing.databases import POSTGRES_ADMIN_URL
from tests.helpers import survey_flow

LOCKS = JobLock.__table__
QUERY = select(LOCKS.c.owner, LOCKS.c.expires_at.label("until")).where(LOCKS.c.name == bindparam("name"))


async def _store_with_a_lock(database_url: str, expires: datetime) -> Store:
    store = Store(database_url)
    await store.upgrade()
    async with store.session() as s:
        s.add(JobLock(name="job:events", owner="worker-1", expires_at=expires))
    return store


async def test_a_row_comes_back_by_column_name_with_aware_utc_datetimes(database_url: str) -> None:
    # stored from another zone: read back as the same moment, in UTC, on both databases
    expires = datetime(2026, 12, 6, 15, 30, tzinfo=timezone(timedelta(hours=2)))
    store = await _store_with_a_lock(database_url, expires)
    try:
        row = await store.first(QUERY, {"name": "job:events"})
        assert row is not None
        assert row["owner"] == "worker-1"
        assert row["until"] == expires
        assert row["until"].tzinfo == UTC
        assert await store.first(QUERY, {"name": "job:nothing"}) is None
    finally:
        await store.dispose()


def _end_every_session_of(database_url: str) -> None:
    """End the database's sessions from the server's side (a restart, a proxy's idle timeout) while this
    test's event loop is blocked, so the pool cannot have noticed before its next read."""
    database = database_url.rsplit("/", 1)[1].split("?")[0]

    async def terminate() -> None:
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
        finally:
            await admin.close()

    thread = threading.Thread(target=asyncio.run, args=(terminate(),))
    thread.start()
    thread.join()


async def test_a_dropped_connection_fails_one_read_and_the_next_one_works(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no server to drop a connection")
    store = await _store_with_a_lock(database_url, datetime.now(UTC))
    try:
        assert await store.first(QUERY, {"name": "job:events"}) is not None
        _end_every_session_of(database_url)
        with pytest.raises(OperationalError):
            await store.first(QUERY, {"name": "job:events"})
        row = await store.first(QUERY, {"name": "job:events"})
        assert row is not None and row["owner"] == "worker-1"
    finally:
        await store.dispose()


async def test_reads_waiting_for_a_connection_are_served_in_the_order_they_came(database_url: str) -> None:
    # links opened in a stream queue for the pool's connections: each read waits its turn, so no link waits
    # while others that came after it are served (asyncpg's own queue lets a read that arrives just as a
    # connection is returned take it before the reads already waiting: under load some links waited for
    # dozens of others)
    if not database_url.startswith("postgresql"):
        pytest.skip("on SQLite the reads run on the store's reader threads, not on a pool of asyncpg's")
    store = await _store_with_a_lock(database_url, datetime.now(UTC))
    reads = DriverReads(database_url, store.engine.dialect, 1, 300)
    arrivals = itertools.count()
    served: list[int] = []

    async def open_link() -> None:
        arrival = next(arrivals)  # the read asks for a connection in this same step
        assert await reads.first(QUERY, {"name": "job:events"}) is not None
        served.append(arrival)

    try:
        await open_link()  # the pool is open
        stream = []
        for _ in range(200):  # one new link per turn of the event loop, as requests come in
            stream.append(asyncio.create_task(open_link()))
            await asyncio.sleep(0)
        await asyncio.gather(*stream)
    finally:
        await reads.close()
        await store.dispose()
    assert served == sorted(served)


async def test_a_survey_links_read_is_what_sqlalchemy_reads(make_hub, crm_state) -> None:
    """The page's one read (token, invitation, answer so far) skips SQLAlchemy's execution on both databases:
    every column comes back as SQLAlchemy's own execution of the same query gives it, with and without an
    answer (the outer join's columns all None)."""
    hub = await make_hub()
    token = await survey_flow(hub, crm_state, "C1", "P1")
    query_params = {"hash": hash_token(token)}

    async def through_sqlalchemy() -> dict[str, Any]:
        async with hub.store.engine.connect() as conn:
            row = (await conn.execute(_PAGE_QUERY, query_params)).mappings().first()
        assert row is not None
        return dict(row)

    unanswered = await hub.store.first(_PAGE_QUERY, query_params)
    assert unanswered is not None and unanswered["r_id"] is None
    assert dict(unanswered) == await through_sqlalchemy()
    _, page = await hub.engine.page_for_token(token)
    await hub.engine.record_answer(page.invitation_id, 7, comment="fine ✓")
    answered = await hub.store.first(_PAGE_QUERY, query_params)
    assert answered is not None and answered["r_rating"] == 7 and answered["r_comment"] == "fine ✓"
    assert answered["r_answered_at"].tzinfo == UTC
    assert dict(answered) == await through_sqlalchemy()


async def test_an_answer_batchs_reads_are_what_sqlalchemy_reads(make_hub, crm_state) -> None:
    """The answers' batch writer reads in its own transaction with ``rows``: straight through sqlite3 on the
    SQLite file's writer, through SQLAlchemy elsewhere. Each of its reads (the links, the invitations with
    their events, answers so far and people's record ids; the identities' read of other writers) gives every column as SQLAlchemy's own
    execution does, with and without an answer, and its lists (``one_of``) find every listed row."""
    crm_state.people["P4"] = {"id": "P4", "email": "dee@example.com", "first_name": "Dee"}
    hub = await make_hub()
    tokens = [await survey_flow(hub, crm_state, f"C{k}", person) for k, person in enumerate(["P1", "P4"])]
    pages = [(await hub.engine.page_for_token(token))[1] for token in tokens]
    await hub.engine.record_answer(pages[0].invitation_id, 9, comment="quick ✓")
    ids = [page.invitation_id for page in pages]
    people = sorted({inv.person_id for inv in await _invitations(hub, ids)})
    reads = [
        (_LINKS_QUERY, {"hashes": [hash_token(token) for token in tokens]}),
        (_BATCH_QUERY, {"ids": ids}),
        (_IDENTITIES, {"people": people, "targets": ["crm"]}),
    ]

    def both(conn: Connection) -> list[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
        return [
            (
                sorted(tuple(row) for row in rows(conn, query, params)),
                sorted(conn.execute(query, params).all()),
            )
            for query, params in reads
        ]

    (links, links_sa), (batch, batch_sa), (identities, identities_sa) = await hub.store.write(
        both, short=True
    )
    assert links == links_sa and len(links) == 2
    assert batch == batch_sa and len(batch) == 2
    answered, unanswered = (next(row for row in batch if row[0] == k) for k in ids)
    assert answered[_RESPONSE_AT:_IDENTITIES_AT][_RESPONSE_COLUMNS.index("comment")] == "quick ✓"
    assert all(value is None for value in unanswered[_RESPONSE_AT:_IDENTITIES_AT])
    # each person's record ids ride along, the same whichever way the row was read
    assert [pairs(row[_IDENTITIES_AT]) for row in (answered, unanswered)] == [{"crm": "P1"}, {"crm": "P4"}]
    assert [pairs(row[_IDENTITIES_AT]) for row in sorted(batch_sa)] == [{"crm": "P1"}, {"crm": "P4"}]
    assert identities == identities_sa and len(identities) == len(people)


async def test_the_unlocked_batch_read_is_what_sqlalchemy_reads(make_hub, crm_state) -> None:
    """On PostgreSQL an answer batch is read without a lock, straight through asyncpg (``DriverReads.rows``),
    by links and by invitation ids at once: every column comes back as SQLAlchemy's own execution gives it
    (aware datetimes, the event's JSON decoded, the rows' versions), with and without an answer."""
    crm_state.people["P4"] = {"id": "P4", "email": "dee@example.com", "first_name": "Dee"}
    hub = await make_hub()
    if hub.store.driver is None:
        pytest.skip("SQLite reads an answer batch inside the transaction that writes it (``rows``)")
    tokens = [await survey_flow(hub, crm_state, f"C{k}", person) for k, person in enumerate(["P1", "P4"])]
    pages = [(await hub.engine.page_for_token(token))[1] for token in tokens]
    await hub.engine.record_answer(pages[0].invitation_id, 9, comment="quick ✓")
    params = {"hashes": [hash_token(tokens[0])], "ids": [pages[1].invitation_id]}
    direct = sorted(await hub.store.driver.rows(_UNLOCKED_BATCH_QUERY, params))
    async with hub.store.engine.connect() as conn:
        through_sqlalchemy = sorted((await conn.execute(_UNLOCKED_BATCH_QUERY, params)).all())
    assert direct == [tuple(row) for row in through_sqlalchemy] and len(direct) == 2
    answered, unanswered = direct
    assert answered[_LINK_AT] == hash_token(tokens[0]) and unanswered[_LINK_AT] is None  # named by its id
    assert answered[_LINK_AT + 1].tzinfo == UTC
    assert isinstance(answered[_RESPONSE_AT - 1], dict)  # the event's payload, decoded
    assert answered[_RESPONSE_AT:_IDENTITIES_AT][_RESPONSE_COLUMNS.index("comment")] == "quick ✓"
    assert all(version is not None for version in answered[_VERSIONS_AT:])
    assert unanswered[_VERSIONS_AT] is not None and unanswered[_VERSIONS_AT + 1] is None


async def _invitations(hub: Any, ids: list[int]) -> list[Invitation]:
    async with hub.store.session() as s:
        return [inv for inv in [await s.get(Invitation, k) for k in ids] if inv is not None]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_read_on_sqlite_leaves_no_snapshot_that_holds_the_log_back(database_url: str) -> None:
    """A read that kept its statement open would keep its snapshot of the log, and no checkpoint could
    finish the log's copy until the next read."""
    store = await _store_with_a_lock(database_url, datetime(2027, 1, 1, tzinfo=UTC))
    try:
        assert await store.first(QUERY, {"name": "job:events"}) is not None
        path = database_url.split(":///", 1)[1]
        with sqlite3.connect(path) as other:
            busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    finally:
        await store.dispose()
