"""Events in: store each one once (``receive``), then turn it into invitations or suppressions (``process_pending``).

Each event is stored under a unique (connector, event id) before the webhook is answered; processing commits
per event, so a crash resumes with the events not yet marked processed (one invitation per event and campaign
is a unique key).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from hub.config import Campaign
from hub.engine.bounds import Bounds
from hub.engine.common import invitation_record
from hub.errors import AuthError, ConfigError, SkippableError, TransientError
from hub.http import never_sent
from hub.models import CaseEvent, InvitationRecord, PersonRecord
from hub.people import upsert_person
from hub.policy import PersonFacts, RecentSurvey, decide
from hub.store.group_commit import GroupCommit
from hub.store.queries import insert_for
from hub.store.tables import NUL, Event, Identity, Invitation, clean_text, utcnow
from hub.texts import choose_language

if TYPE_CHECKING:
    from hub.app import Hub

log = structlog.get_logger("hub.engine.intake")

ACTIVE_STATUSES = ("scheduled", "sent", "answered")
#: the most events decided in one transaction (PostgreSQL)
DECISIONS_PER_COMMIT = 50

#: what reading an event gives: the event, its matching campaigns, the person as the CRM has them
Read = tuple[CaseEvent, list[tuple[str, Campaign]], PersonRecord | None]

#: an event's values that name a record: a NUL in one is refused, since removing it would name another record
EVENT_KEYS = ("event_id", "event_type", "record_type", "record_id", "person_id")


#: the longest value the columns an event's keys are stored in take
_KEY_LIMITS: dict[str, int] = {
    name: length
    for name, column in (
        ("event_id", Event.__table__.c.event_id),
        ("event_type", Event.__table__.c.event_type),
        ("record_id", Event.__table__.c.record_id),
        ("person_id", Identity.__table__.c.crm_id),
    )
    if (length := getattr(column.type, "length", None)) is not None
}


def unstorable(event: CaseEvent) -> str | None:
    """Why an event cannot be stored as it came (an id longer than its column, a NUL in an id), else None.

    Such an event is refused rather than cut down: a shortened or cleaned id could name another record, or
    make two events one. Free text in it (names, ``fields``) is stored with NUL removed (``hub.store.tables``).
    """
    for name in EVENT_KEYS:
        value = getattr(event, name)
        if value is not None and NUL in value:
            return f"{name} holds a NUL character"
        if value is not None and not value.isascii() and clean_text(value) != value:
            return f"{name} is not valid Unicode text (a lone surrogate)"
    if not event.event_id:
        return "event_id is empty"
    for name, limit in _KEY_LIMITS.items():
        value = getattr(event, name)
        if value is not None and len(value) > limit:
            return f"{name} is longer than {limit} characters"
    try:
        json.dumps(event.model_dump(mode="json"))
    except (ValueError, TypeError, RecursionError) as exc:
        return f"the event cannot be stored as JSON ({type(exc).__name__})"
    return None


def matches(campaign: Campaign, connector: str, event: CaseEvent) -> bool:
    """A campaign fires for an event of its trigger's connector and type whose fields pass every filter."""
    trigger = campaign.trigger
    if not campaign.enabled or trigger.connector != connector or trigger.event != event.event_type:
        return False
    for name, wanted in trigger.filters.items():
        value = event.fields.get(name)
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if str(value).lower() not in {str(a).lower() for a in allowed}:
            return False
    return True


@dataclass(frozen=True)
class Arrival:
    """The storable events of one webhook or poll, waiting for the transaction they share with others."""

    connector: str
    events: list[CaseEvent]
    source: str
    raw: bytes | None


class Intake:
    """Stores events as they arrive, then decides for each matching campaign: an invitation or a suppression."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.bounds = Bounds(self._concurrency)
        self._writer: GroupCommit[Arrival, set[int]] = GroupCommit(self._store_arrivals)

    def _concurrency(self, connector: str) -> int:
        instance = self.hub.config.connectors.get(connector)
        return instance.concurrency if instance is not None else 1

    # --- 1. events in -----------------------------------------------------------------------------------------

    async def receive(
        self,
        connector: str,
        events: list[CaseEvent],
        source: str,
        raw: bytes | None = None,
        refused: list[tuple[CaseEvent, str]] | None = None,
    ) -> list[bool]:
        """Store events (duplicates dropped by (connector, event id)); True for each one that was new.

        Returns once the events are durable (see ``hub.store.group_commit``): the events of every request
        arriving in the same moment are written with one statement in one transaction. Nothing else happens
        before the caller may answer its sender: the campaigns are matched and the person read later, by
        ``process_pending``.

        An event that cannot be stored (see ``unstorable``) is skipped with a logged error and counts as not
        new, so one bad record never stops the others of a poll or a webhook; each is added to ``refused``
        with the reason, for a webhook's sender to be told (checked here once, on the hot path of intake).
        """
        storable: list[CaseEvent] = []
        for event in events:
            problem = unstorable(event)
            if problem is None:
                storable.append(event)
                continue
            if refused is not None:
                refused.append((event, problem))
            log.error(
                "event.unstorable",
                connector=connector,
                source=source,
                event_id=event.event_id[:100].replace(NUL, "\\0"),
                problem=problem,
            )
        new = await self._writer.submit(Arrival(connector, storable, source, raw)) if storable else set()
        fresh = [id(event) in new for event in events]
        for event, is_new in zip(events, fresh, strict=True):
            await self.hub.plugins.notify(
                "hub_on_case_event_received", connector=connector, event=event, new=is_new
            )
        if new:
            self.hub.wake("events")
        return fresh

    async def _store_arrivals(self, arrivals: list[Arrival]) -> list[set[int]]:
        """One transaction for the events of many requests: one multi-row INSERT that skips the (connector,
        event id) pairs already stored and returns those it inserted. For each request, the ``id()`` of its
        events that were new; an event id twice in one moment is new for its first sender only.

        A batch written again after a lost connection (``GroupCommit``) finds what a commit that did reach the
        database stored: those events are then reported as not new, and are processed all the same.
        """
        now = utcnow()
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for arrival in arrivals:
            for event in arrival.events:
                rows.setdefault(
                    (arrival.connector, event.event_id),
                    {
                        "connector": arrival.connector,
                        "event_id": event.event_id,
                        "event_type": event.event_type,
                        "record_id": event.record_id,
                        "source": arrival.source,
                        "payload": event.model_dump(mode="json"),
                        "raw": arrival.raw,
                        "received_at": now,
                        "processed_at": None,
                        "process_error": None,
                    },
                )

        def insert(conn: Connection) -> set[tuple[str, str]]:
            stmt = (
                insert_for(conn, Event)
                .on_conflict_do_nothing(index_elements=["connector", "event_id"])
                .returning(Event.connector, Event.event_id)
            )
            return {(c, e) for c, e in conn.execute(stmt, list(rows.values()))}

        inserted = await self.hub.store.write(insert, short=True)  # one INSERT of at most a group's events
        results: list[set[int]] = []
        for arrival in arrivals:
            new: set[int] = set()
            for event in arrival.events:
                if (arrival.connector, event.event_id) in inserted:
                    inserted.discard((arrival.connector, event.event_id))  # only its first sender's
                    new.add(id(event))
            results.append(new)
        return results

    # --- 2. decide --------------------------------------------------------------------------------------------

    async def process_pending(self, limit: int = 100) -> int:
        """Turn stored, unprocessed events into invitations or suppressions (one batch of at most ``limit``,
        oldest first). Returns events processed."""
        return await self._process_batch(await self._pending(0, limit))

    async def process_backlog(
        self, batch: int = 100, most: int = 5000, stop: Callable[[], bool] = lambda: False
    ) -> int:
        """Process the pending events batch after batch, until none is left, ``most`` were taken or ``stop()``
        says so (the process is shutting down). Returns events processed.

        Each event is taken at most once per call: one left for later (its CRM is down) waits for the next
        run instead of being retried ahead of the events behind it. A batch of which none could be processed
        (the CRM is down) ends the run, rather than calling a CRM that is down for every event of the backlog.
        """
        after, taken, done = 0, 0, 0
        while taken < most and not stop():
            rows = await self._pending(after, min(batch, most - taken))
            if not rows:
                break
            processed = await self._process_batch(rows)
            done += processed
            after, taken = rows[-1].id, taken + len(rows)
            if not processed:
                break
        return done

    async def _pending(self, after: int, limit: int) -> list[Event]:
        async with self.hub.store.session() as s:
            return list(
                await s.scalars(
                    select(Event)
                    .where(Event.processed_at.is_(None), Event.id > after)
                    .order_by(Event.id)
                    .limit(limit)
                )
            )

    async def _process_batch(self, rows: list[Event]) -> int:
        """Read the people of every event at once (each connector's ``concurrency`` bounds its calls in
        flight), then decide event by event in the order they arrived.

        The reads are the slow part (a CRM call each) and touch nothing of the hub's; the decisions run one
        at a time, so the contact policy sees every invitation decided before it: two events for the same
        person (or two CRMs' records of one person) never both pass the frequency rule, and the outcome is
        the one of processing the events one by one. Across processes, the events job runs in one process at
        a time (its database lock).
        """
        reads = [asyncio.ensure_future(self._read(row)) for row in rows]
        # SQLite commits cheaply (WAL, synchronous=NORMAL), and a long transaction that read before others
        # wrote could not write at all (its snapshot is stale): there, one event per transaction
        per_commit = 1 if self.hub.store.is_sqlite else DECISIONS_PER_COMMIT
        done, first = 0, 0
        try:
            while first < len(rows):
                await asyncio.wait([reads[first]])
                last = first + 1
                while last < len(rows) and last - first < per_commit and reads[last].done():
                    last += 1
                done += await self._decide_all(rows[first:last], reads[first:last])
                first = last
        finally:
            for read in reads:  # cancelled part-way (a shutdown): no read outlives the batch
                read.cancel()
        return done

    async def _decide_all(self, rows: list[Event], reads: Sequence[asyncio.Future[Read]]) -> int:
        """Decide the events whose reads are in, in one transaction: one commit for all of them instead of
        one each (on PostgreSQL each commit waits for its write-ahead log to reach the disk), and none
        waits for a CRM while the transaction is open (on SQLite, one event at a time: ``_process_batch``). Each event has its own savepoint, so one that fails
        is noted and left (for later, or for good) without undoing the others. Returns events processed.
        """
        suppressed: list[InvitationRecord] = []
        scheduled = done = 0
        if self.hub.store.is_sqlite:
            for row, read in zip(rows, reads, strict=True):
                processed, outcome, invited = await self._decide_alone(row, read)
                done, suppressed, scheduled = done + processed, suppressed + outcome, scheduled + invited
        else:
            done, suppressed, scheduled = await self._decide_together(rows, reads)
        for inv in suppressed:
            await self.hub.plugins.notify("hub_on_invitation_suppressed", invitation=inv, reason=inv.reason)
        if scheduled:
            self.hub.wake("dispatch")
        return done

    async def _decide_alone(
        self, row: Event, read: asyncio.Future[Read]
    ) -> tuple[int, list[InvitationRecord], int]:
        """One event in a transaction of its own (SQLite: a savepoint there would hold a read snapshot that
        another connection's commit makes unable to write); a failure is noted in another."""
        store = self.hub.store
        try:
            event, campaigns, record = read.result()
            outcome = await store.write_orm(lambda s: self._decide(s, row, event, campaigns, record))
        except Exception as exc:
            await store.write_orm(partial(self._note_failure, row=row, exc=exc))
            return 0, [], 0
        return 1, outcome, len(campaigns) - len(outcome)

    async def _decide_together(
        self, rows: list[Event], reads: Sequence[asyncio.Future[Read]]
    ) -> tuple[int, list[InvitationRecord], int]:
        """The events in one transaction, each in a savepoint of its own."""

        def decide_all(s: Session) -> tuple[int, list[InvitationRecord], int]:
            suppressed: list[InvitationRecord] = []
            scheduled = done = 0
            for row, read in zip(rows, reads, strict=True):
                try:
                    event, campaigns, record = read.result()
                    with s.begin_nested():
                        outcome = self._decide(s, row, event, campaigns, record)
                except (OperationalError, InterfaceError):
                    raise  # the database itself failed: nothing of this transaction is kept, all wait
                except Exception as exc:
                    self._note_failure(s, row, exc)
                    continue
                done += 1
                suppressed += outcome
                scheduled += len(campaigns) - len(outcome)
            return done, suppressed, scheduled

        return await self.hub.store.write_orm(decide_all)

    def _note_failure(self, s: Session, row: Event, exc: Exception) -> None:
        """Keep why an event could not be processed; leave it for later when the CRM was unreachable."""
        if isinstance(exc, TransientError | AuthError | OperationalError | InterfaceError):
            log.warning("event.retry_later", connector=row.connector, event_id=row.event_id, error=str(exc))
            error, processed = str(exc), False
        elif isinstance(exc, SkippableError | ConfigError):
            error, processed = str(exc), True
        else:
            # a CRM that could not be reached (a raw connect error too) is an outage: retried later;
            # anything else is a record this hub cannot handle (or a plugin's bug): set aside, visible
            # in its process_error, rather than retried on every tick ahead of the events behind it
            unreachable = never_sent(exc)
            if unreachable:
                log.warning(
                    "event.retry_later", connector=row.connector, event_id=row.event_id, error=str(exc)
                )
            else:
                log.exception("event.failed", connector=row.connector, event_id=row.event_id)
            error, processed = f"{type(exc).__name__}: {exc}", not unreachable
        values: dict[str, Any] = {"process_error": error[:2000]}
        if processed:
            values["processed_at"] = utcnow()
        s.execute(update(Event).where(Event.id == row.id).values(**values))

    async def _read(self, row: Event) -> Read:
        """The event, its matching campaigns and the person as the CRM has them now (one call, if needed)."""
        event = CaseEvent.model_validate(row.payload)
        connector = self.hub.connectors.get(row.connector)
        campaigns = [
            (name, c) for name, c in self.hub.config.campaigns.items() if matches(c, row.connector, event)
        ]
        record: PersonRecord | None = None
        if connector is not None and event.person_id and (campaigns or event.event_type == "person.changed"):
            async with self.bounds.slot(row.connector):
                record = await connector.get_person(event.person_id)
        return event, campaigns, record

    def _decide(
        self,
        s: Session,
        row: Event,
        event: CaseEvent,
        campaigns: list[tuple[str, Campaign]],
        record: PersonRecord | None,
    ) -> list[InvitationRecord]:
        """One event's invitations or suppressions; the event is marked processed. Returns the suppressed."""
        suppressed: list[InvitationRecord] = []
        if record is not None and event.event_type == "person.changed":
            upsert_person(s, row.connector, record, self.hub.config.hub.phone_region)
        for name, campaign in campaigns:
            inv = self._invite(s, row, event, name, campaign, record)
            if inv is not None and inv.status == "suppressed":
                suppressed.append(inv)
        s.execute(update(Event).where(Event.id == row.id).values(processed_at=utcnow(), process_error=None))
        return suppressed

    def _invite(
        self,
        s: Session,
        row: Event,
        event: CaseEvent,
        name: str,
        campaign: Campaign,
        record: PersonRecord | None,
    ) -> InvitationRecord | None:
        exists = s.scalar(
            select(Invitation.id).where(Invitation.event_pk == row.id, Invitation.campaign == name)
        )
        if exists is not None:
            return None
        now = self.hub.now()
        inv = Invitation(campaign=name, event_pk=row.id, created_at=now, updated_at=now)
        if record is None:
            inv.status, inv.reason = "suppressed", f"no person on the {event.record_type} in {row.connector}"
        else:
            person, identity = upsert_person(s, row.connector, record, self.hub.config.hub.phone_region)
            inv.person_id = person.id
            inv.language = choose_language(record.language or event.language, campaign.default_language)
            policy = self.hub.config.policy
            since = now - timedelta(days=policy.min_days_between_surveys)
            recent = [
                RecentSurvey(c, at)
                for c, at in s.execute(
                    select(Invitation.campaign, Invitation.created_at).where(
                        Invitation.person_id == person.id,
                        Invitation.status.in_(ACTIVE_STATUSES),
                        Invitation.created_at >= since,
                    )
                )
            ]
            facts = PersonFacts(
                has_email=person.email is not None,
                has_phone=person.phone is not None,
                crm_opted_out=identity.crm_opted_out,
                crm_opt_out_reason=identity.crm_opt_out_reason,
                hub_opted_out_at=person.opted_out_at,
                timezone=person.timezone,
            )
            decision = decide(
                policy, facts, row.connector, recent, now, timedelta(minutes=campaign.delay_minutes)
            )
            if decision.suppressed:
                inv.status, inv.reason = "suppressed", decision.reason
            else:
                inv.status, inv.send_after = "scheduled", decision.send_after
                inv.expires_at = now + timedelta(days=self.hub.config.hub.token_ttl_days)
        s.add(inv)
        s.flush()
        log.info("invitation.created", invitation=inv.id, campaign=name, status=inv.status)
        return invitation_record(inv, row)
