"""An answer batch's writes on PostgreSQL: one statement, one round trip.

A batch writes up to four things: the first answers (an INSERT of responses), the amended ones (an UPDATE of
responses), the invitations' status, and the write-back items (an upsert). As four statements, each an
executemany or a statement of its own, they were four round trips, and on PostgreSQL every round trip's
reply waits for the event loop's turn behind the requests of the moment (``Answers._write_batch``). Here
they are the data-modifying parts of one ``WITH`` statement, each given its rows as one array per column
(``hub.store.lists.rows_of_lists``), and PostgreSQL runs every part whether or not the statement reads it.
The parts touch different rows (a response is either new or amended in a batch), and the write-back items
are re-armed in the order answer batches lock them (``WriteBackQueue.in_lock_order``).

The same statement comes in two forms. ``execute`` writes inside a transaction that locked the batch's
invitations before it read them. ``write_checked`` is the whole transaction: the batch was read without a
lock or a transaction, and the statement first locks every invitation and response the batch read, in id
order, and checks that each is still the version read (its ``xmin``, the transaction that wrote the row
version). Only if every one is does any part write; otherwise nothing is written and the caller writes the
batch again the locked way. A lock that waits for another writer sees that writer's row once it commits
(PostgreSQL re-checks a locked row's conditions on its newest version), so what the batch computed from its
read stands unchanged until the commit, as if the rows had been locked before the read. Two round trips
(the read, this statement, which commits) instead of five (BEGIN, the lock, the read, the write, COMMIT):
on a 2-core machine each round trip is a wait for the database's process and then for the event loop, and
every answer of the batch waits through all of them.

SQLite has no round trips to save: there the batch runs its executemany statements on the loop's thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    Text,
    and_,
    bindparam,
    func,
    insert,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from hub.engine.writebacks import LISTED_COLUMNS, upsert_of_lists
from hub.store.driver_reads import DriverReads
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


def version(table: Table) -> ColumnElement[str]:
    """A row's version on PostgreSQL: the id of the transaction that wrote it (``xmin``), as text."""
    return literal_column(f"{table.name}.xmin::text", Text)


def _held(table: Table, prefix: str) -> Any:
    """The rows of ``table`` whose id and version are given (parameters ``<prefix>ids`` and
    ``<prefix>versions``) and still that version, locked in id order."""
    given = select(
        func.unnest(bindparam(f"{prefix}ids", type_=ARRAY(table.c.id.type))).label("id"),
        func.unnest(bindparam(f"{prefix}versions", type_=ARRAY(Text()))).label("version"),
    ).subquery(f"{prefix}given")
    return (
        select(table.c.id)
        .join(given, and_(table.c.id == given.c.id, version(table) == given.c.version))
        .order_by(table.c.id)
        .with_for_update(of=table)
        .cte(f"{prefix}held")
    )


def _gate() -> ColumnElement[bool]:
    """True when every invitation and response the batch read is locked and unchanged (parameters
    ``i_ids``, ``i_versions``, ``n_invitations``, ``r_ids``, ``r_versions``, ``n_responses``)."""
    invitations, responses = _held(_INVITATIONS, "i_"), _held(_RESPONSES, "r_")
    held = and_(
        select(func.count()).select_from(invitations).scalar_subquery() == bindparam("n_invitations"),
        select(func.count()).select_from(responses).scalar_subquery() == bindparam("n_responses"),
    )
    checked = select(held.label("ok")).cte("checked")
    return select(checked.c.ok).scalar_subquery()


def _statement(
    created_columns: Sequence[str], amended_columns: Sequence[str], gate: ColumnElement[bool] | None
) -> Any:
    created = rows_of_lists(_RESPONSES, created_columns, "c_")
    amended = rows_of_lists(_RESPONSES, ("id", *amended_columns), "a_")
    gated: tuple[ColumnElement[bool], ...] = () if gate is None else (gate,)
    parts = (
        insert(_RESPONSES)
        .from_select(list(created_columns), select(*created.c).where(*gated))
        .cte("created"),
        update(_RESPONSES)
        .where(_RESPONSES.c.id == amended.c.id, *gated)
        .values({name: amended.c[name] for name in amended_columns})
        .cte("amended"),
        ANSWERED.where(*gated).cte("answered"),
        upsert_of_lists(gate).cte("queued"),
    )
    return select(gate if gate is not None else literal(True)).add_cte(*parts)


@dataclass(frozen=True)
class BatchRows:
    """What a batch writes: ``created`` and ``amended`` hold the responses' columns by name, ``answered`` the
    ids of the invitations answered for the first time, ``queued`` the write-back rows of
    ``WriteBackQueue.in_lock_order``; ``now`` is the batch's moment."""

    now: datetime
    created: Sequence[Mapping[str, Any]]
    amended: Sequence[Mapping[str, Any]]
    answered: Sequence[int]
    queued: Sequence[Mapping[str, Any]]

    def __bool__(self) -> bool:
        return bool(self.created or self.amended or self.answered or self.queued)


@dataclass
class Versions:
    """The version (``version``) of each row a batch read: invitations by id, answers by response id."""

    invitations: dict[int, str] = field(default_factory=dict)
    responses: dict[str, str] = field(default_factory=dict)


class AnswerWrites:
    """The one statement for the columns of a first answer (``created_columns``) and of an amendment."""

    def __init__(self, created_columns: Sequence[str], amended_columns: Sequence[str]) -> None:
        self._created = tuple(created_columns)
        self._amended = tuple(amended_columns)
        self._statement = _statement(self._created, self._amended, None)
        self._checked = _statement(self._created, self._amended, _gate())

    def execute(self, conn: Connection, rows: BatchRows) -> None:
        """Write a batch's rows in ``conn``'s transaction, which locked what the batch read."""
        if rows:
            conn.execute(self._statement, self._params(rows))

    async def write_checked(self, driver: DriverReads, read: Versions, rows: BatchRows) -> bool:
        """Write a batch's rows in one statement of their own, only if the rows ``read`` for it are still the
        versions read. False: one changed since, and nothing was written."""
        if not rows:
            return True  # nothing to write: what was read is the answer
        params = self._params(rows) | {
            "i_ids": list(read.invitations),
            "i_versions": list(read.invitations.values()),
            "n_invitations": len(read.invitations),
            "r_ids": list(read.responses),
            "r_versions": list(read.responses.values()),
            "n_responses": len(read.responses),
        }
        return bool(await driver.value(self._checked, params))

    def _params(self, rows: BatchRows) -> dict[str, Any]:
        params: dict[str, Any] = {"now": rows.now, "ids": list(rows.answered)}
        params |= lists_of_rows(rows.created, self._created, "c_")
        params |= lists_of_rows(rows.amended, ("id", *self._amended), "a_")
        params |= lists_of_rows(rows.queued, LISTED_COLUMNS, "w_")
        return params
