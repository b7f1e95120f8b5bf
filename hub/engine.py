"""The flow of one piece of feedback: event -> campaign -> policy -> invitation -> send -> response -> queue.

Each step commits before the next begins, so a crash anywhere resumes from the database: unprocessed events
are processed again (one invitation per event and campaign is a unique key), due invitations are claimed
with a lease, and write-backs wait in their queue.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from hashlib import sha256
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.config import Campaign, SurveySettings
from hub.errors import (
    AddressRejected,
    AuthError,
    BadInput,
    ConfigError,
    HubError,
    SkippableError,
    TransientError,
)
from hub.http import backoff_delay, never_sent, with_retries
from hub.models import (
    SCALES,
    AlertMessage,
    CaseEvent,
    CaseFeedback,
    Delivery,
    InboundAnswer,
    InvitationRecord,
    NpsCategory,
    PersonRecord,
    Recipient,
    ResponseRecord,
    ScaleOption,
    SurveyKind,
    SurveyMessage,
    TimelineEntry,
    nps_category,
)
from hub.people import normalise_email, normalise_phone, upsert_person
from hub.policy import PersonFacts, RecentSurvey, decide
from hub.store.queries import insert_for
from hub.store.tables import (
    NUL,
    Event,
    Identity,
    Invitation,
    Person,
    Response,
    Token,
    WriteBack,
    clean_text,
    utcnow,
)
from hub.texts import choose_language, text

if TYPE_CHECKING:
    from hub.app import Hub

log = structlog.get_logger("hub.engine")

ACTIVE_STATUSES = ("scheduled", "sent", "answered")


def hash_token(token: str) -> str:
    return sha256(token.encode()).hexdigest()


def invitation_record(inv: Invitation, event: Event) -> InvitationRecord:
    return InvitationRecord(
        id=inv.id,
        campaign=inv.campaign,
        person_id=inv.person_id,
        connector=event.connector,
        event_id=event.event_id,
        record_id=event.record_id,
        status=inv.status,
        channel=inv.channel,
        reason=inv.reason,
        send_after=inv.send_after,
        sent_at=inv.sent_at,
        created_at=inv.created_at,
    )


def response_record(row: Response) -> ResponseRecord:
    return ResponseRecord(
        id=row.id,
        invitation_id=row.invitation_id,
        campaign=row.campaign,
        person_id=row.person_id,
        survey_kind=SurveyKind(row.survey_kind),
        rating=row.rating,
        score=row.score,
        category=NpsCategory(row.category) if row.category else None,
        comment=row.comment,
        topic=row.topic,
        language=row.language,
        channel=row.channel,
        answered_at=row.answered_at,
        updated_at=row.updated_at,
    )


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


@dataclass(frozen=True)
class _Answer:
    """What one answer brings: a rating and/or the follow-up's comment and topic, and the channel it came by."""

    rating: int | None
    comment: str | None
    topic: str | None
    channel: str | None


def _category(kind: SurveyKind, rating: int) -> NpsCategory | None:
    return nps_category(rating) if kind is SurveyKind.NPS else None


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


class Engine:
    """Moves feedback through its steps. Stateless: every step reads and writes the store."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    # --- 1. events in -----------------------------------------------------------------------------------------

    async def receive(
        self, connector: str, events: list[CaseEvent], source: str, raw: bytes | None = None
    ) -> list[bool]:
        """Store events (duplicates dropped by (connector, event id)); True for each one that was new.

        An event that cannot be stored (see ``unstorable``) is skipped with a logged error and counts as not
        new, so one bad record never stops the others of a poll or a webhook.
        """
        fresh: list[bool] = []
        async with self.hub.store.session() as s:
            for event in events:
                problem = unstorable(event)
                if problem is not None:
                    log.error(
                        "event.unstorable",
                        connector=connector,
                        source=source,
                        event_id=event.event_id[:100].replace(NUL, "\\0"),
                        problem=problem,
                    )
                    fresh.append(False)
                    continue
                stmt = (
                    insert_for(s, Event)
                    .values(
                        connector=connector,
                        event_id=event.event_id,
                        event_type=event.event_type,
                        record_id=event.record_id,
                        source=source,
                        payload=event.model_dump(mode="json"),
                        raw=raw,
                        received_at=utcnow(),
                    )
                    .on_conflict_do_nothing(index_elements=["connector", "event_id"])
                )
                result = await s.execute(stmt)
                fresh.append(bool(result.rowcount))  # type: ignore[attr-defined]
        for event, new in zip(events, fresh, strict=True):
            await self.hub.plugins.notify(
                "hub_on_case_event_received", connector=connector, event=event, new=new
            )
        if any(fresh):
            self.hub.wake("events")
        return fresh

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
                # a record this hub cannot handle (or a plugin's bug): set it aside, visible in its
                # process_error, rather than retry it on every tick ahead of the events behind it
                log.exception("event.failed", connector=row.connector, event_id=row.event_id)
                await self._set_event_error(row.id, f"{type(exc).__name__}: {exc}", processed=True)
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

    # --- 3. send ----------------------------------------------------------------------------------------------

    async def _claim(self, s: AsyncSession, condition: Any, limit: int) -> list[int]:
        now = self.hub.now()
        ids = list(
            await s.scalars(
                select(Invitation.id)
                .where(condition, or_(Invitation.lease_until.is_(None), Invitation.lease_until < now))
                .order_by(Invitation.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        if not ids:
            return []
        until = now + timedelta(seconds=120)
        await s.execute(
            update(Invitation)
            .where(
                Invitation.id.in_(ids),
                or_(Invitation.lease_until.is_(None), Invitation.lease_until < now),
            )
            .values(lease_until=until)
        )
        return list(
            await s.scalars(
                select(Invitation.id).where(Invitation.id.in_(ids), Invitation.lease_until == until)
            )
        )

    async def dispatch_due(self, limit: int = 50) -> int:
        """Send every invitation whose time has come. Returns how many were handled."""
        async with self.hub.store.session() as s:
            ids = await self._claim(
                s, and_(Invitation.status == "scheduled", Invitation.send_after <= self.hub.now()), limit
            )
        for inv_id in ids:
            await self._send(inv_id, reminder=False)
        return len(ids)

    async def send_reminders(self, limit: int = 50) -> int:
        async with self.hub.store.session() as s:
            ids = await self._claim(
                s,
                and_(
                    Invitation.status == "sent",
                    Invitation.reminded_at.is_(None),
                    Invitation.remind_after <= self.hub.now(),
                ),
                limit,
            )
        for inv_id in ids:
            await self._send(inv_id, reminder=True)
        return len(ids)

    def issue_token(self, s: AsyncSession, invitation_id: int, purpose: str, expires_at: datetime) -> str:
        """A new 128-bit random token for one invitation and one purpose; only its hash is stored."""
        token = secrets.token_urlsafe(16)
        s.add(
            Token(hash=hash_token(token), invitation_id=invitation_id, purpose=purpose, expires_at=expires_at)
        )
        return token

    async def _prepare(self, inv_id: int, reminder: bool) -> tuple[SurveyMessage, list[str]] | None:
        """Re-check the invitation at send time and build its message; None when it must not be sent."""
        hub = self.hub
        now = hub.now()
        async with hub.store.session() as s:
            inv = await s.get(Invitation, inv_id)
            if inv is None:
                return None
            event = await s.get(Event, inv.event_pk)
            person = await s.get(Person, inv.person_id) if inv.person_id else None
            campaign = hub.config.campaigns.get(inv.campaign)
            assert event is not None
            if campaign is None:
                inv.status, inv.reason = "failed", f'campaign "{inv.campaign}" is no longer configured'
            elif person is None:
                inv.status, inv.reason = "failed", "the person was deleted"
            elif person.opted_out_at is not None:
                inv.status, inv.reason = (
                    "suppressed",
                    f"unsubscribed from surveys on {person.opted_out_at:%Y-%m-%d}",
                )
            elif inv.expires_at is not None and inv.expires_at <= now:
                inv.status, inv.reason = "expired", "not sent before the survey's expiry"
            else:
                expires = inv.expires_at or now + timedelta(days=hub.config.hub.token_ttl_days)
                survey_token = self.issue_token(s, inv.id, "survey", expires)
                unsub_token = self.issue_token(s, inv.id, "unsubscribe", now + timedelta(days=365))
                message = self.survey_message(inv, campaign, person, survey_token, unsub_token, reminder)
                channels = [inv.channel] if reminder and inv.channel else list(campaign.channels)
                return message, channels
            inv.lease_until = None
            record = invitation_record(inv, event)
        if record.status == "suppressed":
            await hub.plugins.notify("hub_on_invitation_suppressed", invitation=record, reason=record.reason)
        return None

    async def _send(self, inv_id: int, reminder: bool) -> None:
        """Try the campaign's channels in order; a transient failure retries later, a permanent one moves on."""
        prepared = await self._prepare(inv_id, reminder)
        if prepared is None:
            return
        message, channels = prepared
        errors: list[str] = []
        for channel_name in channels:
            channel = self.hub.channels.get(channel_name)
            if channel is None:
                errors.append(f"{channel_name}: channel not available")
                continue
            try:
                delivery = await channel.send(message)
            except AddressRejected as exc:
                errors.append(f"{channel_name}: {exc}")
                await self._flag_address(inv_id, exc)
                continue
            except SkippableError as exc:
                errors.append(f"{channel_name}: {exc}")
                continue
            except (TransientError, AuthError, ConfigError) as exc:
                await self._retry_send(inv_id, channel_name, exc, reminder)
                return
            except Exception as exc:
                if never_sent(exc):  # the provider could not be reached: an outage, not a bad address
                    await self._retry_send(inv_id, channel_name, exc, reminder)
                    return
                log.exception("channel.failed", channel=channel_name, invitation=inv_id)
                errors.append(f"{channel_name}: {type(exc).__name__}: {exc}")
                continue
            await self._mark_sent(inv_id, channel_name, delivery, reminder)
            return
        async with self.hub.store.session() as s:
            inv = await s.get(Invitation, inv_id)
            assert inv is not None
            if reminder:
                inv.reminded_at = self.hub.now()
            else:
                inv.status = "failed"
            inv.reason = "; ".join(errors) or "no channel could reach the person"
            inv.lease_until = None
        log.warning("survey.undeliverable", invitation=inv_id, reason="; ".join(errors))

    async def _flag_address(self, inv_id: int, exc: AddressRejected) -> None:
        """Remember a hard bounce on the person, so no campaign uses that address again."""
        note = f"{self.hub.now():%Y-%m-%d}: {exc}"
        async with self.hub.store.session() as s:
            inv = await s.get(Invitation, inv_id)
            person = await s.get(Person, inv.person_id) if inv and inv.person_id else None
            if person is None:
                return
            if normalise_email(exc.address) and normalise_email(exc.address) == person.email:
                person.email_rejected = note
            elif normalise_phone(exc.address) and normalise_phone(exc.address) == person.phone:
                person.phone_rejected = note
        log.info("address.flagged", invitation=inv_id)

    async def _mark_sent(self, inv_id: int, channel: str, delivery: Delivery, reminder: bool) -> None:
        hub = self.hub
        async with hub.store.session() as s:
            inv = await s.get(Invitation, inv_id)
            event = await s.get(Event, inv.event_pk) if inv is not None else None
            assert inv is not None and event is not None
            sent_at = hub.now()
            if reminder:
                inv.reminded_at = sent_at
            else:
                inv.status, inv.channel, inv.sent_at = "sent", channel, sent_at
                inv.message_id = delivery.message_id
                campaign = hub.config.campaigns.get(inv.campaign)
                if campaign is not None and campaign.reminder_after_hours:
                    inv.remind_after = sent_at + timedelta(hours=campaign.reminder_after_hours)
            inv.lease_until, inv.reason = None, None
            record = invitation_record(inv, event)
        log.info("survey.sent", invitation=inv_id, channel=channel, reminder=reminder)
        await hub.plugins.notify("hub_on_survey_sent", invitation=record, channel=channel, delivery=delivery)

    async def _retry_send(self, inv_id: int, channel: str, exc: Exception, reminder: bool) -> None:
        sync = self.hub.config.sync
        async with self.hub.store.session() as s:
            inv = await s.get(Invitation, inv_id)
            assert inv is not None
            inv.attempts += 1
            retry_after = exc.retry_after if isinstance(exc, TransientError) else None
            delay = backoff_delay(
                inv.attempts,
                base=sync.backoff_base_seconds,
                cap=sync.backoff_max_seconds,
                retry_after=retry_after,
            )
            later = self.hub.now() + timedelta(seconds=delay)
            if reminder:
                inv.remind_after = later
            else:
                inv.send_after = later
            inv.reason = f"{channel}: {exc} (retrying)"
            inv.lease_until = None
        log.warning("channel.retry_later", channel=channel, invitation=inv_id, error=str(exc))

    def survey_message(
        self,
        inv: Invitation,
        campaign: Campaign,
        person: Person,
        survey_token: str,
        unsub_token: str,
        reminder: bool,
    ) -> SurveyMessage:
        hub = self.hub
        survey = hub.config.surveys[campaign.survey]
        lang = inv.language
        company = hub.config.hub.branding.company_name
        base = hub.config.hub.public_url.rstrip("/")
        survey_url = f"{base}/s/{survey_token}"
        low, high = SCALES[survey.kind]
        return SurveyMessage(
            kind="reminder" if reminder else "survey",
            invitation_id=inv.id,
            campaign=inv.campaign,
            recipient=Recipient(
                name=person.name,
                email=None if person.email_rejected else person.email,
                phone=None if person.phone_rejected else person.phone,
                language=lang,
            ),
            language=lang,
            branding=hub.config.hub.branding,
            survey_kind=survey.kind,
            subject=text(lang, "reminder.subject" if reminder else "subject", company=company),
            intro=text(lang, "intro", company=company),
            question=self.question(survey, lang),
            low_label=text(lang, f"low.{survey.kind.value}"),
            high_label=text(lang, f"high.{survey.kind.value}"),
            options=[
                ScaleOption(value=v, label=str(v), url=f"{survey_url}?score={v}")
                for v in range(low, high + 1)
            ],
            survey_url=survey_url,
            unsubscribe_url=f"{base}/u/{unsub_token}",
            unsubscribe_text=text(lang, "unsubscribe"),
        )

    def question(self, survey: SurveySettings, lang: str) -> str:
        company = self.hub.config.hub.branding.company_name
        own = survey.question.get(lang) or survey.question.get("en")
        return (
            own.format(company=company)
            if own
            else text(lang, f"question.{survey.kind.value}", company=company)
        )

    # --- 4. answer --------------------------------------------------------------------------------------------

    async def page_for_token(self, token: str, purpose: str = "survey") -> tuple[str, SurveyPage | None]:
        """Look a token up: ("ok", page), ("expired", page), ("closed", page) or ("unknown", None)."""
        token_hash = hash_token(token)
        async with self.hub.store.session() as s:
            row = await s.get(Token, token_hash)
            if row is None or row.purpose != purpose:
                return "unknown", None
            inv = await s.get(Invitation, row.invitation_id)
            assert inv is not None
            campaign = self.hub.config.campaigns.get(inv.campaign)
            if campaign is None:
                return "unknown", None
            survey = self.hub.config.surveys[campaign.survey]
            resp = await s.scalar(select(Response).where(Response.invitation_id == inv.id))
        now = self.hub.now()
        window = timedelta(hours=self.hub.config.hub.amend_window_hours)
        amendable = resp is None or now - resp.answered_at <= window
        page = SurveyPage(
            invitation_id=inv.id,
            token_hash=token_hash,
            survey=survey,
            survey_kind=survey.kind,
            language=inv.language,
            question=self.question(survey, inv.language),
            low_label=text(inv.language, f"low.{survey.kind.value}"),
            high_label=text(inv.language, f"high.{survey.kind.value}"),
            response=response_record(resp) if resp is not None else None,
            amendable=amendable,
        )
        if row.expires_at <= now and resp is None:
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
        """Store an answer (or amend it: a later comment updates the same response) and queue write-backs."""
        hub = self.hub
        async with hub.store.session() as s:
            inv = await s.get(Invitation, invitation_id)
            if inv is None or inv.person_id is None:
                raise BadInput("no such invitation", 404)
            event = await s.get(Event, inv.event_pk)
            campaign = hub.config.campaigns.get(inv.campaign)
            if campaign is None or event is None:
                raise BadInput("this survey is no longer available", 410)
            survey = hub.config.surveys[campaign.survey]
            existing = await s.scalar(select(Response).where(Response.invitation_id == inv.id))
        if rating is None and existing is None:
            raise BadInput("choose a score first")
        if rating is not None:
            low, high = SCALES[survey.kind]
            if not low <= rating <= high:
                raise BadInput(text(inv.language, "out_of_range", low=low, high=high))
        await self._resolve_targets(inv.person_id, campaign, event.connector)
        answer = _Answer(rating, comment, topic, channel)
        for attempt in range(2):
            try:
                stored = await self._store_answer(inv, event, campaign, survey, answer)
                break
            except IntegrityError:
                # a concurrent request (a double-click) stored the first answer a moment before this one:
                # the second pass finds it and amends it like any later answer
                if attempt:
                    raise
        record, inv_record, before = stored
        if before is not None and before == (record.rating, record.comment, record.topic):
            return record  # the same answer again: nothing to write back, nobody to tell twice
        first = before is None
        log.info("response.recorded", response=record.id, campaign=record.campaign, amended=not first)
        await hub.plugins.notify("hub_on_response_received", response=record, invitation=inv_record)
        previous = (None, None) if before is None else (_category(survey.kind, before[0]), before[1])
        if first or previous[0] != record.category:
            await self._alert(record, inv_record, event, campaign, comment_added=False)
        elif record.comment and previous[1] != record.comment:
            await self._alert(record, inv_record, event, campaign, comment_added=True)
        hub.wake("sync")
        return record

    async def _store_answer(
        self, inv: Invitation, event: Event, campaign: Campaign, survey: SurveySettings, answer: _Answer
    ) -> tuple[ResponseRecord, InvitationRecord, tuple[int, str | None, str | None] | None]:
        """Insert or amend the response in one transaction; also returns what it held before (None: new).

        The insert of a first answer raises IntegrityError when a concurrent request inserted it first.
        """
        hub = self.hub
        now = hub.now()
        async with hub.store.session() as s:
            resp = await s.scalar(select(Response).where(Response.invitation_id == inv.id))
            before = (resp.rating, resp.comment, resp.topic) if resp is not None else None
            if resp is None:
                assert answer.rating is not None
                resp = Response(
                    id=str(uuid.uuid4()),
                    invitation_id=inv.id,
                    person_id=inv.person_id,
                    campaign=inv.campaign,
                    survey_kind=survey.kind.value,
                    language=inv.language,
                    channel=answer.channel or inv.channel,
                    answered_at=now,
                    rating=answer.rating,
                    score=0.0,
                )
                s.add(resp)
            elif now - resp.answered_at > timedelta(hours=hub.config.hub.amend_window_hours):
                raise BadInput("this answer can no longer be changed", 409)
            if answer.rating is not None:
                resp.rating = answer.rating
            if answer.comment is not None:
                resp.comment = answer.comment.strip() or resp.comment
            if answer.topic is not None:
                resp.topic = answer.topic or resp.topic
            if before is not None and before == (resp.rating, resp.comment, resp.topic):
                return response_record(resp), invitation_record(inv, event), before
            resp.score = survey.score_of(resp.rating)
            category = _category(survey.kind, resp.rating)
            resp.category = category.value if category is not None else None
            resp.updated_at = now
            await s.execute(update(Invitation).where(Invitation.id == inv.id).values(status="answered"))
            inv.status = "answered"
            await s.flush()
            await self._queue_write_backs(s, resp, inv, event, campaign)
            return response_record(resp), invitation_record(inv, event), before

    async def _resolve_targets(self, person_id: int, campaign: Campaign, source: str) -> None:
        """Find the person in write-back targets other than the triggering CRM (by email/phone)."""
        async with self.hub.store.session() as s:
            person = await s.get(Person, person_id)
            known = set(await s.scalars(select(Identity.connector).where(Identity.person_id == person_id)))
        for target in campaign.targets():
            connector = self.hub.connectors.get(target)
            if target in known or connector is None or person is None:
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
                async with self.hub.store.session() as s:
                    await upsert_person(s, target, record)

    async def _queue_write_backs(
        self, s: AsyncSession, resp: Response, inv: Invitation, event: Event, campaign: Campaign
    ) -> None:
        case_event = CaseEvent.model_validate(event.payload)
        settings = campaign.write_back
        for target in campaign.targets():
            identity = await s.scalar(
                select(Identity).where(Identity.person_id == resp.person_id, Identity.connector == target)
            )
            if identity is None:
                log.info("write_back.no_person", connector=target, response=resp.id)
                continue
            category = NpsCategory(resp.category) if resp.category else None
            items: list[tuple[str, str, str, dict[str, Any] | None]] = []
            if settings.person_summary:
                items.append(("person_summary", f"summary:{resp.person_id}", identity.crm_id, None))
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
                    ("timeline_entry", f"timeline:{resp.id}", identity.crm_id, entry.model_dump(mode="json"))
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
                items.append(
                    (
                        "case_feedback",
                        f"case:{resp.id}",
                        case_event.record_id,
                        feedback.model_dump(mode="json"),
                    )
                )
            for kind, key, record_id, payload in items:
                await self.queue(s, target, kind, key, record_id, identity.crm_id, resp, payload)

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
        now = self.hub.now()
        stmt = insert_for(s, WriteBack).values(
            connector=connector,
            kind=kind,
            key=key,
            record_id=record_id,
            person_record_id=person_record_id,
            person_id=resp.person_id,
            response_id=resp.id,
            payload=payload,
            state="queued",
            version=1,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["connector", "key"],
            set_={
                "state": "queued",
                "version": WriteBack.version + 1,
                "attempts": 0,
                "next_attempt_at": now,
                "payload": stmt.excluded.payload,
                "record_id": stmt.excluded.record_id,
                "response_id": stmt.excluded.response_id,
                "last_error": None,
                "updated_at": now,
            },
        )
        await s.execute(stmt)

    # --- 5. react ---------------------------------------------------------------------------------------------

    async def _alert(
        self,
        response: ResponseRecord,
        invitation: InvitationRecord,
        event: Event,
        campaign: Campaign,
        comment_added: bool,
    ) -> None:
        """Tell whom the campaign's alert rules name: at once on the score, and again when a comment follows.

        Customers give the score first and the comment a moment later; the owner should not wait for a
        comment that may never come, nor miss one that does.
        """
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
        """Set the hub's opt-out for the person behind an unsubscribe token; honoured by every channel."""
        async with self.hub.store.session() as s:
            row = await s.get(Token, hash_token(token))
            if row is None or row.purpose != "unsubscribe":
                return False
            inv = await s.get(Invitation, row.invitation_id)
            if inv is None or inv.person_id is None:
                return False
            person = await s.get(Person, inv.person_id)
            if person is not None and person.opted_out_at is None:
                person.opted_out_at = self.hub.now()
        return True

    # --- replies through a channel ------------------------------------------------------------------------

    async def record_inbound(self, channel: str, answer: InboundAnswer) -> ResponseRecord | None:
        """A reply like "9 quick and friendly": the newest open invitation sent to that address by this channel."""
        rating, comment = parse_reply(answer.text)
        sender_email = normalise_email(answer.sender)
        sender_phone = normalise_phone(answer.sender)
        async with self.hub.store.session() as s:
            who = []
            if sender_email:
                who.append(Person.email == sender_email)
            if sender_phone:
                who.append(Person.phone == sender_phone)
            if not who:
                return None
            inv_id = await s.scalar(
                select(Invitation.id)
                .join(Person, Person.id == Invitation.person_id)
                .where(or_(*who), Invitation.channel == channel, Invitation.status.in_(("sent", "answered")))
                .order_by(Invitation.sent_at.desc())
                .limit(1)
            )
        if inv_id is None:
            log.info("inbound.unmatched", channel=channel)
            return None
        try:
            return await self.record_answer(inv_id, rating, comment=comment, channel=channel)
        except BadInput as exc:
            log.info("inbound.refused", channel=channel, reason=str(exc))
            return None


def parse_reply(body: str) -> tuple[int | None, str | None]:
    """``"9 quick and friendly"`` -> (9, "quick and friendly"); ``"thanks!"`` -> (None, "thanks!")."""
    stripped = body.strip()
    head, _, rest = stripped.partition(" ")
    head = head.rstrip(".,:;!")
    if head.isdigit() and len(head) <= 2:
        return int(head), (rest.strip() or None)
    return None, (stripped or None)
