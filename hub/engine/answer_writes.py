"""An answer batch's writes on PostgreSQL: one statement, one round trip.

A batch writes up to four things: the first answers (an INSERT of responses), the amended ones (an UPDATE of
responses), the invitations' status, and the write-back items (an upsert). As four statements, each an
executemany or a statement of its own, they were four round trips, and on PostgreSQL every round trip's
reply waits for the event loop's turn behind the requests of the moment (``Answers._write_batch``). Here
they are the data-modifying parts of one ``WITH`` statement, each given its rows as one array per column
(``hub.store.lists.rows_of_lists``), and PostgreSQL runs every part whether or not the statement reads it.
The parts touch different rows (a response is either new or amended in a batch), and the write-back items
are re-armed in the order answer batches lock them (``WriteBackQueue.in_lock_order``).

SQLite has no round trips to save: there the batch runs its executemany statements on the loop's thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, insert, literal, select, update

from hub.engine.writebacks import LISTED_COLUMNS, upsert_of_lists
from hub.store.lists import lists_of_rows, one_of, rows_of_lists
from hub.store.tables import Invitation, Response

_RESPONSES, _INVITATIONS = cast(Table, Response.__table__), cast(Table, Invitation.__table__)
#: the status of the invitations whose answer a batch stored or changed (parameters ``ids`` and ``now``): a
#: statement of its own on SQLite, a part of the one statement on PostgreSQL
ANSWERED = (
    update(_INVITATIONS)
    .where(one_of(_INVITATIONS.c.id, "ids"))
    .values(status="answered", updated_at=bindparam("now"))
)


def _statement(created_columns: Sequence[str], amended_columns: Sequence[str]) -> Any:
    created = rows_of_lists(_RESPONSES, created_columns, "c_")
    amended = rows_of_lists(_RESPONSES, ("id", *amended_columns), "a_")
    parts = (
        insert(_RESPONSES).from_select(list(created_columns), select(*created.c)).cte("created"),
        update(_RESPONSES)
        .where(_RESPONSES.c.id == amended.c.id)
        .values({name: amended.c[name] for name in amended_columns})
        .cte("amended"),
        ANSWERED.cte("answered"),
        upsert_of_lists().cte("queued"),
    )
    return select(literal(1)).add_cte(*parts)


class AnswerWrites:
    """The one statement for the columns of a first answer (``created_columns``) and of an amendment."""

    def __init__(self, created_columns: Sequence[str], amended_columns: Sequence[str]) -> None:
        self._created = tuple(created_columns)
        self._amended = tuple(amended_columns)
        self._statement = _statement(self._created, self._amended)

    def execute(
        self,
        conn: Connection,
        now: datetime,
        created: Sequence[Mapping[str, Any]],
        amended: Sequence[Mapping[str, Any]],
        answered: Sequence[int],
        queued: Sequence[Mapping[str, Any]],
    ) -> None:
        """Write a batch's rows in ``conn``'s transaction: ``created`` and ``amended`` hold the responses'
        columns by name, ``queued`` the write-back rows of ``WriteBackQueue.in_lock_order``."""
        if not (created or amended or answered or queued):
            return
        params: dict[str, Any] = {"now": now, "ids": list(answered)}
        params |= lists_of_rows(created, self._created, "c_")
        params |= lists_of_rows(amended, ("id", *self._amended), "a_")
        params |= lists_of_rows(queued, LISTED_COLUMNS, "w_")
        conn.execute(self._statement, params)
