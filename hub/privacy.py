"""A person's right to see and to erase what the hub holds about them: export and erase, for the cockpit,
the CLI (``cxhub person``) and the API alike.

**Export** gathers every row that is about the person: their contact data, their identities in each CRM,
their invitations and the events that caused them (as stored and as received), their answers, their
replies by SMS or chat, the provider's delivery reports on the messages sent to them and the write-backs
to their CRMs. Survey tokens are listed by purpose and expiry only: the hub keeps their hashes, which
mean nothing to anyone.

**Erase** keeps the statistics and removes the person:

* answers stay with their rating, score, category, campaign, survey, language, channel and dates, but lose
  their comment and topic and are re-pointed to one shared *erased person* (a row without any contact data,
  kept in ``settings`` under ``ERASED_PERSON_KEY``). ``responses.person_id`` cannot be NULL, and deleting
  the person would cascade to the answers; one shared row, unlike one per erasure, does not even tell
  which answers came from the same person;
* invitations stay for the campaign's numbers, cut from the person, their provider error text removed and
  the person's address taken out of their reason; one not yet sent is closed;
* gone: the person, their identities, their tokens, their replies, every write-back of theirs (those not
  yet written, and those written, which a full re-sync would send again), and kept rejected webhooks that
  name their address;
* the events that concerned them keep their type and record only: the normalised payload is cut to the
  event's identity and the raw body dropped; delivery reports on their messages lose the provider's text;
* their email address or phone number is taken out of any error text stored anywhere else (sync runs,
  write-backs, events).

The erase and its counts (never a personal value) are written to the audit log in the same transaction,
so there is no erase without its record. The CRMs keep what they hold: the hub erases its own copy only.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete, false, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from hub.engine.common import response_record
from hub.engine.optouts import people_at
from hub.models import ResponseRecord
from hub.people import like_pattern
from hub.store import Store
from hub.store.tables import (
    AuditEntry,
    DeliveryReport,
    Event,
    Identity,
    InboundMessage,
    Invitation,
    Person,
    RejectedWebhook,
    Response,
    Setting,
    SyncRun,
    Token,
    WriteBack,
    utcnow,
)

#: the ``settings`` key holding the id of the erased person, the one row every erased person's answers keep
ERASED_PERSON_KEY = "privacy.erased_person"
#: what stands where the person's address or name was in a kept text
ERASED = "[erased]"
EXPORT_FORMAT: Literal["cxhub.person.v1"] = "cxhub.person.v1"


class PersonNotFound(LookupError):
    """No person with that id (or it is the erased person, which stands for nobody)."""


# --- the export's shape (also the API's response model) -----------------------------------------------------


class _Row(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PersonData(_Row):
    id: int
    email: str | None
    phone: str | None
    name: str | None
    language: str | None
    timezone: str | None
    opted_out_at: datetime | None
    opt_out_channel: str | None
    opt_out_reason: str | None
    email_rejected: str | None
    phone_rejected: str | None
    created_at: datetime
    updated_at: datetime


class IdentityData(_Row):
    connector: str
    crm_id: str
    crm_opted_out: bool
    crm_opt_out_reason: str | None
    updated_at: datetime


class EventData(_Row):
    id: int
    connector: str
    event_id: str
    event_type: str
    record_id: str
    source: str
    payload: dict[str, Any]
    #: the body as received: text when it is UTF-8, else base64 (``raw_encoding``)
    raw: str | None
    raw_encoding: Literal["utf-8", "base64"] | None
    received_at: datetime
    processed_at: datetime | None
    process_error: str | None


class InvitationData(_Row):
    id: int
    campaign: str
    event: int
    status: str
    reason: str | None
    channel: str | None
    language: str
    send_after: datetime | None
    attempts: int
    sent_at: datetime | None
    message_id: str | None
    delivery_status: str | None
    delivery_error: str | None
    conversation: str | None
    reminded_at: datetime | None
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class TokenData(_Row):
    invitation_id: int
    purpose: str
    expires_at: datetime
    created_at: datetime


class InboundMessageData(_Row):
    id: int
    channel: str
    sender: str
    text: str
    received_at: datetime
    message_id: str | None
    outcome: str
    reason: str | None
    invitation_id: int | None


class DeliveryReportData(_Row):
    channel: str
    message_id: str
    status: str
    outcome: str
    error_code: str | None
    error: str | None
    address_rejected: bool
    opted_out: bool
    reported_at: datetime
    received_at: datetime


class WriteBackData(_Row):
    id: int
    connector: str
    kind: str
    key: str
    record_id: str
    person_record_id: str | None
    response_id: str | None
    payload: dict[str, Any] | None
    state: str
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    done_at: datetime | None


class PersonExport(BaseModel):
    """Everything the hub holds about one person."""

    format: Literal["cxhub.person.v1"] = EXPORT_FORMAT
    exported_at: datetime
    person: PersonData
    identities: list[IdentityData]
    invitations: list[InvitationData]
    events: list[EventData]
    tokens: list[TokenData]
    responses: list[ResponseRecord]
    inbound_messages: list[InboundMessageData]
    delivery_reports: list[DeliveryReportData]
    write_backs: list[WriteBackData]


class ErasureCounts(BaseModel):
    """What one erase did, in numbers only: what the audit log keeps of it."""

    person_id: int
    answers_anonymised: int = 0
    invitations_unlinked: int = 0
    identities_deleted: int = 0
    tokens_deleted: int = 0
    inbound_messages_deleted: int = 0
    write_backs_deleted: int = 0
    events_scrubbed: int = 0
    delivery_reports_scrubbed: int = 0
    rejected_webhooks_deleted: int = 0
    texts_redacted: int = 0


# --- finding ------------------------------------------------------------------------------------------------


async def erased_person_id(s: AsyncSession) -> int | None:
    """The id of the erased person, None while nobody was erased."""
    value = await s.scalar(select(Setting.value).where(Setting.key == ERASED_PERSON_KEY))
    return int(value) if value is not None and value.isdigit() else None


async def _erased_person(store: Store) -> int:
    """The erased person's id, the row made on first use (once, even when two erasures race)."""
    async with store.session() as s:
        found = await erased_person_id(s)
        if found is not None:
            return found
    try:
        async with store.session() as s:
            # opted out, so that nothing could ever be sent to it even if something pointed it at an address
            row = Person(opted_out_at=utcnow(), opt_out_reason="stands for erased people")
            s.add(row)
            await s.flush()
            s.add(Setting(key=ERASED_PERSON_KEY, value=str(row.id)))
            return row.id
    except IntegrityError:
        async with store.session() as s:
            found = await erased_person_id(s)
        assert found is not None
        return found


async def resolve(s: AsyncSession, who: str, region: str | None = None) -> list[Person]:
    """The people ``who`` names: an id (digits alone), else everyone at an email address or phone number."""
    text = who.strip()
    if text.isdigit():
        person = await s.get(Person, int(text)) if len(text) < 10 else None
        erased = await erased_person_id(s)
        return [person] if person is not None and person.id != erased else []
    return await people_at(s, text, region)


async def _person(s: AsyncSession, person_id: int) -> Person:
    person = await s.get(Person, person_id)
    if person is None or person.id == await erased_person_id(s):
        raise PersonNotFound(person_id)
    return person


def _raw(body: bytes | None) -> tuple[str | None, Literal["utf-8", "base64"] | None]:
    if body is None:
        return None, None
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"


async def _event_pks(s: AsyncSession, person_id: int, identities: Sequence[Identity]) -> set[int]:
    """The events about the person: those of their invitations, and those naming them by CRM id."""
    found = set(await s.scalars(select(Invitation.event_pk).where(Invitation.person_id == person_id)))
    for identity in identities:
        named = Event.payload["person_id"].as_string()
        found.update(
            await s.scalars(
                select(Event.id).where(Event.connector == identity.connector, named == identity.crm_id)
            )
        )
    return found


def _in(column: Any, values: Iterable[Any]) -> Any:
    wanted = sorted(set(values))
    return column.in_(wanted) if wanted else false()


async def export_person(store: Store, person_id: int, actor: str) -> PersonExport:
    """Everything about one person; the export is recorded in the audit log (who, which person, when)."""
    async with store.session() as s:
        person = await _person(s, person_id)
        identities = list(await s.scalars(select(Identity).where(Identity.person_id == person_id)))
        invitations = list(
            await s.scalars(
                select(Invitation).where(Invitation.person_id == person_id).order_by(Invitation.id)
            )
        )
        invitation_ids = [inv.id for inv in invitations]
        events = list(
            await s.scalars(
                select(Event)
                .where(_in(Event.id, await _event_pks(s, person_id, identities)))
                .order_by(Event.id)
            )
        )
        tokens = await s.scalars(select(Token).where(_in(Token.invitation_id, invitation_ids)))
        responses = await s.scalars(
            select(Response).where(Response.person_id == person_id).order_by(Response.answered_at)
        )
        inbound = await s.scalars(
            select(InboundMessage)
            .where(_mine(InboundMessage, person, invitation_ids))
            .order_by(InboundMessage.id)
        )
        reports = await _delivery_reports(s, invitations)
        write_backs = await s.scalars(
            select(WriteBack).where(WriteBack.person_id == person_id).order_by(WriteBack.id)
        )
        export = PersonExport(
            exported_at=utcnow(),
            person=PersonData.model_validate(person),
            identities=[IdentityData.model_validate(i) for i in identities],
            invitations=[
                InvitationData.model_validate({**_columns(inv), "event": inv.event_pk}) for inv in invitations
            ],
            events=[_event_data(e) for e in events],
            tokens=[TokenData.model_validate(t) for t in tokens],
            responses=[response_record(r) for r in responses],
            inbound_messages=[InboundMessageData.model_validate(m) for m in inbound],
            delivery_reports=[DeliveryReportData.model_validate(r) for r in reports],
            write_backs=[WriteBackData.model_validate(w) for w in write_backs],
        )
        s.add(AuditEntry(actor=actor, action="person.export", target=f"person:{person_id}"))
    return export


def _columns(row: Any) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in row.__table__.columns}


def _event_data(event: Event) -> EventData:
    raw, encoding = _raw(event.raw)
    return EventData.model_validate({**_columns(event), "raw": raw, "raw_encoding": encoding})


def _mine(table: type[InboundMessage], person: Person, invitation_ids: Sequence[int]) -> Any:
    """Replies of the person: linked to them or to their invitations, or sent from their address."""
    clauses = [table.person_id == person.id, _in(table.invitation_id, invitation_ids)]
    addresses = [a for a in (person.email, person.phone) if a]
    if addresses:
        clauses.append(table.sender.in_(addresses))
    return or_(*clauses)


async def _delivery_reports(s: AsyncSession, invitations: Sequence[Invitation]) -> list[DeliveryReport]:
    by_channel: dict[str, list[str]] = {}
    for inv in invitations:
        if inv.channel and inv.message_id:
            by_channel.setdefault(inv.channel, []).append(inv.message_id)
    found: list[DeliveryReport] = []
    for channel, ids in by_channel.items():
        found += await s.scalars(
            select(DeliveryReport).where(
                DeliveryReport.channel == channel, DeliveryReport.message_id.in_(ids)
            )
        )
    return found


# --- erasing ------------------------------------------------------------------------------------------------


def redact(text: str | None, values: Iterable[str]) -> str | None:
    """``text`` with every one of ``values`` (case ignored) replaced by ``ERASED``."""
    if text is None:
        return None
    for value in values:
        if value:
            text = re.sub(re.escape(value), ERASED, text, flags=re.IGNORECASE)
    return text


#: free-text columns where a person's address may turn up in a message about them (a provider's or CRM's
#: error quoting it), whatever row they are on
_FREE_TEXT: tuple[InstrumentedAttribute[str | None], ...] = (
    SyncRun.error,
    WriteBack.last_error,
    Event.process_error,
    Invitation.reason,
    Invitation.delivery_error,
    InboundMessage.reason,
    DeliveryReport.error,
)


async def _redact_everywhere(s: AsyncSession, addresses: Sequence[str]) -> int:
    """Take the addresses out of every free-text column; how many values changed."""
    changed = 0
    for column in _FREE_TEXT:
        table = column.class_
        for address in addresses:
            rows = await s.scalars(select(table).where(column.ilike(like_pattern(address), escape="\\")))
            for row in rows:
                setattr(row, column.key, redact(getattr(row, column.key), addresses))
                changed += 1
    return changed


def _mentions(body: bytes, needles: Sequence[bytes]) -> bool:
    lowered = body.lower()
    return any(needle in lowered for needle in needles)


async def erase_person(store: Store, person_id: int, actor: str) -> ErasureCounts:
    """Erase one person as the module doc says, in one transaction with its audit entry."""
    erased_id = await _erased_person(store)
    counts = ErasureCounts(person_id=person_id)
    async with store.session() as s:
        person = await _person(s, person_id)
        addresses = [a for a in (person.email, person.phone) if a]
        own = [*addresses, *([person.name] if person.name else [])]
        identities = list(await s.scalars(select(Identity).where(Identity.person_id == person_id)))
        invitations = list(await s.scalars(select(Invitation).where(Invitation.person_id == person_id)))
        invitation_ids = [inv.id for inv in invitations]
        event_pks = await _event_pks(s, person_id, identities)
        response_ids = list(await s.scalars(select(Response.id).where(Response.person_id == person_id)))

        counts.answers_anonymised = _rowcount(
            await s.execute(
                update(Response)
                .where(_in(Response.id, response_ids))
                .values(person_id=erased_id, comment=None, topic=None)
            )
        )
        counts.write_backs_deleted = _rowcount(
            await s.execute(
                delete(WriteBack).where(
                    or_(WriteBack.person_id == person_id, _in(WriteBack.response_id, response_ids))
                )
            )
        )
        counts.tokens_deleted = _rowcount(
            await s.execute(delete(Token).where(_in(Token.invitation_id, invitation_ids)))
        )
        counts.inbound_messages_deleted = _rowcount(
            await s.execute(delete(InboundMessage).where(_mine(InboundMessage, person, invitation_ids)))
        )
        for report in await _delivery_reports(s, invitations):
            report.error = None
            counts.delivery_reports_scrubbed += 1
        now = utcnow()
        for inv in invitations:
            inv.person_id = None
            inv.reason = redact(inv.reason, own)
            inv.delivery_error = None
            if inv.status == "scheduled":
                inv.status, inv.reason, inv.lease_until = "suppressed", "the person was erased", None
            inv.updated_at = now
        counts.invitations_unlinked = len(invitations)
        for event in await s.scalars(select(Event).where(_in(Event.id, event_pks))):
            event.payload = {
                "event_id": event.event_id,
                "event_type": event.event_type,
                "record_id": event.record_id,
                "erased": True,
            }
            event.raw = None
            event.processed_at = event.processed_at or now  # never read again: nobody to survey
            event.process_error = redact(event.process_error, own)
            counts.events_scrubbed += 1
        counts.identities_deleted = _rowcount(
            await s.execute(delete(Identity).where(Identity.person_id == person_id))
        )
        await s.delete(person)
        await s.flush()
        if addresses:
            needles = [a.lower().encode() for a in addresses]
            rejected = await s.execute(select(RejectedWebhook.id, RejectedWebhook.body))
            doomed = [row_id for row_id, body in rejected if _mentions(body, needles)]
            if doomed:
                await s.execute(delete(RejectedWebhook).where(RejectedWebhook.id.in_(doomed)))
            counts.rejected_webhooks_deleted = len(doomed)
            counts.texts_redacted = await _redact_everywhere(s, addresses)
        s.add(
            AuditEntry(
                actor=actor,
                action="person.erase",
                target=f"person:{person_id}",
                detail=counts.model_dump(exclude={"person_id"}),
            )
        )
    return counts


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
