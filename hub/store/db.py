"""Opening the database, applying migrations, and the cross-process job lock.

SQLite (WAL) is the embedded default; PostgreSQL is the production store. Both run the same code: rows are
claimed with ``FOR UPDATE SKIP LOCKED`` where the database has it (SQLite, a single writer, ignores it).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Select, create_engine, delete, event, make_url, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from hub.store.checkpoints import Checkpoints
from hub.store.driver_reads import DriverReads
from hub.store.sqlite_reads import SqliteReads, reads_for
from hub.store.tables import JobLock, Setting, utcnow

T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"
#: a PostgreSQL connection older than this is replaced at checkout (below common idle timeouts of proxies)
POOL_RECYCLE_SECONDS = 300
#: PostgreSQL connections kept open per process, and how many more a burst may open (closed again when they
#: are returned, so each costs a login for a few queries)
POOL_SIZE = 12
POOL_OVERFLOW = 10
#: reads through ``Store.read`` at once on PostgreSQL: fewer than the pool keeps open, so a burst of survey
#: links queues for a kept connection (a millisecond) rather than logging in new ones, and leaves kept
#: connections to the writers and the scheduled jobs
POSTGRES_READERS = 8
#: reads at once on a SQLite file, each on a connection and thread of its own (WAL lets readers run beside
#: each other and beside the writer); a read waiting for one of them waits a fraction of a millisecond
SQLITE_READERS = 4
#: how long a SQLite connection waits for another process's write lock before it fails as busy
BUSY_TIMEOUT_MS = 30_000
#: a write of at most this many rows (a claim of a batch, its outcome) is a short write (``Store.write``): the
#: claims of the jobs that run beside the survey pages, not a full re-sync's bulk batches of thousands
SHORT_WRITE_ROWS = 500


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL with ``synchronous=NORMAL``: a commit is in the WAL file when it returns, so it survives the process
    being killed (SIGKILL, OOM) at any moment after; only a power loss or an OS crash could take the last
    commits back. A webhook is acknowledged only after its commit (``hub.store.group_commit``), so what the
    hub acknowledged survives a crash of the hub, which is the promise made to senders; a host that must also
    survive power loss runs PostgreSQL."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def _writer_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """The writer never waits inside SQLite (``Store.write`` decides where it may wait), never copies the WAL
    into the database in a commit (``Checkpoints`` does, on a thread), and begins its transactions itself
    (``_begin_immediate``): the driver's own BEGIN would come only before the first write statement, after
    the transaction's reads."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=0")
    cursor.execute("PRAGMA wal_autocheckpoint=0")  # on a thread of its own (``hub.store.checkpoints``)
    cursor.close()
    dbapi_connection.isolation_level = None


def _begin_immediate(conn: Connection) -> None:
    """Every transaction of the writer takes the file's write lock as it begins: what it reads is what the
    last write of any process left, and nobody else writes until it commits (no lock upgrade that could find
    the file busy half way through a transaction)."""
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _busy(exc: OperationalError) -> bool:
    """SQLite found the file locked by another connection (another process's write)."""
    return getattr(exc.orig, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY


def _never_wait(dbapi_connection: Any, _record: Any) -> None:
    """A read on the event loop's own thread must never wait for a lock: busy at once, read on a thread."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=0")
    cursor.close()


class Store:
    """The database of one hub: an async engine, a session factory and the migration runner."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # no pre-ping: it costs a round trip per checkout. A connection the server dropped fails its statement
        # once, and SQLAlchemy then invalidates every pooled connection of that moment; long idle ones are
        # replaced before a server or a proxy times them out. Group commit writes again after such a loss.
        kwargs: dict[str, Any] = {} if self.is_sqlite else {"pool_recycle": POOL_RECYCLE_SECONDS}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
        pool: dict[str, Any] = (
            {} if self.is_sqlite else {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW}
        )
        self.engine: AsyncEngine = create_async_engine(url, **kwargs, **pool)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._writer: Engine | None = None
        self._writer_thread: ThreadPoolExecutor | None = None
        self._checkpoints: Checkpoints | None = None
        #: the writer's turns, one write at a time, in the loop that uses the store
        self._writing: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._reader: Engine | None = None
        self._reader_threads: ThreadPoolExecutor | None = None
        self._readers: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._inline: Engine | None = None
        self._sqlite_reads: SqliteReads | None = None
        self._inline_conn: Connection | None = None
        #: on PostgreSQL through asyncpg: the hot paths' reads straight through the driver (``first``)
        self._driver_reads: DriverReads | None = None
        if make_url(url).drivername == "postgresql+asyncpg":
            self._driver_reads = DriverReads(url, self.engine.dialect, POSTGRES_READERS, POOL_RECYCLE_SECONDS)
        #: on a SQLite file: the database's path, beside which the job locks' files are (``acquire_lock``)
        self._lock_files: str | None = None
        self._held: dict[str, tuple[str, int]] = {}
        if self.is_sqlite and ":memory:" not in url:
            path = make_url(url).database
            assert path is not None  # a file, not :memory:
            self._lock_files = path
            # one writer connection, used by one write at a time (``write``): on the event loop's thread for a
            # short write when the file is free, else on a thread of its own, where a whole transaction is one
            # hand-off (aiosqlite hands every statement, begin, execute, fetch, commit, over and back again)
            self._writer = create_engine(
                make_url(url).set(drivername="sqlite"),
                pool_size=1,
                max_overflow=0,
                connect_args={**kwargs["connect_args"], "check_same_thread": False},
            )
            event.listen(self._writer, "connect", _sqlite_pragmas)
            event.listen(self._writer, "connect", _writer_pragmas)
            event.listen(self._writer, "begin", _begin_immediate)
            self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="cxhub-sqlite-writer")
            self._checkpoints = Checkpoints(path)
            # readers alike: a read is one hand-off to a reader thread, which keeps its connection open
            # (a connection may serve a read on any reader thread, one thread at a time)
            self._reader = create_engine(
                make_url(url).set(drivername="sqlite"),
                pool_size=SQLITE_READERS,
                max_overflow=0,
                connect_args={**kwargs["connect_args"], "check_same_thread": False},
            )
            event.listen(self._reader, "connect", _sqlite_pragmas)
            # and one connection that reads on the event loop's thread: an indexed read of a few pages in the
            # page cache takes less than handing it to a thread and back; it never waits (``_never_wait``)
            self._inline = create_engine(
                make_url(url).set(drivername="sqlite"),
                pool_size=1,
                max_overflow=0,
                connect_args={"timeout": 0, "check_same_thread": False},
            )
            event.listen(self._inline, "connect", _sqlite_pragmas)
            event.listen(self._inline, "connect", _never_wait)
            self._sqlite_reads = reads_for(self._inline.dialect)
            self._reader_threads = ThreadPoolExecutor(
                SQLITE_READERS, thread_name_prefix="cxhub-sqlite-reader"
            )

    def engines(self) -> list[Engine]:
        """Every engine this store runs statements on: the async engine's and, on a SQLite file, the writer's
        and the readers'. Where an event listener goes to see every statement of the hub (a query log,
        a count of statements per request)."""
        found = [self.engine.sync_engine]
        found += [engine for engine in (self._writer, self._reader, self._inline) if engine is not None]
        return found

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed on success and rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    async def write(self, work: Callable[[Connection], T], *, short: bool = False) -> T:
        """Run ``work`` in one transaction, committed before this returns (rolled back if it raises).

        On PostgreSQL a pooled connection runs it, each statement one round trip. On a SQLite file the process's
        one writer connection runs it, one write at a time, each transaction holding the file's write lock
        from its BEGIN. A ``short`` write (a batch of a bounded number of rows: the group commits of answers
        and webhooks, ``hub.store.group_commit``; the jobs' claims and outcomes of up to ``SHORT_WRITE_ROWS``
        rows) runs right on the event loop's thread when the file is free:
        its statements cost less than handing them to another thread, and that thread's every SQLite call
        would wait for the loop's thread to let go of the interpreter lock (the answers' writes took twice as
        long there as here). Any other write, and a short one that found the file locked by another process,
        runs on the writer's thread, which waits for the lock up to the busy timeout.
        """
        if self._writer is None or self._writer_thread is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(work)
        writer = self._writer
        loop = asyncio.get_running_loop()
        if self._writing is None or self._writing[0] is not loop:  # a store used from a new loop (tests, CLI)
            self._writing = (loop, asyncio.Lock())
        async with self._writing[1]:
            result = await self._write_with(writer, loop, work, short)
        assert self._checkpoints is not None  # made with the writer
        self._checkpoints.after_commit()
        return result

    async def _write_with(
        self, writer: Engine, loop: asyncio.AbstractEventLoop, work: Callable[[Connection], T], short: bool
    ) -> T:
        """``write`` on the writer connection, in its turn: here or on the writer's thread."""
        if short:
            try:
                with writer.begin() as here:
                    return work(here)
            except OperationalError as exc:
                if not _busy(exc):  # busy: nothing was written (the BEGIN or a statement was refused)
                    raise

        def waiting() -> T:
            with writer.connect() as there:
                driver = there.connection.dbapi_connection
                assert driver is not None
                # on the driver's connection: a setting, not a statement of the transaction that follows
                driver.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                try:
                    with there.begin():
                        return work(there)
                finally:
                    driver.execute("PRAGMA busy_timeout=0")

        return await loop.run_in_executor(self._writer_thread, waiting)

    async def write_orm(self, work: Callable[[Session], T], *, short: bool = False) -> T:
        """``write`` with an ORM session on the transaction's connection, flushed before the commit.

        For a write of several dependent statements (an event's decision: find or create the person, check
        the contact policy, add the invitation): on a SQLite file all of them run on the writer's thread in
        one hand-off, instead of one hand-off and back per statement through the event loop, and beside the
        other writes of the process rather than fighting them for the file's lock.
        """

        def transaction(conn: Connection) -> T:
            with Session(bind=conn, expire_on_commit=False) as session:
                result = work(session)
                session.flush()
                return result

        return await self.write(transaction, short=short)

    async def read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work``, which only reads, on a connection of its own without a transaction around it.

        For the reads every request makes (a survey link's page). On a SQLite file it runs right here on the
        event loop's thread, on a connection that never waits for a lock: an indexed read of pages in the
        cache costs less than a thread hand-off (aiosqlite makes one per step: connect, execute, fetch,
        close). Should the file be busy it runs on a reader thread instead, which may wait. On PostgreSQL a
        pooled connection in autocommit, so no BEGIN and ROLLBACK round trips surround the query.
        """
        if self._reader is None or self._reader_threads is None:
            if self.is_sqlite:  # in memory: the one connection there is
                async with self.engine.connect() as conn:
                    return await conn.run_sync(work)
            loop = asyncio.get_running_loop()
            if (
                self._readers is None or self._readers[0] is not loop
            ):  # a store used from a new loop (tests, CLI)
                self._readers = (loop, asyncio.Semaphore(POSTGRES_READERS))
            async with self._readers[1], self.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                return await conn.run_sync(work)
        reader = self._reader
        if self._inline is not None:
            try:
                return self._read_inline(work)
            except OperationalError:  # the file was busy (a recovery, a checkpoint's reset): on a thread
                pass

        def run() -> T:
            with reader.connect() as conn:
                return work(conn)

        return await asyncio.get_running_loop().run_in_executor(self._reader_threads, run)

    @property
    def driver(self) -> DriverReads | None:
        """On PostgreSQL through asyncpg, the pool for the statements the hot paths run straight through the
        driver (``hub.store.driver_reads``); None on SQLite."""
        return self._driver_reads

    async def first(self, query: Select[Any], params: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The first row of ``query``, which only reads, as a mapping by column name; None when there is none.

        For the read every survey link starts with, straight through the driver, where SQLAlchemy costs more
        than the query: on a SQLite file through ``read`` on the sqlite3 connection (``hub.store.sqlite_reads``),
        on PostgreSQL through asyncpg (``hub.store.driver_reads``).
        """
        if self._driver_reads is not None:
            return await self._driver_reads.first(query, params)
        reads = self._sqlite_reads
        if reads is None:  # SQLite in memory: through SQLAlchemy's async engine

            def first_row(conn: Connection) -> Mapping[str, Any] | None:
                return cast(Mapping[str, Any] | None, conn.execute(query, params).mappings().first())

            return await self.read(first_row)

        def first_of_file(conn: Connection) -> Mapping[str, Any] | None:
            driver = conn.connection.dbapi_connection
            assert isinstance(driver, sqlite3.Connection)
            try:
                return reads.first(driver, query, params)
            except sqlite3.OperationalError as exc:
                # busy, said as SQLAlchemy says it: ``read`` then reads on a thread, which waits
                raise OperationalError(str(query), params, exc) from exc

        return await self.read(first_of_file)

    def _read_inline(self, work: Callable[[Connection], T]) -> T:
        """``work`` on the loop thread's own connection, kept open between reads: a read costs its query, not a
        pool checkout and check-in around it. Ended after each read (a rollback, which on a connection that
        only read just closes its read snapshot), so the WAL's checkpoints are never held back; any error
        closes the connection, and the next read opens a new one."""
        assert self._inline is not None
        conn = self._inline_conn
        if conn is None:
            conn = self._inline_conn = self._inline.connect()
        try:
            return work(conn)
        except BaseException:
            self._inline_conn = None
            conn.invalidate()
            conn.close()
            raise
        finally:
            if self._inline_conn is conn:
                conn.rollback()

    async def upgrade(self) -> None:
        """Apply every pending migration (run at start and by `cxhub db upgrade`).

        Processes that start together migrate once: on PostgreSQL the migration takes an advisory lock in its
        transaction (see ``migrations/env.py``); on SQLite, where every process shares one file on one machine,
        a lock file beside the database does the same. The others wait, then find the schema current.
        """
        if not self.is_sqlite or ":memory:" in self.url:
            await asyncio.to_thread(command.upgrade, alembic_config(self.url), "head")
            return
        path = Path(self.url.split(":///", 1)[1])
        path.parent.mkdir(parents=True, exist_ok=True)

        def upgrade_alone() -> None:
            with open(f"{path}.migrate.lock", "a+b") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    command.upgrade(alembic_config(self.url), "head")
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

        await asyncio.to_thread(upgrade_alone)

    async def is_current(self) -> bool:
        """True when the schema is at the newest migration (for /readyz)."""
        head = ScriptDirectory.from_config(alembic_config(self.url)).get_current_head()

        def current(conn: Connection) -> str | None:
            return MigrationContext.configure(conn).get_current_revision()

        async with self.engine.connect() as conn:
            return await conn.run_sync(current) == head

    async def dispose(self) -> None:
        if self._driver_reads is not None:
            await self._driver_reads.close()
        for _owner, fd in self._held.values():
            os.close(fd)
        self._held.clear()
        await self.engine.dispose()
        loop = asyncio.get_running_loop()
        if self._writer is not None and self._writer_thread is not None:
            await loop.run_in_executor(self._writer_thread, self._writer.dispose)
        if self._checkpoints is not None:
            await asyncio.to_thread(self._checkpoints.close)
        if self._reader is not None and self._reader_threads is not None:
            await loop.run_in_executor(self._reader_threads, self._reader.dispose)
        if self._inline is not None:
            if self._inline_conn is not None:
                self._inline_conn.close()
                self._inline_conn = None
            self._inline.dispose()

    # --- singleton jobs across processes ----------------------------------------------------------------------

    async def acquire_lock(self, name: str, owner: str, ttl: float) -> bool:
        """Take or renew the named lock for ``ttl`` seconds; False when another live owner holds it.

        On a SQLite file the lock is a file lock beside the database instead of a row: every process of that
        hub runs on this machine, and taking the row would be a write transaction per job run and per renewal,
        each fighting the answers and webhooks for SQLite's one write lock. The operating system drops a
        file lock when its process ends, killed or not, so it needs no lease; renewing it costs nothing.
        """
        if self._lock_files is not None:
            return self._lock_file(name, owner)
        now = utcnow()
        until = now + timedelta(seconds=ttl)
        async with self.session() as s:
            result = await s.execute(
                update(JobLock)
                .where(JobLock.name == name, (JobLock.owner == owner) | (JobLock.expires_at < now))
                .values(owner=owner, expires_at=until)
            )
            if result.rowcount:  # type: ignore[attr-defined]
                return True
        try:
            async with self.session() as s:
                s.add(JobLock(name=name, owner=owner, expires_at=until))
        except IntegrityError:
            return False
        return True

    def _lock_file(self, name: str, owner: str) -> bool:
        held = self._held.get(name)
        if held is not None:
            return held[0] == owner
        assert self._lock_files is not None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        fd = os.open(f"{self._lock_files}.{safe}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._held[name] = (owner, fd)
        return True

    async def release_lock(self, name: str, owner: str) -> None:
        if self._lock_files is not None:
            held = self._held.get(name)
            if held is not None and held[0] == owner:
                del self._held[name]
                os.close(held[1])  # closing the only descriptor of the lock file releases its lock
            return
        async with self.session() as s:
            await s.execute(delete(JobLock).where(JobLock.name == name, JobLock.owner == owner))

    # --- generated settings -----------------------------------------------------------------------------------

    async def generated_secret(self, key: str) -> str:
        """A random value created on first use and kept, e.g. the CSRF key when none is configured."""
        async with self.session() as s:
            found = await s.scalar(select(Setting.value).where(Setting.key == key))
            if found is not None:
                return found
        value = secrets.token_urlsafe(32)
        try:
            async with self.session() as s:
                s.add(Setting(key=key, value=value))
        except IntegrityError:
            async with self.session() as s:
                return str(await s.scalar(select(Setting.value).where(Setting.key == key)))
        return value
