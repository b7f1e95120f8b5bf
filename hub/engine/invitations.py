"""Invitations out: claim the due ones with a lease, issue their tokens, build the message, try each channel.

A transient failure (an outage, a rate limit) retries later with backoff; a rejected address is remembered on
the person and the next channel is tried; the lease is released whatever happens to a send. The lease lasts
``sync.lease_seconds`` and is renewed while the sends run, so a process that dies or loses its database
mid-way (before it could record anything) holds its invitations back from the others only that long.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from hub.config import Campaign
from hub.engine.bounds import Bounds
from hub.engine.common import hash_token, invitation_record, question
from hub.errors import (
    AddressRejected,
    AuthError,
    ConfigError,
    RecipientOptedOut,
    SkippableError,
    TransientError,
)
from hub.http import backoff_delay, never_sent
from hub.leases import renew_until
from hub.models import SCALES, Delivery, InvitationRecord, Recipient, ScaleOption, SurveyMessage
from hub.people import normalise_email, normalise_phone
from hub.store.db import SHORT_WRITE_ROWS
from hub.store.tables import Event, Invitation, Person, Token
from hub.texts import reply_instructions, text

if TYPE_CHECKING:
    from hub.app import Hub

log = structlog.get_logger("hub.engine.invitations")


@dataclass(frozen=True)
class Outgoing:
    """A claimed invitation with its message built: what the channels get, and what the hooks are told."""

    invitation_id: int
    message: SurveyMessage
    channels: list[str]
    record: InvitationRecord
    remind_after_hours: float | None


class Invitations:
    """Sends due invitations and reminders through the campaign's channels, each claimed with a lease."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.bounds = Bounds(self._concurrency)

    def _concurrency(self, channel: str) -> int:
        instance = self.hub.config.channels.get(channel)
        return instance.concurrency if instance is not None else 1

    # --- 3. send ----------------------------------------------------------------------------------------------

    def _claim(self, s: Session, condition: Any, limit: int) -> list[int]:
        now = self.hub.now()
        ids = list(
            s.scalars(
                select(Invitation.id)
                .where(condition, or_(Invitation.lease_until.is_(None), Invitation.lease_until < now))
                .order_by(Invitation.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        if not ids:
            return []
        until = now + timedelta(seconds=self.hub.config.sync.lease_seconds)
        s.execute(
            update(Invitation)
            .where(
                Invitation.id.in_(ids),
                or_(Invitation.lease_until.is_(None), Invitation.lease_until < now),
            )
            .values(lease_until=until)
        )
        return list(
            s.scalars(select(Invitation.id).where(Invitation.id.in_(ids), Invitation.lease_until == until))
        )

    async def dispatch_due(self, limit: int = 50) -> int:
        """Send every invitation whose time has come (a claim of at most ``limit``). Returns how many were
        handled.

        The claim is a short write (``Store.write``): it runs every few seconds in the process that serves the
        survey pages, most often finding nothing, and on the SQLite writer's thread that look held the
        writer, and the answers behind it, for 10 to 40 ms."""
        due = and_(Invitation.status == "scheduled", Invitation.send_after <= self.hub.now())
        ids = await self.hub.store.write_orm(
            partial(self._claim, condition=due, limit=limit), short=limit <= SHORT_WRITE_ROWS
        )
        await self._send_all(ids, reminder=False)
        return len(ids)

    async def send_reminders(self, limit: int = 50) -> int:
        due = and_(
            Invitation.status == "sent",
            Invitation.reminded_at.is_(None),
            Invitation.remind_after <= self.hub.now(),
        )
        ids = await self.hub.store.write_orm(
            partial(self._claim, condition=due, limit=limit), short=limit <= SHORT_WRITE_ROWS
        )
        await self._send_all(ids, reminder=True)
        return len(ids)

    async def _send_all(self, ids: list[int], reminder: bool) -> None:
        """Send the claimed invitations side by side, each channel's ``concurrency`` bounding its sends.

        Their messages are built in one transaction (one read, every token at once); each is then marked
        sent on its own as soon as its channel took it, so a crash sends again at most the messages in flight.
        Every invitation is claimed by this process alone, so sending them at once sends none twice. All of
        them are carried through even when one fails unexpectedly (a database error): stopping half-way
        would leave the rest leased, unsent, until their lease ran out. The first such error is raised then.
        """
        if not ids:
            return
        stop = asyncio.Event()
        renewal = asyncio.create_task(self._keep_leased(ids, stop))
        try:
            ready = iter(await self._prepare(ids, reminder))
            width = sum(self.bounds.limit(name) for name in self.hub.channels) or 1

            async def worker() -> None:
                for outgoing in ready:
                    await self._send(outgoing, reminder)

            results = await asyncio.gather(
                *(worker() for _ in range(min(width, len(ids)))), return_exceptions=True
            )
        finally:
            stop.set()
            await renewal
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _keep_leased(self, ids: list[int], stop: asyncio.Event) -> None:
        """Renew the lease of the claimed invitations not yet done (a done one has none) until ``stop``."""
        seconds = self.hub.config.sync.lease_seconds

        async def renew() -> None:
            await self.hub.store.write(
                lambda conn: conn.execute(
                    update(Invitation)
                    .where(Invitation.id.in_(ids), Invitation.lease_until.is_not(None))
                    .values(lease_until=self.hub.now() + timedelta(seconds=seconds))
                )
            )

        await renew_until(stop, seconds, renew, f"{len(ids)} invitations")

    def issue_token(
        self, s: Session | AsyncSession, invitation_id: int, purpose: str, expires_at: datetime
    ) -> str:
        """A new 128-bit random token for one invitation and one purpose; only its hash is stored."""
        token = secrets.token_urlsafe(16)
        s.add(
            Token(hash=hash_token(token), invitation_id=invitation_id, purpose=purpose, expires_at=expires_at)
        )
        return token

    async def _prepare(self, ids: list[int], reminder: bool) -> list[Outgoing]:
        """Re-check each invitation at send time and build its message; those that must not be sent are
        closed with their reason instead."""
        hub = self.hub
        now = hub.now()
        ready: list[Outgoing] = []
        dropped: list[InvitationRecord] = []

        def prepare(s: Session) -> None:
            rows = s.execute(
                select(Invitation, Event, Person)
                .join(Event, Event.id == Invitation.event_pk)
                .outerjoin(Person, Person.id == Invitation.person_id)
                .where(Invitation.id.in_(ids))
                .order_by(Invitation.id)
            )
            for inv, event, person in rows:
                campaign = hub.config.campaigns.get(inv.campaign)
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
                    tried = inv.tried_channels or []  # failed for good after a send (a delivery report)
                    channels = (
                        [inv.channel]
                        if reminder and inv.channel
                        else [c for c in campaign.channels if c not in tried]
                    )
                    remind = None if reminder else campaign.reminder_after_hours
                    ready.append(Outgoing(inv.id, message, channels, invitation_record(inv, event), remind))
                    continue
                inv.lease_until = None
                dropped.append(invitation_record(inv, event))

        await hub.store.write_orm(prepare)
        for record in dropped:
            if record.status == "suppressed":
                await hub.plugins.notify(
                    "hub_on_invitation_suppressed", invitation=record, reason=record.reason
                )
        return ready

    async def _send(self, outgoing: Outgoing, reminder: bool) -> None:
        """Try the campaign's channels in order; a transient failure retries later, a permanent one moves on."""
        inv_id, message = outgoing.invitation_id, outgoing.message
        errors: list[str] = []
        for channel_name in outgoing.channels:
            channel = self.hub.channels.get(channel_name)
            if channel is None:
                errors.append(f"{channel_name}: channel not available")
                continue
            try:
                async with self.bounds.slot(channel_name):
                    delivery = await channel.send(message)
            except RecipientOptedOut as exc:  # opted out with the provider: out of every channel
                await self._opted_out(inv_id, channel_name, exc)
                return
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
            await self._mark_sent(outgoing, channel_name, delivery, reminder)
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

    async def _opted_out(self, inv_id: int, channel: str, exc: RecipientOptedOut) -> None:
        """The provider refuses: the person opted out with it. The hub opts them out too; no channel is tried."""
        async with self.hub.store.session() as s:
            inv = await s.get(Invitation, inv_id)
            assert inv is not None
            inv.status, inv.reason, inv.lease_until = "suppressed", f"{channel}: {exc}", None
            person_id = inv.person_id
        if person_id is not None:
            reason = f"{channel} refused: the person opted out with the provider"
            await self.hub.engine.optouts.by_id(person_id, True, channel, reason)
        log.info("survey.opted_out", invitation=inv_id, channel=channel)

    async def _mark_sent(self, outgoing: Outgoing, channel: str, delivery: Delivery, reminder: bool) -> None:
        """One UPDATE, committed at once: the invitation is sent (or reminded), its lease released."""
        hub = self.hub
        sent_at = hub.now()
        values: dict[str, Any] = {"lease_until": None, "reason": None}
        record = outgoing.record.model_copy(update={"reason": None})
        if reminder:
            values["reminded_at"] = sent_at
        else:
            values.update(status="sent", channel=channel, sent_at=sent_at, message_id=delivery.message_id)
            values.update(delivery_status=None, delivery_error=None)
            if outgoing.remind_after_hours:
                values["remind_after"] = sent_at + timedelta(hours=outgoing.remind_after_hours)
            record = record.model_copy(update={"status": "sent", "channel": channel, "sent_at": sent_at})

        await hub.store.write(
            lambda conn: conn.execute(
                update(Invitation).where(Invitation.id == outgoing.invitation_id).values(**values)
            )
        )
        log.info("survey.sent", invitation=outgoing.invitation_id, channel=channel, reminder=reminder)
        if not reminder:  # a report on the message may have come before the send call returned
            await hub.engine.deliveries.apply(channel, delivery.message_id)
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
            question=question(hub, survey, lang),
            low_label=text(lang, f"low.{survey.kind.value}"),
            high_label=text(lang, f"high.{survey.kind.value}"),
            options=[
                ScaleOption(value=v, label=str(v), url=f"{survey_url}?score={v}")
                for v in range(low, high + 1)
            ],
            survey_url=survey_url,
            unsubscribe_url=f"{base}/u/{unsub_token}",
            unsubscribe_text=text(lang, "unsubscribe"),
            reply_instructions=reply_instructions(lang, survey.kind) if campaign.answer_by == "reply" else "",
        )
