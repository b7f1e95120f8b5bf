"""``Store.write`` on a SQLite file: one writer connection per process, and another process's lock respected.

A short write (the group commits of answers and webhooks) runs on the event loop's thread when the file is
free; when another process holds SQLite's write lock it must neither fail nor stall the event loop, but wait
on the writer's thread and then write.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, select

from hub.store.checkpoints import Checkpoints
from hub.store.db import Store
from hub.store.tables import JobLock

LOCKS = JobLock.__table__
UNTIL = datetime(2027, 1, 1, tzinfo=UTC)


async def _store(tmp_path: Path) -> tuple[Store, Path]:
    path = tmp_path / "hub.db"
    store = Store(f"sqlite+aiosqlite:///{path}")
    await store.upgrade()
    return store, path


def _add(name: str, threads: list[str]) -> object:
    def work(conn: Connection) -> int:
        threads.append(threading.current_thread().name)
        conn.execute(insert(LOCKS).values(name=name, owner="test", expires_at=UNTIL))
        return len(list(conn.execute(select(LOCKS.c.name))))

    return work


async def test_a_short_write_waits_for_another_process_lock_without_stalling_the_loop(tmp_path: Path) -> None:
    store, path = await _store(tmp_path)
    threads: list[str] = []
    try:
        assert await store.write(_add("free", threads), short=True) == 1
        assert threads == [threading.current_thread().name]  # the file was free: right on the loop's thread

        other = sqlite3.connect(path, isolation_level=None)  # another process's connection
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO job_locks (name, owner, expires_at) VALUES ('other', 'x', '2027-01-01')")
        writing = asyncio.create_task(store.write(_add("waited", threads), short=True))
        ticks = 0
        for _ in range(10):  # the loop keeps serving while the write waits for the lock
            await asyncio.sleep(0.02)
            ticks += 1
        assert ticks == 10 and not writing.done()
        other.execute("COMMIT")
        other.close()
        # it read what the other process committed before it: its transaction began once the lock was free
        assert await asyncio.wait_for(writing, 10) == 3
        assert threads[-1].startswith("cxhub-sqlite-writer")
        assert await store.write(_add("free again", threads), short=True) == 4
        assert threads[-1] == threading.current_thread().name
    finally:
        await store.dispose()


async def test_a_write_that_fails_leaves_nothing_and_the_next_one_writes(tmp_path: Path) -> None:
    store, _ = await _store(tmp_path)
    threads: list[str] = []
    try:

        def fail(conn: Connection) -> None:
            conn.execute(insert(LOCKS).values(name="half", owner="test", expires_at=UNTIL))
            raise ValueError("refused half way")

        for short in (True, False):
            with pytest.raises(ValueError, match="half way"):
                await store.write(fail, short=short)
        assert await store.write(_add("whole", threads), short=True) == 1
        assert await store.write(_add("long", threads)) == 2
        assert threads[-1].startswith("cxhub-sqlite-writer")  # not short: on the writer's thread
    finally:
        await store.dispose()


async def test_the_log_is_copied_into_the_database_by_a_thread_never_by_a_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint inside a short write's commit would stop the event loop for the copy and its fsyncs (5
    to 400 ms under load): the writer never runs one, the store's checkpoint thread does, while it writes."""
    store, path = await _store(tmp_path)
    copied_on: list[str] = []
    checkpoint = Checkpoints._checkpoint

    def on_its_thread(self: Checkpoints) -> None:
        copied_on.append(threading.current_thread().name)
        checkpoint(self)

    monkeypatch.setattr(Checkpoints, "_checkpoint", on_its_thread)
    blob = b"x" * 100_000

    def add_blob(conn: Connection) -> None:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS blobs (body BLOB)")
        conn.exec_driver_sql("INSERT INTO blobs (body) VALUES (?)", (blob,))

    try:
        for _ in range(60):  # 6 MB of log: past SQLite's default of a checkpoint at 1,000 pages (4 MB)
            await store.write(add_blob, short=True)
        await asyncio.sleep(0)
        assert await store.write(lambda conn: conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()) == 0
    finally:
        await store.dispose()  # waits for a checkpoint in progress
    assert copied_on and all(name.startswith("cxhub-sqlite-checkpoint") for name in copied_on)
    # what the first checkpoint copied is in the database file itself, without the log beside it
    alone = tmp_path / "alone.db"
    alone.write_bytes(path.read_bytes())
    with sqlite3.connect(alone) as db:
        assert db.execute("SELECT count(*) FROM blobs").fetchone()[0] >= 1


def _checkpoint_threads() -> set[int | None]:
    return {
        thread.ident for thread in threading.enumerate() if thread.name.startswith("cxhub-sqlite-checkpoint")
    }


async def test_a_store_that_writes_nothing_starts_no_checkpoint_thread(tmp_path: Path) -> None:
    """Every command opens a store; only one that writes needs its log copied."""
    before = _checkpoint_threads()
    store, _ = await _store(tmp_path)
    try:
        await store.read(lambda conn: conn.exec_driver_sql("SELECT 1").scalar())
        assert _checkpoint_threads() == before
        await store.write(lambda conn: conn.exec_driver_sql("CREATE TABLE t (x)"), short=True)
        assert len(_checkpoint_threads() - before) == 1
    finally:
        await store.dispose()
    assert _checkpoint_threads() == before
