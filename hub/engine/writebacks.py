"""The write-back queue's producer: what an answer writes to each CRM, queued in the answer's transaction.

One row per (connector, key): queuing a key that exists re-arms it with a higher version, so a score followed
by a comment leaves one item, written once with the latest state.

Queueing is on every answer's path, so it is built for that: the upsert statement is built and compiled once
per database dialect and run once per answer with all of that answer's items (executemany), and the person's
identities in every target come from one read.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, cast

import structlog
from sqlalchemy import ColumnElement, Connection, Table, and_, bindparam, case, literal, select
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from hub.config import Campaign
from hub.engine.common import CaseValues, ResponseValues
from hub.models import CaseFeedback, NpsCategory, PersonOptOut, SurveyKind, TimelineEntry
from hub.store.bulk import Bulk
from hub.store.lists import in_chunks, one_of, rows_of_lists
from hub.store.sqlite_reads import rows
from hub.store.tables import Event, Identity, Invitation, Response, UTCDateTime, WriteBack

if TYPE_CHECKING:
    from hub.app import Hub

log = structlog.get_logger("hub.engine.writebacks")

#: the columns an item is queued with; ``now`` fills the times
_ITEM_FIELDS = (
    "connector",
    "kind",
    "key",
    "record_id",
    "person_record_id",
    "person_id",
    "response_id",
    "payload",
)


#: the queue's table, as a table (``Model.__table__`` is typed as any from-clause)
_WRITEBACK_TABLE = cast(Table, WriteBack.__table__)
#: what a row of the upsert carries besides the item's fields (``WriteBackQueue.rows``)
_ROW_KEYS = (*_ITEM_FIELDS, "now", "ready_at", "cap_at")
#: how many quiet periods a key re-armed again and again waits at most before it is written anyway
CAP_QUIET_PERIODS = 10


@cache
def upsert_statement(dialect: str) -> Any:
    """The queue's upsert for one dialect, with bound parameters only: built once, compiled once, and then run
    with a list of items (executemany). Re-queuing a key re-arms it (``_rearmed``)."""
    if dialect == "postgresql":
        insert: Any = postgresql.insert
    elif dialect == "sqlite":
        insert = sqlite.insert
    else:
        raise RuntimeError(f"unsupported database dialect {dialect}; use SQLite or PostgreSQL")
    now: Any = bindparam("now")
    stmt = insert(WriteBack).values(
        **{name: bindparam(name) for name in _ITEM_FIELDS},
        state="queued",
        version=1,
        attempts=0,
        next_attempt_at=now,
        ready_at=bindparam("ready_at"),
        cap_at=bindparam("cap_at"),
        created_at=now,
        updated_at=now,
    )
    return _rearmed(stmt)


#: the columns of an item's row that ``upsert_of_lists`` takes from the rows
LISTED_COLUMNS = (*_ITEM_FIELDS, "ready_at", "cap_at")


def upsert_of_lists(gate: ColumnElement[bool] | None = None) -> Any:
    """``upsert_statement`` on PostgreSQL with the rows given as one list per column (``rows_of_lists``,
    parameters ``w_<column>`` and ``now``): one statement, and a part of the answer batch's one write
    statement (``hub.engine.answer_writes``), which may ``gate`` it (no row is queued unless it holds). Its
    rows must hold each (connector, key) once (``WriteBackQueue.in_lock_order``): one INSERT may not re-arm a
    row twice."""
    listed = rows_of_lists(_WRITEBACK_TABLE, LISTED_COLUMNS, "w_")
    now = bindparam("now", type_=UTCDateTime())
    queued = select(*listed.c, literal("queued"), literal(1), literal(0), now, now, now)
    if gate is not None:
        queued = queued.where(gate)
    stmt = postgresql.insert(WriteBack).from_select(
        [*LISTED_COLUMNS, "state", "version", "attempts", "next_attempt_at", "created_at", "updated_at"],
        queued,
    )
    return _rearmed(stmt)


def _rearmed(stmt: Any) -> Any:
    """``stmt`` (an INSERT of items) re-arming the item of a (connector, key) that exists: queued again, a
    higher version, attempts reset, the newer payload, ready at the row's ``ready_at`` but never later than
    the cap set when the key was first armed after its last write (``WriteBackQueue.rows`` says why)."""
    # the SET of a conflict sees the row as it was: ``state`` is the state before this re-arm
    armed = WriteBack.state == "queued"
    return stmt.on_conflict_do_update(
        index_elements=["connector", "key"],
        set_={
            "state": "queued",
            "version": WriteBack.version + 1,
            "attempts": 0,
            "next_attempt_at": stmt.excluded.next_attempt_at,
            "payload": stmt.excluded.payload,
            "record_id": stmt.excluded.record_id,
            "response_id": stmt.excluded.response_id,
            "last_error": None,
            "ready_at": case(
                (and_(armed, WriteBack.cap_at < stmt.excluded.ready_at), WriteBack.cap_at),
                else_=stmt.excluded.ready_at,
            ),
            "cap_at": case((armed, WriteBack.cap_at), else_=stmt.excluded.cap_at),
            "updated_at": stmt.excluded.updated_at,
        },
    )


@cache
def upsert_bulk(dialect: str) -> Bulk:
    """``upsert_statement`` for executemany with the rows of ``WriteBackQueue.rows`` (``hub.store.bulk``)."""
    return Bulk(upsert_statement(dialect), _ROW_KEYS)


#: ``Session.info`` keys: answers queued by ``queue_answer`` until the commit, and whether it listens
_PENDING = "cxhub.writebacks.pending"
_LISTENING = "cxhub.writebacks.listening"


def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)


#: (person id, connector, record id) of some people in some write-back targets: built once, its lists bound
_IDENTITIES = select(Identity.person_id, Identity.connector, Identity.crm_id).where(
    one_of(Identity.person_id, "people"), one_of(Identity.connector, "targets")
)


def identities_of(
    conn: Connection | Session, people: Iterable[int], targets: Iterable[str]
) -> dict[int, dict[str, str]]:
    """Person id -> connector -> record id, for these people in these write-back targets (one read per
    ``PER_STATEMENT`` people; none without targets). On a session the read autoflushes like any other."""
    ordered, wanted = sorted(people), sorted(targets)
    found: dict[int, dict[str, str]] = {}
    if not wanted:
        return found
    for chunk in in_chunks(ordered):  # within every database's bound parameters
        params = {"people": chunk, "targets": wanted}
        listed = (
            rows(conn, _IDENTITIES, params)
            if isinstance(conn, Connection)
            else conn.execute(_IDENTITIES, params)
        )
        for person_id, connector, crm_id in listed:
            found.setdefault(person_id, {})[connector] = crm_id
    return found


def _item(
    base: dict[str, Any], kind: str, key: str, record_id: str, payload: dict[str, Any] | None
) -> dict[str, Any]:
    return {**base, "kind": kind, "key": key, "record_id": record_id, "payload": payload}


class WriteBackQueue:
    """Fills the write-back queue that ``hub.sync`` drains: one row per (connector, key), re-armed on change."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def queue_answer(
        self, s: AsyncSession, resp: Response, inv: Invitation, event: Event, campaign: Campaign
    ) -> None:
        """Queue what the campaign writes back for one answer, in each target CRM the person is known in.

        The items are written when the session's transaction commits, together with every other answer queued
        in it: one read of the people's identities and one upsert for all, built by the same code as the survey
        pages' answers (``items``, ``run``). Answers imported or seeded by the thousand in one transaction cost
        little more than their rows; a rollback drops what was queued with the rest.
        """
        pending = s.info.get(_PENDING)
        if pending is None:
            pending = s.info[_PENDING] = []
            if not s.info.get(_LISTENING):
                s.info[_LISTENING] = True
                sa_event.listen(s.sync_session, "before_commit", self._write_pending)
                sa_event.listen(s.sync_session, "after_rollback", _drop_pending)
        pending.append((resp, event, campaign))

    def _write_pending(self, session: Session) -> None:
        """``before_commit``: the queued answers' items, in the committing transaction (run in its greenlet)."""
        pending: list[tuple[Response, Event, Campaign]] = session.info.pop(_PENDING, None) or []
        if not pending:
            return
        people = {resp.person_id for resp, _, _ in pending}
        targets = {target for _, _, campaign in pending for target in campaign.targets()}
        identities = identities_of(session, people, targets)
        items = [
            item
            for resp, event, campaign in pending
            for item in self.items(resp, event, campaign, identities.get(resp.person_id, {}))
        ]
        if items:
            now = self.hub.now()
            connection = session.connection()
            upsert_bulk(connection.dialect.name).execute(connection, self.rows(items, now))

    def items(
        self, resp: ResponseValues, event: CaseValues, campaign: Campaign, identities: dict[str, str]
    ) -> list[dict[str, Any]]:
        """The queue's rows for one answer (without times): per target that knows the person, its summary,
        timeline entry and (in the CRM the case came from) the case's feedback, as the campaign asks.

        ``resp`` and ``event`` are a mapped ``Response`` and ``Event`` (answers stored directly) or the plain
        values of the answers' batch writer: both give the same rows."""
        settings = campaign.write_back
        category = NpsCategory(resp.category) if resp.category else None
        survey = self.hub.config.surveys.get(campaign.survey)
        asks_more = survey is None or bool(survey.comment or any(survey.topics.values()))
        complete = resp.comment is not None or resp.topic is not None or not asks_more
        items: list[dict[str, Any]] = []
        for target in campaign.targets():
            crm_id = identities.get(target)
            if crm_id is None:
                log.info("write_back.no_person", connector=target, response=resp.id)
                continue

            base = {
                "connector": target,
                "person_record_id": crm_id,
                "person_id": resp.person_id,
                "response_id": resp.id,
                "complete": complete,
            }
            if settings.person_summary:
                items.append(_item(base, "person_summary", f"summary:{resp.person_id}", crm_id, None))
            if settings.timeline:
                entry = TimelineEntry(
                    response_id=resp.id,
                    campaign=resp.campaign,
                    survey_kind=SurveyKind(resp.survey_kind),
                    rating=resp.rating,
                    score=resp.score,
                    category=category,
                    comment=resp.comment,
                    topic=resp.topic,
                    answered_at=resp.answered_at,
                    channel=resp.channel,
                    case_id=event.record_id if target == event.connector else None,
                    language=resp.language,
                )
                items.append(
                    _item(
                        base, "timeline_entry", f"timeline:{resp.id}", crm_id, entry.model_dump(mode="json")
                    )
                )
            if settings.case_feedback and target == event.connector:
                feedback = CaseFeedback(
                    response_id=resp.id,
                    rating=resp.rating,
                    score=resp.score,
                    category=category,
                    comment=resp.comment,
                    processed_at=resp.updated_at,
                    set_status=settings.case_status_after_feedback,
                    internal_comment=settings.internal_comment,
                )
                # the closed record: the event's record id (stored from its payload when it came in)
                items.append(
                    _item(
                        base,
                        "case_feedback",
                        f"case:{resp.id}",
                        event.record_id,
                        feedback.model_dump(mode="json"),
                    )
                )
        return items

    async def queue(
        self,
        s: AsyncSession,
        connector: str,
        kind: str,
        key: str,
        record_id: str,
        person_record_id: str | None,
        resp: Response,
        payload: dict[str, Any] | None,
    ) -> None:
        """Queue one write-back; an existing item with the same key is re-armed with the newer payload."""
        await self.upsert(
            s, connector, kind, key, record_id, person_record_id, resp.person_id, resp.id, payload
        )

    async def queue_opt_out(self, s: AsyncSession, person_id: int, change: PersonOptOut) -> int:
        """Queue the hub's opt-out (or its end) for every configured CRM the person is known in.

        One item per person and CRM (``optout:<person>``): a STOP then a START before the sync leaves one
        item holding the latest state, written once. Returns how many CRMs get it.
        """
        identities = await s.scalars(select(Identity).where(Identity.person_id == person_id))
        payload = change.model_dump(mode="json")
        items = [
            {
                "connector": identity.connector,
                "kind": change.kind,
                "key": f"optout:{person_id}",
                "record_id": identity.crm_id,
                "person_record_id": identity.crm_id,
                "person_id": person_id,
                "response_id": None,
                "payload": payload,
            }
            for identity in identities
            if identity.connector in self.hub.connectors
        ]
        await self.run(s, items)
        return len(items)

    async def upsert(
        self,
        s: AsyncSession,
        connector: str,
        kind: str,
        key: str,
        record_id: str,
        person_record_id: str | None,
        person_id: int | None,
        response_id: str | None,
        payload: dict[str, Any] | None,
    ) -> None:
        """Insert one item, or re-arm the item of that (connector, key) with the newer payload."""
        item = {
            "connector": connector,
            "kind": kind,
            "key": key,
            "record_id": record_id,
            "person_record_id": person_record_id,
            "person_id": person_id,
            "response_id": response_id,
            "payload": payload,
        }
        await self.run(s, [item])

    async def run(self, s: AsyncSession, items: list[dict[str, Any]], now: datetime | None = None) -> None:
        """All ``items`` (from ``items``) in one execution of the dialect's precompiled upsert."""
        if not items:
            return
        rows = self.rows(items, now or self.hub.now())
        # on the session's connection: one executemany, without the ORM's bulk-insert layer around it
        connection = await s.connection()
        await connection.run_sync(lambda conn: upsert_bulk(conn.dialect.name).execute(conn, rows))

    def write(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """``run`` of ``rows`` (from ``rows``) in the transaction of ``conn`` (``Store.write``: the answers'
        batch writer on SQLite; on PostgreSQL the batch writes them in its one statement,
        ``hub.engine.answer_writes``)."""
        upsert_bulk(conn.dialect.name).execute(conn, self.in_lock_order(rows))

    @staticmethod
    def in_lock_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``rows`` (from ``rows``) by person, each (connector, key) once with its last values: the rows two
        answer batches in flight at once (PostgreSQL) can share are people's summaries, then locked in one
        order. A key queued twice in one batch (two answers of one person) is re-armed once: its last row
        holds the newest payload, and one higher version stops an older write in flight from being marked
        done as surely as two."""
        latest = {(row["connector"], row["key"]): row for row in rows}
        # a stable sort: each answer's items stay in their order
        return sorted(latest.values(), key=lambda row: (row["connector"], row["person_id"]))

    @staticmethod
    def soonest_ready(rows: list[dict[str, Any]]) -> datetime | None:
        """When the prompt sync should look at the ``rows`` of one answer: the soonest ``ready_at`` of them
        (sooner only for a key held at its cap, which an earlier answer already timed the sync to). None for
        no rows."""
        return min((row["ready_at"] for row in rows), default=None)

    def rows(self, items: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
        """The upsert's rows for ``items`` queued at ``now``: the items themselves, each given when it is
        ready for the prompt sync (in place: ``items`` builds new dicts for every answer, and this is on the
        path of every answer).

        The debounce exists for one case: a customer gives a score, the survey page shows the follow-up
        question, and the comment (or a topic) arrives a moment later, re-arming the same keys. Waiting is
        worth it only while that can still happen, so:

        * an item whose answer is complete (``complete``: a comment or a topic given, or a survey that asks
          no follow-up) is ready at once: nothing more is coming in the common case;
        * any other item is ready once its own key was not re-armed for ``sync.prompt_seconds``: each re-arm
          moves its ``ready_at`` to the end of a new quiet period, so a comment within that time makes score
          and comment one write. A comment typed for longer costs a second write; holding every score for as
          long as people type would make the CRM minutes late for the many who leave no comment;
        * however often a key is re-armed, it waits at most ``CAP_QUIET_PERIODS`` quiet periods from the
          first re-arm after its last write (``cap_at``, kept by the upsert while the key stays queued).

        Decided here, when the item is written, rather than by the sync when it looks: the sync's question
        "what is ready?" is then one range of an index (``ix_writebacks_ready``), however many items wait
        for their quiet period, instead of a look at every waiting item and its answer on every pass.
        Each item is judged by its own key, so a steady stream of other people's answers never delays one.
        """
        quiet = timedelta(seconds=self.hub.config.sync.prompt_seconds)
        later, cap = now + quiet, now + CAP_QUIET_PERIODS * quiet
        for item in items:
            item.update(now=now, ready_at=now if item.get("complete") else later, cap_at=cap)
        return items
