"""Invitations out: claim the due ones with a lease, issue their tokens, build the message, try each channel.

A transient failure (an outage, a rate limit) retries later with backoff; a rejected address is remembered on
the person and the next channel is tried; the lease is released whatever happens.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.config import Campaign
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
from hub.models import SCALES, Delivery, Recipient, ScaleOption, SurveyMessage
from hub.people import normalise_email, normalise_phone
from hub.store.tables import Event, Invitation, Person, Token
from hub.texts import reply_instructions, text

if TYPE_CHECKING:
    from hub.app import Hub

log = structlog.get_logger("hub.engine.invitations")


class Invitations:
    """Sends due invitations and reminders through the campaign's channels, each claimed with a lease."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

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
                tried = inv.tried_channels or []  # failed for good after a send (a delivery report)
                channels = (
                    [inv.channel]
                    if reminder and inv.channel
                    else [c for c in campaign.channels if c not in tried]
                )
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
                inv.delivery_status = inv.delivery_error = None
                campaign = hub.config.campaigns.get(inv.campaign)
                if campaign is not None and campaign.reminder_after_hours:
                    inv.remind_after = sent_at + timedelta(hours=campaign.reminder_after_hours)
            inv.lease_until, inv.reason = None, None
            record = invitation_record(inv, event)
        log.info("survey.sent", invitation=inv_id, channel=channel, reminder=reminder)
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
