"""What the hub did about one person and why: every invitation, sent or suppressed, with its reason.

One account for everyone who asks: ``cxhub explain`` prints it, the cockpit's person page shows it. The
sentences the hub adds (a reason the engine did not store) go through a translate function, English by
default, so the cockpit shows them in the reader's language and the CLI as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.store.tables import Event, Invitation, Person


class Translate(Protocol):
    def __call__(self, message: str, /, **values: Any) -> str: ...


def english(message: str, /, **values: Any) -> str:
    """The sentence as written, its placeholders filled: the CLI's language."""
    return message.format(**values) if values else message


@dataclass(frozen=True)
class InvitationLine:
    """One invitation as the person's story tells it."""

    id: int
    created_at: datetime
    campaign: str
    connector: str
    event_type: str
    record_id: str
    status: str
    channel: str | None
    delivery_status: str | None
    why: str

    @property
    def event(self) -> str:
        return f"{self.connector} {self.event_type} {self.record_id}"


def notes(person: Person, _: Translate = english) -> list[str]:
    """What stops the hub from surveying the person, whatever the campaign: an opt-out, a refused address."""
    found = []
    if person.opted_out_at:
        when = f"{person.opted_out_at:%Y-%m-%d}"
        if person.opt_out_reason:
            found.append(_("unsubscribed {date} ({how})", date=when, how=person.opt_out_reason))
        else:
            found.append(_("unsubscribed {date}", date=when))
    if person.email_rejected:
        found.append(_("email not used since it was refused ({why})", why=person.email_rejected))
    if person.phone_rejected:
        found.append(_("phone not used since it was refused ({why})", why=person.phone_rejected))
    return found


def why(inv: Invitation, _: Translate = english) -> str:
    """The stored reason (suppressed, failed) or what the status means."""
    if inv.reason or inv.delivery_error:
        return inv.reason or inv.delivery_error or ""
    if inv.status == "scheduled":
        return _("waiting for its send time")
    if inv.status == "sent":
        return _("sent {when}", when=f"{inv.sent_at:%Y-%m-%d %H:%M}") if inv.sent_at else _("sent")
    if inv.status == "answered":
        return _("answered")
    if inv.status == "expired":
        return _("expired unanswered")
    return ""


async def invitation_lines(s: AsyncSession, person_id: int, _: Translate = english) -> list[InvitationLine]:
    """Every invitation of one person, oldest first, with the event that caused it and why it went as it did."""
    rows = (
        await s.execute(
            select(Invitation, Event)
            .join(Event, Event.id == Invitation.event_pk)
            .where(Invitation.person_id == person_id)
            .order_by(Invitation.id)
        )
    ).all()
    return [
        InvitationLine(
            id=inv.id,
            created_at=inv.created_at,
            campaign=inv.campaign,
            connector=event.connector,
            event_type=event.event_type,
            record_id=event.record_id,
            status=inv.status,
            channel=inv.channel,
            delivery_status=inv.delivery_status,
            why=why(inv, _),
        )
        for inv, event in rows
    ]
