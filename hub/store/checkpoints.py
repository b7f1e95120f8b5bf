"""Copying a SQLite file's write-ahead log into the database, off the event loop's thread.

In WAL mode every commit appends pages to the log; a checkpoint copies them into the database file (and
syncs both) so the log can start over. SQLite runs one by default inside the commit that takes the log past
1,000 pages, on the committing connection. For the hub's writer that is the event loop's own thread (short
writes, ``Store.write``): the copy and its fsyncs stopped every request of the process for 5 to 400 ms, a
few times a minute under a steady stream of answers. The writer turns that off (``wal_autocheckpoint=0``)
and this runs the checkpoint on a thread of its own instead, at most once a ``CHECKPOINT_SECONDS`` while the
writer commits. The thread spends its time in SQLite and the disk, without the interpreter's lock, beside
the loop rather than in its way.

PASSIVE: it waits for no reader and no writer and copies every page it may, so it never delays a write. A
log that a long read kept from being copied is copied by a later run; a process that writes nothing never
starts the thread.
"""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import structlog

log = structlog.get_logger("hub.store.checkpoints")

#: at most this often a checkpoint while the writer commits (a second of answers is a few MB of log)
CHECKPOINT_SECONDS = 1.0


class Checkpoints:
    """Checkpoints of the SQLite file at ``path``, requested by its writer after each commit."""

    def __init__(self, path: str, every: float = CHECKPOINT_SECONDS) -> None:
        self.path = path
        self.every = every
        self._due = 0.0
        self._running = False
        self._thread: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    def after_commit(self) -> None:
        """A commit of the writer: start a checkpoint unless one ran within ``every`` or is running."""
        now = time.monotonic()
        if self._running or now < self._due:
            return
        self._due = now + self.every
        self._running = True
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="cxhub-sqlite-checkpoint")
        self._thread.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(self.path, timeout=0, check_same_thread=False)
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # the next commit asks again; the log only grows meanwhile
            log.warning("sqlite.checkpoint_failed", error=str(exc))
            self._close()
        finally:
            self._running = False

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Wait for a running checkpoint, then close the thread and its connection."""
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        self._close()
