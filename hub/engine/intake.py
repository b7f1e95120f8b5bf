"""Events in: store each one once (``receive``), then turn it into invitations or suppressions (``process_pending``).

Each event is stored under a unique (connector, event id) before the webhook is answered; processing commits
per event, so a crash resumes with the events not yet marked processed (one invitation per event and campaign
is a unique key).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.config import Campaign
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

#: an event's values that name a record: a NUL in one is refused, since removing it would name another record
EVENT_KEYS = ("event_id", "event_type", "record_type", "record_id", "person_id")


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
    limits = {
        "event_id": Event.__table__.c.event_id,
        "event_type": Event.__table__.c.event_type,
        "record_id": Event.__table__.c.record_id,
        "person_id": Identity.__table__.c.crm_id,
    }
    for name, column in limits.items():
        value, limit = getattr(event, name), getattr(column.type, "length", None)
        if value is not None and limit is not None and len(value) > limit:
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
        self._writer: GroupCommit[Arrival, set[int]] = GroupCommit(self._store_arrivals)

    # --- 1. events in -----------------------------------------------------------------------------------------

    async def receive(
        self, connector: str, events: list[CaseEvent], source: str, raw: bytes | None = None
    ) -> list[bool]:
        """Store events (duplicates dropped by (connector, event id)); True for each one that was new.

        Returns once the events are durable (see ``hub.store.group_commit``): the events of every request
        arriving in the same moment are written with one statement in one transaction. Nothing else happens
        before the caller may answer its sender: the campaigns are matched and the person read later, by
        ``process_pending``.

        An event that cannot be stored (see ``unstorable``) is skipped with a logged error and counts as not
        new, so one bad record never stops the others of a poll or a webhook.
        """
        storable: list[CaseEvent] = []
        for event in events:
            problem = unstorable(event)
            if problem is None:
                storable.append(event)
                continue
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

        inserted = await self.hub.store.write(insert)
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
        """Turn stored, unprocessed events into invitations or suppressions. Returns events processed."""
        async with self.hub.store.session() as s:
            rows = list(
                await s.scalars(
                    select(Event).where(Event.processed_at.is_(None)).order_by(Event.id).limit(limit)
                )
            )
        done = 0
        for row in rows:
            try:
                await self._process(row)
                done += 1
            except (TransientError, AuthError, OperationalError, InterfaceError) as exc:
                log.warning(
                    "event.retry_later", connector=row.connector, event_id=row.event_id, error=str(exc)
                )
                await self._set_event_error(row.id, str(exc), processed=False)
            except (SkippableError, ConfigError) as exc:
                await self._set_event_error(row.id, str(exc), processed=True)
            except Exception as exc:
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
                await self._set_event_error(row.id, f"{type(exc).__name__}: {exc}", processed=not unreachable)
        return done

    async def _set_event_error(self, event_pk: int, error: str, processed: bool) -> None:
        async with self.hub.store.session() as s:
            values: dict[str, Any] = {"process_error": error[:2000]}
            if processed:
                values["processed_at"] = utcnow()
            await s.execute(update(Event).where(Event.id == event_pk).values(**values))

    async def _process(self, row: Event) -> None:
        event = CaseEvent.model_validate(row.payload)
        connector = self.hub.connectors.get(row.connector)
        campaigns = [
            (name, c) for name, c in self.hub.config.campaigns.items() if matches(c, row.connector, event)
        ]
        record: PersonRecord | None = None
        if connector is not None and event.person_id and (campaigns or event.event_type == "person.changed"):
            record = await connector.get_person(event.person_id)
        suppressed: list[InvitationRecord] = []
        async with self.hub.store.session() as s:
            if record is not None and event.event_type == "person.changed":
                await upsert_person(s, row.connector, record)
            for name, campaign in campaigns:
                inv = await self._invite(s, row, event, name, campaign, record)
                if inv is not None and inv.status == "suppressed":
                    suppressed.append(inv)
            await s.execute(
                update(Event).where(Event.id == row.id).values(processed_at=utcnow(), process_error=None)
            )
        for inv in suppressed:
            await self.hub.plugins.notify("hub_on_invitation_suppressed", invitation=inv, reason=inv.reason)
        if len(suppressed) < len(campaigns):
            self.hub.wake("dispatch")

    async def _invite(
        self,
        s: AsyncSession,
        row: Event,
        event: CaseEvent,
        name: str,
        campaign: Campaign,
        record: PersonRecord | None,
    ) -> InvitationRecord | None:
        exists = await s.scalar(
            select(Invitation.id).where(Invitation.event_pk == row.id, Invitation.campaign == name)
        )
        if exists is not None:
            return None
        now = self.hub.now()
        inv = Invitation(campaign=name, event_pk=row.id, created_at=now, updated_at=now)
        if record is None:
            inv.status, inv.reason = "suppressed", f"no person on the {event.record_type} in {row.connector}"
        else:
            person, identity = await upsert_person(s, row.connector, record)
            inv.person_id = person.id
            inv.language = choose_language(record.language or event.language, campaign.default_language)
            policy = self.hub.config.policy
            since = now - timedelta(days=policy.min_days_between_surveys)
            recent = [
                RecentSurvey(c, at)
                for c, at in await s.execute(
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
        await s.flush()
        log.info("invitation.created", invitation=inv.id, campaign=name, status=inv.status)
        return invitation_record(inv, row)
