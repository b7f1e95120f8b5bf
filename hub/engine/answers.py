"""Answers in: the survey page for a token, the answer it posts (or a channel's reply), alerts, unsubscribes.

An answer is stored and its write-backs queued in one transaction; a later comment amends the same response
within the amend window, and a concurrent double-click is resolved by the unique response per invitation.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import structlog
from sqlalchemy import Connection, Table, and_, bindparam, insert, select, union_all, update
from sqlalchemy.exc import IntegrityError, OperationalError

from hub.config import Campaign, SurveySettings
from hub.engine.answer_writes import ANSWERED, AnswerWrites, BatchRows, Versions, version
from hub.engine.common import hash_token, invitation_record, question, response_record
from hub.engine.optouts import OptOuts
from hub.engine.writebacks import WriteBackQueue
from hub.errors import BadInput, HubError
from hub.http import with_retries
from hub.models import (
    SCALES,
    AlertMessage,
    CaseEvent,
    InvitationRecord,
    NpsCategory,
    Recipient,
    ResponseRecord,
    SurveyKind,
    nps_category,
)
from hub.people import upsert_person
from hub.store.aggregates import json_pairs, pairs
from hub.store.bulk import Bulk
from hub.store.driver_reads import DriverReads
from hub.store.group_commit import GroupCommit
from hub.store.lists import one_of
from hub.store.sqlite_reads import rows
from hub.store.tables import CleanString, Event, Identity, Invitation, Person, Response, Token
from hub.texts import text

if TYPE_CHECKING:
    from hub.app import Hub

log = structlog.get_logger("hub.engine.answers")


@dataclass(frozen=True)
class _Answer:
    """What one answer brings: a rating and/or the follow-up's comment and topic, and the channel it came by."""

    rating: int | None
    comment: str | None
    topic: str | None
    channel: str | None


def _category(kind: SurveyKind, rating: int) -> NpsCategory | None:
    return nps_category(rating) if kind is SurveyKind.NPS else None


@dataclass
class SurveyPage:
    """What the survey page needs to render one invitation."""

    invitation_id: int
    token_hash: str
    survey: SurveySettings
    survey_kind: SurveyKind
    language: str
    question: str
    low_label: str
    high_label: str
    response: ResponseRecord | None
    amendable: bool


#: the most answers one transaction carries (a bound on its statements' size, not a tuning knob)
ANSWER_BATCH = 200


class _Case(NamedTuple):
    """The event behind an invitation, as an answer needs it: where its record is, and the case (alerts)."""

    connector: str
    event_id: str
    record_id: str
    payload: dict[str, Any]


@dataclass(slots=True)
class _ResponseRow:
    """A response's values (a row of ``responses``, field for column) as the batch writer reads and changes
    them: plain values, so storing an answer builds no mapped object."""

    id: str
    invitation_id: int
    person_id: int
    campaign: str
    survey_kind: str
    rating: int
    score: float
    category: str | None
    comment: str | None
    topic: str | None
    language: str
    channel: str | None
    answered_at: datetime
    updated_at: datetime

    def values(self) -> dict[str, Any]:
        """Its row, for the INSERT of a first answer."""
        return {name: getattr(self, name) for name in _RESPONSE_COLUMNS}

    def changes(self) -> dict[str, Any]:
        """What an amendment changes, for the UPDATE of ``_AMEND_RESPONSES``: the id and the changed columns,
        each under ``b_<column>`` (a parameter may not share a column's name in an UPDATE's values)."""
        return {f"b_{name}": getattr(self, name) for name in ("id", *_AMENDED_COLUMNS)}


#: the columns of ``responses`` a ``_ResponseRow`` holds, in its fields' order
_RESPONSE_COLUMNS = tuple(f.name for f in fields(_ResponseRow))
#: the columns an amendment changes (``_ResponseRow.changes``, ``_AMEND_RESPONSES``)
_AMENDED_COLUMNS = ("rating", "score", "category", "comment", "topic", "updated_at")


@dataclass(slots=True)
class _Target:
    """One invitation of a batch as read after its lock (the fields before ``case`` are its columns), its
    event, and its answer so far: ``status`` and ``response`` follow the batch's answers in memory."""

    id: int
    campaign: str
    person_id: int | None
    status: str
    reason: str | None
    channel: str | None
    language: str
    send_after: datetime | None
    sent_at: datetime | None
    created_at: datetime
    case: _Case
    response: _ResponseRow | None

    @classmethod
    def of(cls, row: Sequence[Any]) -> _Target:
        """From a row of ``_BATCH_QUERY``: the invitation's columns, the event's, then the response's."""
        answer = row[_RESPONSE_AT:_IDENTITIES_AT]
        response = None if answer[0] is None else _ResponseRow(*answer)
        values = (*row[:_CASE_AT], _Case(*row[_CASE_AT:_RESPONSE_AT]), response)
        return cls(*values)


#: a stored answer: the response, its invitation, what the response held before (None: a first answer), the
#: event, the campaign and the survey's kind
_Stored = tuple[
    ResponseRecord, InvitationRecord, "tuple[int, str | None, str | None] | None", _Case, Campaign, SurveyKind
]


@dataclass(frozen=True)
class _Submitted:
    """One answer for the batch writer; ``resolve``: first look the person up in targets that lack them.

    An answer posted on a survey page names its invitation by the link's ``token_hash`` (``invitation_id`` is
    then 0): the batch looks the link up in its own transaction, so the page's POST needs no read of its own.
    """

    invitation_id: int
    answer: _Answer
    resolve: bool
    token_hash: str | None = None


@dataclass(frozen=True)
class _Written:
    """What became of one answer: stored, and whether it changed anything (a repeated answer does not)."""

    stored: _Stored
    changed: bool
    #: when its write-back items are ready for the prompt sync (``WriteBackQueue.soonest_ready``)
    ready_at: datetime | None = None


@dataclass
class _Step:
    """One batch's moment and amend window, and what its answers leave to write after them."""

    now: datetime
    window: timedelta
    #: invitations answered for the first time (their status changes)
    answered: set[int] = field(default_factory=set)
    queued: list[dict[str, Any]] = field(default_factory=list)
    #: response id -> values: first answers to insert, stored answers whose amendment changed them
    created: dict[str, _ResponseRow] = field(default_factory=dict)
    amended: dict[str, _ResponseRow] = field(default_factory=dict)

    def rows(self) -> BatchRows:
        """What the batch writes on PostgreSQL (the first answers with their latest values: a second answer
        in the batch amended them in memory)."""
        return BatchRows(
            self.now,
            created=[resp.values() for resp in self.created.values()],
            amended=[resp.values() for resp in self.amended.values()],
            answered=sorted(self.answered),
            queued=WriteBackQueue.in_lock_order(self.queued),
        )


class _UnknownTargets(Exception):
    """Write-back targets that do not know the person yet: looked up outside the transaction, then again."""

    def __init__(self, person_id: int, targets: list[str]) -> None:
        super().__init__(", ".join(targets))
        self.person_id = person_id
        self.targets = targets


_TOKENS, _INVITATIONS, _RESPONSES = Token.__table__, Invitation.__table__, Response.__table__
#: the one read behind a survey link: the token, its invitation, and the answer so far (``r_*``, all None when
#: there is none yet); by primary key, the invitation's key and the unique response per invitation
_PAGE_QUERY = (
    select(
        _TOKENS.c.purpose,
        _TOKENS.c.expires_at,
        _INVITATIONS.c.id,
        _INVITATIONS.c.campaign,
        _INVITATIONS.c.language,
        *(column.label(f"r_{column.name}") for column in _RESPONSES.c),
    )
    .select_from(
        _TOKENS.join(_INVITATIONS, _INVITATIONS.c.id == _TOKENS.c.invitation_id).outerjoin(
            _RESPONSES, _RESPONSES.c.invitation_id == _INVITATIONS.c.id
        )
    )
    .where(_TOKENS.c.hash == bindparam("hash"))
)


#: the invitations and expiry of a batch's survey links (an unsubscribe link answers nothing)
_LINKS_QUERY = select(_TOKENS.c.hash, _TOKENS.c.invitation_id, _TOKENS.c.expires_at).where(
    one_of(_TOKENS.c.hash, "hashes"), _TOKENS.c.purpose == "survey"
)
#: a survey link's invitation and when the link expires
_Link = tuple[int, datetime]

_EVENTS = Event.__table__
#: the responses table the batch writer changes, as a table (``Model.__table__`` is typed as any from-clause)
_RESPONSE_TABLE = cast(Table, Response.__table__)
_INVITATION_COLUMNS = [f.name for f in fields(_Target) if f.name not in ("case", "response")]
_CASE_AT = len(_INVITATION_COLUMNS)
_RESPONSE_AT = _CASE_AT + len(_Case._fields)
_IDENTITIES_AT = _RESPONSE_AT + len(_RESPONSE_COLUMNS)
_LINKED, _NAMED = _TOKENS.alias("linked"), _INVITATIONS.alias("named")
#: the ids of a batch's invitations: those named by id (``ids``) and those of its survey links (``hashes``)
_BATCH_INVITATIONS = union_all(
    select(_NAMED.c.id).where(one_of(_NAMED.c.id, "ids")),
    select(_LINKED.c.invitation_id).where(one_of(_LINKED.c.hash, "hashes"), _LINKED.c.purpose == "survey"),
)
#: the survey link of an invitation when the batch names it (an outer join's condition)
_ITS_LINK = and_(
    _TOKENS.c.invitation_id == _INVITATIONS.c.id,
    one_of(_TOKENS.c.hash, "hashes"),
    _TOKENS.c.purpose == "survey",
)
#: a batch's invitations locked, in id order, on a database with row locks (on SQLite the writer's transaction
#: holds the file's write lock from its BEGIN): those named by id (``ids``) and those of its survey links
#: (``hashes``), each row with the link's hash and expiry when a link named it (a link never changes, so it is
#: read with the lock: one round trip, not two). A read that takes no snapshot of the answers, which are read
#: by the next statement, after every lock is held.
_LOCK_INVITATIONS = (
    select(_INVITATIONS.c.id, _TOKENS.c.hash, _TOKENS.c.expires_at)
    .select_from(_INVITATIONS.outerjoin(_TOKENS, _ITS_LINK))
    .where(_INVITATIONS.c.id.in_(_BATCH_INVITATIONS))
    .order_by(_INVITATIONS.c.id)
    .with_for_update(of=_INVITATIONS)
)
_IDENTITY_TABLE = Identity.__table__
#: an invitation's person's record id in every CRM they are known in, as ``json_pairs`` of (connector, id)
_PERSON_IDENTITIES = (
    select(json_pairs(_IDENTITY_TABLE.c.connector, _IDENTITY_TABLE.c.crm_id))
    .where(_IDENTITY_TABLE.c.person_id == _INVITATIONS.c.person_id)
    .scalar_subquery()
)
#: the columns of a batch's invitations (``_Target``'s), their events' (``_Case``), their answers so far
#: (``_ResponseRow``'s, all None without one) and their people's record ids in every CRM (the identities ride
#: along in a subquery, read by the index of a person's identities)
_BATCH_COLUMNS = (
    *(_INVITATIONS.c[name] for name in _INVITATION_COLUMNS),
    *(_EVENTS.c[name] for name in _Case._fields),
    *(_RESPONSES.c[name].label(f"r_{name}") for name in _RESPONSE_COLUMNS),
    _PERSON_IDENTITIES.label("identities"),
)
_ANSWERED_INVITATIONS = _INVITATIONS.join(_EVENTS, _EVENTS.c.id == _INVITATIONS.c.event_pk).outerjoin(
    _RESPONSES, _RESPONSES.c.invitation_id == _INVITATIONS.c.id
)
#: a batch's invitations by id, with ``_BATCH_COLUMNS``: one statement, after the invitations are locked
_BATCH_QUERY = (
    select(*_BATCH_COLUMNS).select_from(_ANSWERED_INVITATIONS).where(one_of(_INVITATIONS.c.id, "ids"))
)
#: the batch read of a checked write (``AnswerWrites.write_checked``), one statement without a lock: the
#: invitations named by id (``ids``) and those of survey links (``hashes``), with ``_BATCH_COLUMNS``, then the
#: link's hash and expiry when a link named the invitation (``_LINK_AT``), then the versions of the invitation
#: and of its answer so far (``_VERSIONS_AT``)
_UNLOCKED_BATCH_QUERY = (
    select(
        *_BATCH_COLUMNS,
        _TOKENS.c.hash,
        _TOKENS.c.expires_at,
        version(cast(Table, _INVITATIONS)).label("i_version"),
        version(_RESPONSE_TABLE).label("r_version"),
    )
    .select_from(_ANSWERED_INVITATIONS.outerjoin(_TOKENS, _ITS_LINK))
    .where(_INVITATIONS.c.id.in_(_BATCH_INVITATIONS))
)
_LINK_AT = _IDENTITIES_AT + 1
_VERSIONS_AT = _LINK_AT + 2
#: the batch's first answers, one executemany (values bound through the columns' types, which clean them)
_INSERT_RESPONSES = Bulk(insert(_RESPONSE_TABLE), _RESPONSE_COLUMNS)
#: the batch's amended answers, one executemany keyed by the response's id
_AMEND_RESPONSES = Bulk(
    update(_RESPONSE_TABLE)
    .where(_RESPONSES.c.id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}") for name in _AMENDED_COLUMNS}),
    [f"b_{name}" for name in ("id", *_AMENDED_COLUMNS)],
)
#: the batch's writes on PostgreSQL, in one statement
_WRITES = AnswerWrites(_RESPONSE_COLUMNS, _AMENDED_COLUMNS)


def _cleaner(column: str) -> Callable[[str | None], str | None]:
    """How ``responses.<column>`` cleans text (NUL, lone surrogates, its length), as a mapped object's
    assignment does: the value the batch goes on using is the one stored."""
    kind = _RESPONSES.c[column].type
    assert isinstance(kind, CleanString)
    return kind.clean


_CLEAN_CHANNEL, _CLEAN_COMMENT, _CLEAN_TOPIC = _cleaner("channel"), _cleaner("comment"), _cleaner("topic")


def _response_of(row: Mapping[str, Any]) -> ResponseRecord | None:
    """The answer so far from a row of ``_PAGE_QUERY``: its ``r_*`` columns are a response's."""
    if row["r_id"] is None:
        return None
    return ResponseRecord.model_validate({column.name: row[f"r_{column.name}"] for column in _RESPONSES.c})


def _keys(batch: list[_Submitted]) -> tuple[list[str], list[int]]:
    """How a batch names its invitations: its survey links' hashes, and the ids of those named by id."""
    hashes = sorted({item.token_hash for item in batch if item.token_hash is not None})
    named = sorted({item.invitation_id for item in batch if item.token_hash is None})
    return hashes, named


class Answers:
    """Shows survey pages, records answers (from the page or a channel's reply), alerts, and unsubscribes."""

    def __init__(self, hub: Hub, write_backs: WriteBackQueue) -> None:
        self.hub = hub
        self.write_backs = write_backs
        self.optouts = OptOuts(hub, write_backs)
        # the answers of one moment share one transaction, each caller answered after its COMMIT; an answer
        # that cannot be stored is refused alone, and a batch that fails on a unique key (two processes storing
        # the same first answer) is written again one answer at a time
        self.writer: GroupCommit[_Submitted, _Written] = GroupCommit(
            self._write_answers, ANSWER_BATCH, in_flight=1 if hub.store.is_sqlite else 2
        )

    # --- 4. answer --------------------------------------------------------------------------------------------

    async def page_for_token(self, token: str, purpose: str = "survey") -> tuple[str, SurveyPage | None]:
        """Look a token up: ("ok", page), ("expired", page), ("closed", page) or ("unknown", None).

        One indexed read (token, its invitation, the answer so far) through ``Store.read``, no session:
        every survey page and every answer starts here, and mail scanners open links by the thousand.
        """
        token_hash = hash_token(token)
        row = await self.hub.store.first(_PAGE_QUERY, {"hash": token_hash})
        if row is None or row["purpose"] != purpose:
            return "unknown", None
        campaign = self.hub.config.campaigns.get(row["campaign"])
        if campaign is None:
            return "unknown", None
        survey = self.hub.config.surveys[campaign.survey]
        language = row["language"]
        resp = _response_of(row)
        now = self.hub.now()
        window = timedelta(hours=self.hub.config.hub.amend_window_hours)
        amendable = resp is None or now - resp.answered_at <= window
        page = SurveyPage(
            invitation_id=row["id"],
            token_hash=token_hash,
            survey=survey,
            survey_kind=survey.kind,
            language=language,
            question=question(self.hub, survey, language),
            low_label=text(language, f"low.{survey.kind.value}"),
            high_label=text(language, f"high.{survey.kind.value}"),
            response=resp,
            amendable=amendable,
        )
        if row["expires_at"] <= now and resp is None:
            return "expired", page
        if not amendable:
            return "closed", page
        return "ok", page

    async def record_answer(
        self,
        invitation_id: int,
        rating: int | None,
        comment: str | None = None,
        topic: str | None = None,
        channel: str | None = None,
    ) -> ResponseRecord:
        """Store an answer (or amend it: a later comment updates the same response) and queue write-backs.

        The answer, the invitation's status and every write-back item are written in one short transaction,
        shared with the other answers of the same moment (``hub.store.group_commit``); nothing is left half
        done by a failure. What follows (hooks, alerts, waking the sync) reads nothing back. Looking the person
        up in another CRM (an HTTP call) happens outside any transaction, and only when a write-back target
        does not know the person yet.
        """
        answer = _Answer(rating, comment, topic, channel)
        return await self._record(_Submitted(invitation_id, answer, resolve=True))

    async def answer_link(
        self, token: str, rating: int | None, comment: str | None = None, topic: str | None = None
    ) -> ResponseRecord:
        """``record_answer`` for an answer posted on the survey page of ``token``: the link is looked up in the
        transaction that stores the answer. A topic the survey does not offer in the person's language is
        ignored. Raises ``BadInput`` with nothing written when the link is unknown (404) or expired (410), the
        answer can no longer be changed (409), or the answer does not fit the survey (400)."""
        answer = _Answer(rating, comment, topic, None)
        return await self._record(_Submitted(0, answer, resolve=True, token_hash=hash_token(token)))

    async def _record(self, item: _Submitted) -> ResponseRecord:
        """Store one answer through the batch writer, then tell the hooks, alert and wake the sync."""
        hub = self.hub
        retried = False
        while True:
            try:
                written = await self.writer.submit(item)
                break
            except _UnknownTargets as missing:
                # nothing was written: find the person in those CRMs, then store the answer
                await self._resolve_targets(missing.person_id, missing.targets)
                item = replace(item, resolve=False)
            except IntegrityError:
                # a concurrent request (a double-click) stored the first answer a moment before this one:
                # the second pass finds it and amends it like any later answer
                if retried:
                    raise
                retried = True
        record, inv_record, before, event, campaign, kind = written.stored
        if not written.changed:
            return record  # the same answer again: nothing to write back, nobody to tell twice
        first = before is None
        # debug, not info: the busiest request path of the hub, counted by ``/metrics`` (``cxhub_answers``);
        # at info this one line was a tenth of an answer's CPU in the web process
        log.debug("response.recorded", response=record.id, campaign=record.campaign, amended=not first)
        await hub.plugins.notify("hub_on_response_received", response=record, invitation=inv_record)
        previous = (None, None) if before is None else (_category(kind, before[0]), before[1])
        if first or previous[0] != record.category:
            await self._alert(record, inv_record, event, campaign, comment_added=False)
        elif record.comment and previous[1] != record.comment:
            await self._alert(record, inv_record, event, campaign, comment_added=True)
        if written.ready_at is not None:
            hub.wake("sync", at=written.ready_at)
        return record

    async def _write_answers(self, batch: list[_Submitted]) -> list[_Written | BaseException]:
        """Store a batch of answers in one transaction: on PostgreSQL first read without a lock and written
        by one checked statement (``_write_checked``), else, or when that found its rows changed, in a
        transaction that locks them first (``Store.write``, a short write: at most ``ANSWER_BATCH`` answers, a
        few statements whatever their number)."""
        driver = self.hub.store.driver
        if driver is not None:
            try:
                outcomes = await self._write_checked(driver, batch)
            except (IntegrityError, OperationalError):
                # another process stored a first answer of the batch, or a connection of the driver's pool
                # was lost (whether its write committed or not, the locked write finds what is stored)
                outcomes = None
            if outcomes is not None:
                return outcomes
        return await self.hub.store.write(lambda conn: self._write_batch(conn, batch), short=True)

    async def _write_checked(
        self, driver: DriverReads, batch: list[_Submitted]
    ) -> list[_Written | BaseException] | None:
        """A batch on PostgreSQL in two round trips: one read without a lock (links, invitations, answers so
        far, people's record ids, and the versions of the invitations and answers read), then one statement
        that writes it all only if none of those rows changed since (``AnswerWrites.write_checked``). None
        when one had: nothing was written."""
        now = self.hub.now()
        hashes, named = _keys(batch)
        params = {"hashes": hashes, "ids": named}
        links: dict[str, _Link] = {}
        found: dict[int, _Target] = {}
        identities: dict[int, dict[str, str]] = {}
        versions = Versions()
        for row in await driver.rows(_UNLOCKED_BATCH_QUERY, params):
            if row[_LINK_AT] is not None:
                links[row[_LINK_AT]] = (row[0], row[_LINK_AT + 1])
            if row[0] in found:  # the same invitation again, by another of its links
                continue
            target = found[row[0]] = _Target.of(row)
            versions.invitations[target.id] = row[_VERSIONS_AT]
            if target.response is not None:
                versions.responses[target.response.id] = row[_VERSIONS_AT + 1]
            if target.person_id is not None:
                identities[target.person_id] = pairs(row[_IDENTITIES_AT])
        outcomes, step = self._apply_batch(batch, links, found, identities, now)
        return outcomes if await _WRITES.write_checked(driver, versions, step.rows()) else None

    def _write_batch(self, conn: Connection, batch: list[_Submitted]) -> list[_Written | BaseException]:
        """Responses, invitations' status and write-back items of a batch, in the transaction of ``conn``.

        The batch's invitations are locked before their answers so far are read (on PostgreSQL their rows, in
        id order, by the statement that also reads the batch's survey links; on SQLite the writer's
        transaction holds the file's write lock from its BEGIN, and the links are read first), so what is
        read is what the answers before these stored (another process's double-click included), and nobody
        changes it until the commit.
        Then one read (invitations with their events, answers so far and people's record ids in every CRM)
        and at most four writes, however many answers the batch holds (on PostgreSQL one statement). Core
        statements built once, with plain values: no mapped objects, so no unit of work, on the path of every
        answer; on a SQLite file the reads go straight through the driver (``hub.store.sqlite_reads.rows``).
        """
        now = self.hub.now()
        hashes, named = _keys(batch)
        links: dict[str, _Link] = {}
        if conn.dialect.name == "sqlite":  # the transaction holds the file's write lock: the links are read
            if hashes:
                links = {
                    token_hash: (invitation_id, expires_at)
                    for token_hash, invitation_id, expires_at in rows(conn, _LINKS_QUERY, {"hashes": hashes})
                }
            ids = sorted(set(named) | {invitation_id for invitation_id, _ in links.values()})
        else:  # the rows are locked, and the links read with them
            locked = rows(conn, _LOCK_INVITATIONS, {"ids": named, "hashes": hashes})
            links = {
                token_hash: (invitation_id, expires)
                for invitation_id, token_hash, expires in locked
                if token_hash
            }
            ids = sorted({row[0] for row in locked})
        found: dict[int, _Target] = {}
        #: person id -> connector -> record id
        identities: dict[int, dict[str, str]] = {}
        for row in rows(conn, _BATCH_QUERY, {"ids": ids}) if ids else ():
            target = found[row[0]] = _Target.of(row)
            if target.person_id is not None:
                identities[target.person_id] = pairs(row[_IDENTITIES_AT])
        outcomes, step = self._apply_batch(batch, links, found, identities, now)
        # the first answers with their latest values: a second answer in the batch amended them in memory
        if conn.dialect.name == "postgresql":  # one statement: one round trip, not four
            _WRITES.execute(conn, step.rows())
            return outcomes
        if step.created:
            _INSERT_RESPONSES.execute(conn, [resp.values() for resp in step.created.values()])
        if step.amended:
            _AMEND_RESPONSES.execute(conn, [resp.changes() for resp in step.amended.values()])
        if step.answered:
            conn.execute(ANSWERED, {"ids": sorted(step.answered), "now": now})
        self.write_backs.write(conn, step.queued)
        return outcomes

    def _apply_batch(
        self,
        batch: list[_Submitted],
        links: dict[str, _Link],
        found: dict[int, _Target],
        identities: dict[int, dict[str, str]],
        now: datetime,
    ) -> tuple[list[_Written | BaseException], _Step]:
        """Each answer of a batch applied in memory (``_apply``), in order: its outcome, and what the batch
        then writes."""
        step = _Step(now, timedelta(hours=self.hub.config.hub.amend_window_hours))
        outcomes: list[_Written | BaseException] = []
        for item in batch:
            try:
                outcomes.append(self._apply(item, links, found, identities, step))
            except (BadInput, _UnknownTargets) as refused:  # nothing of this answer was written
                outcomes.append(refused)
        return outcomes, step

    def _apply(
        self,
        item: _Submitted,
        links: dict[str, _Link],
        found: dict[int, _Target],
        identities: dict[int, dict[str, str]],
        step: _Step,
    ) -> _Written:
        """One answer of a batch, in memory: checked first (raising before it changes anything), then applied
        to its response (new or amended); its response, invitation and write-back items are noted in ``step``.
        An answer by link is checked as its page is (``page_for_token``): known, not expired, still open.
        """
        hub, answer = self.hub, item.answer
        invitation_id, link_expires = item.invitation_id, None
        if item.token_hash is not None:
            if item.token_hash not in links:
                raise BadInput("no such survey link", 404)
            invitation_id, link_expires = links[item.token_hash]
        inv = found.get(invitation_id)
        if inv is None or inv.person_id is None:
            raise BadInput("no such invitation", 404)
        person_id = inv.person_id
        resp = inv.response
        campaign = hub.config.campaigns.get(inv.campaign)
        if campaign is None:
            raise BadInput("this survey is no longer available", 410)
        survey = hub.config.surveys[campaign.survey]
        if link_expires is not None and resp is None and link_expires <= step.now:
            raise BadInput("this survey has expired", 410)
        if item.token_hash is not None and answer.topic not in (None, *survey.topics_in(inv.language)):
            answer = replace(answer, topic=None)  # not one of the page's choices
        if answer.rating is None and resp is None:
            raise BadInput("choose a score first")
        if answer.rating is not None:
            low, high = SCALES[survey.kind]
            if not low <= answer.rating <= high:
                raise BadInput(text(inv.language, "out_of_range", low=low, high=high))
        known = identities.get(person_id, {})
        unknown = [t for t in campaign.targets() if t not in known and t in hub.connectors]
        if unknown and item.resolve:
            raise _UnknownTargets(person_id, unknown)
        if resp is not None and step.now - resp.answered_at > step.window:
            raise BadInput("this answer can no longer be changed", 409)
        before = (resp.rating, resp.comment, resp.topic) if resp is not None else None
        if resp is None:
            assert answer.rating is not None
            # the invitation's campaign and language were cleaned to the same lengths when they were stored
            resp = inv.response = _ResponseRow(
                id=str(uuid.uuid4()),
                invitation_id=inv.id,
                person_id=person_id,
                campaign=inv.campaign,
                survey_kind=survey.kind.value,
                rating=answer.rating,
                score=0.0,
                category=None,
                comment=None,
                topic=None,
                language=inv.language,
                channel=_CLEAN_CHANNEL(answer.channel or inv.channel),
                answered_at=step.now,
                updated_at=step.now,
            )
            step.created[resp.id] = resp  # a second answer in this batch amends it before it is inserted
        # text is cleaned as it is taken, like a mapped object's (``hub.store.tables``): what is compared,
        # returned and written back is what is stored
        if answer.rating is not None:
            resp.rating = answer.rating
        if answer.comment is not None:
            resp.comment = _CLEAN_COMMENT(answer.comment.strip() or resp.comment)
        if answer.topic is not None:
            resp.topic = _CLEAN_TOPIC(answer.topic or resp.topic)
        changed = before is None or before != (resp.rating, resp.comment, resp.topic)
        ready_at = None
        if changed:
            resp.score = survey.score_of(resp.rating)
            category = _category(survey.kind, resp.rating)
            resp.category = category.value if category is not None else None
            resp.updated_at = step.now
            if resp.id not in step.created:
                step.amended[resp.id] = resp
            if inv.status != "answered":  # one UPDATE for the batch; a changed answer's invitation stays
                inv.status = "answered"
                step.answered.add(inv.id)
            queued = self.write_backs.rows(self.write_backs.items(resp, inv.case, campaign, known), step.now)
            step.queued.extend(queued)
            ready_at = self.write_backs.soonest_ready(queued)
        stored = (
            response_record(resp),
            invitation_record(inv, inv.case),
            before,
            inv.case,
            campaign,
            survey.kind,
        )
        return _Written(stored, changed, ready_at)

    async def _resolve_targets(self, person_id: int, targets: list[str]) -> None:
        """Find the person in write-back targets that do not know them yet (by email/phone)."""
        async with self.hub.store.session() as s:
            person = await s.get(Person, person_id)
        if person is None:
            return
        for target in targets:
            connector = self.hub.connectors.get(target)
            if connector is None:
                continue
            try:
                record = await connector.find_person(person.email, person.phone)
            except HubError as exc:
                log.warning("person.lookup_failed", connector=target, error=str(exc))
                continue
            except Exception:  # a plugin's bug must not cost the customer's answer, which is stored next
                log.exception("person.lookup_failed", connector=target)
                continue
            if record is not None:
                region = self.hub.config.hub.phone_region
                await self.hub.store.write_orm(
                    partial(upsert_person, connector=target, record=record, phone_region=region)
                )

    # --- 5. react ---------------------------------------------------------------------------------------------

    async def _alert(
        self,
        response: ResponseRecord,
        invitation: InvitationRecord,
        event: _Case,
        campaign: Campaign,
        comment_added: bool,
    ) -> None:
        """Tell whom the campaign's alert rules name: at once on the score, and again when a comment follows.

        Customers give the score first and the comment a moment later; the owner should not wait for a
        comment that may never come, nor miss one that does.
        """
        if not campaign.alerts:
            return  # most campaigns: nothing to read, nobody to tell
        case_event = CaseEvent.model_validate(event.payload)
        async with self.hub.store.session() as s:
            person = await s.get(Person, response.person_id)
        who = (person.name or person.email or person.phone or "a customer") if person else "a customer"
        for rule in campaign.alerts:
            if rule.when != "any" and (response.category is None or response.category.value != rule.when):
                continue
            address = case_event.owner_email if rule.to == "owner" else rule.to
            channel = self.hub.channels.get(rule.channel)
            if not address or channel is None:
                log.warning("alert.no_recipient", campaign=invitation.campaign, rule=rule.when)
                continue
            label = response.category.value if response.category else "New"
            lines = [
                f"{who} added a comment to their answer {response.rating} ({label})."
                if comment_added
                else f"{who} answered {response.rating} ({label}) to the {invitation.campaign} survey.",
                f"Comment: {response.comment}" if response.comment else "No comment.",
                f"{case_event.record_type} {case_event.record_id} in {event.connector}.",
            ]
            message = AlertMessage(
                invitation_id=invitation.id,
                campaign=invitation.campaign,
                recipient=Recipient(name=case_event.owner_name, email=address, language="en"),
                subject=("Comment: " if comment_added else "")
                + text(
                    "en", "alert.subject", category=label.capitalize(), person=who, rating=response.rating
                ),
                text="\n".join(lines),
                link=case_event.record_url,
            )

            async def send(ch: Any = channel, msg: AlertMessage = message) -> Any:
                return await ch.send(msg)

            try:
                await with_retries(send, attempts=3)
            except HubError as exc:
                log.error("alert.failed", campaign=invitation.campaign, error=str(exc))
            except Exception:  # a channel's bug must not turn the customer's stored answer into an error page
                log.exception("alert.failed", campaign=invitation.campaign)

    # --- unsubscribe ------------------------------------------------------------------------------------------

    async def unsubscribe(self, token: str) -> bool:
        """Set the hub's opt-out for the person behind an unsubscribe token; honoured by every channel and
        reported to the person's CRMs like an opt-out keyword (``hub.engine.optouts``)."""
        async with self.hub.store.session() as s:
            row = await s.get(Token, hash_token(token))
            if row is None or row.purpose != "unsubscribe":
                return False
            inv = await s.get(Invitation, row.invitation_id)
            if inv is None or inv.person_id is None:
                return False
            person = await s.get(Person, inv.person_id)
            if person is not None:
                await self.optouts.change(s, person, True, None, "unsubscribed with the survey's link")
        return True
