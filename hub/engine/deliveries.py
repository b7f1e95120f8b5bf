"""Delivery reports (an SMS status callback): the most final one per message, applied to its invitation.

Providers report at least once and out of order, and a fast one reports before the send call has returned,
when no invitation has the message's id yet. So every report is kept first (one row per channel and message
id, replaced only by a more final one: "delivered" after "sent" never goes back, a repeat changes nothing)
and applied when both sides are known: at once when the invitation has the id, else when dispatch stores it
(``Invitations._mark_sent`` calls ``apply``). Applying it once is guarded by ``applied_at``.

A failed delivery to an address that can never be reached (an invalid number, a landline) flags the address
like a hard bounce and sends the invitation again through the campaign's next channel; a report that the
person opted out with the provider opts them out of the hub, as a texted STOP does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from hub.engine.optouts import OptOuts
from hub.models import DeliveryStatus
from hub.store.tables import DeliveryReport, Invitation, Person

if TYPE_CHECKING:
    from hub.app import Hub

log = structlog.get_logger("hub.engine.deliveries")

#: how final a provider's status word is; a report never replaces one that is at least as final
STATUS_RANK = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "read": 5,
}
FINAL = 4


def rank(report: DeliveryStatus) -> int:
    """How final a report is: by the provider's word, and a final outcome always above a pending one."""
    word = STATUS_RANK.get(report.status.lower())
    if report.outcome == "pending":
        return min(word if word is not None else 1, FINAL - 1)
    return max(word if word is not None else FINAL, FINAL)


class Deliveries:
    """Keeps delivery reports and applies them to invitations, whichever of the two arrives first."""

    def __init__(self, hub: Hub, optouts: OptOuts) -> None:
        self.hub = hub
        self.optouts = optouts

    async def record(self, channel: str, reports: Sequence[DeliveryStatus]) -> None:
        for report in reports:
            if await self._keep(channel, report):
                await self.apply(channel, report.message_id)

    async def _keep(self, channel: str, report: DeliveryStatus) -> bool:
        """Store the report unless one at least as final is kept; True when it was stored."""
        level = rank(report)
        for attempt in range(2):
            try:
                async with self.hub.store.session() as s:
                    row = await s.scalar(
                        select(DeliveryReport).where(
                            DeliveryReport.channel == channel, DeliveryReport.message_id == report.message_id
                        )
                    )
                    if row is not None and row.rank >= level:
                        return False
                    if row is None:
                        row = DeliveryReport(channel=channel, message_id=report.message_id)
                        s.add(row)
                    row.status, row.outcome, row.rank = report.status, report.outcome, level
                    row.error_code, row.error = report.error_code, report.error
                    row.address_rejected, row.opted_out = report.address_rejected, report.opted_out
                    row.reported_at, row.received_at, row.applied_at = (
                        report.reported_at,
                        self.hub.now(),
                        None,
                    )
                return True
            except IntegrityError:  # the same message's report arrived twice at once: compare with it
                if attempt:
                    raise
        return False

    async def apply(self, channel: str, message_id: str | None) -> None:
        """Apply the kept, unapplied report on ``message_id`` to its invitation, if both are known."""
        if not message_id:
            return
        unapplied = (
            DeliveryReport.channel == channel,
            DeliveryReport.message_id == message_id,
            DeliveryReport.applied_at.is_(None),
        )
        waiting = select(DeliveryReport.id).where(*unapplied)
        # one indexed read first: after a send there is rarely a report yet (an email channel has none)
        if await self.hub.store.read(lambda conn: conn.scalar(waiting)) is None:
            return
        now = self.hub.now()
        async with self.hub.store.session() as s:
            report = await s.scalar(select(DeliveryReport).where(*unapplied))
            inv = await s.scalar(
                select(Invitation).where(Invitation.channel == channel, Invitation.message_id == message_id)
            )
            if report is None or inv is None:
                return  # kept until dispatch stores the message id, or nothing new to apply
            claimed = await s.execute(
                update(DeliveryReport)
                .where(DeliveryReport.id == report.id, DeliveryReport.applied_at.is_(None))
                .values(applied_at=now)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return  # applied by a concurrent request a moment ago
            inv.delivery_status = report.status
            inv.delivery_error = (report.error or report.error_code) if report.outcome == "failed" else None
            failed = report.outcome == "failed"
            person_id, inv_id = inv.person_id, inv.id
            opted_out, rejected = report.opted_out, report.address_rejected
            error = (report.error or f"error {report.error_code}") if failed else ""
        log.info("delivery.reported", channel=channel, invitation=inv_id, status=report.status)
        if not failed or person_id is None:
            return
        if opted_out:
            reason = f"{channel} reports the person opted out with the provider"
            await self.optouts.by_id(person_id, True, channel, reason)
        elif rejected:
            await self._next_channel(inv_id, person_id, channel, error, now)

    async def _next_channel(
        self, inv_id: int, person_id: int, channel: str, error: str, now: datetime
    ) -> None:
        """Flag the address like a hard bounce; send the invitation again through the channels not tried.

        A delivery report names no address: channels whose reports say an address can never be reached
        (SMS: invalid numbers, landlines) reach people by phone, so the phone is flagged where there is one.
        """
        async with self.hub.store.session() as s:
            person = await s.get(Person, person_id)
            inv = await s.get(Invitation, inv_id)
            if person is None or inv is None:
                return
            note = f"{now:%Y-%m-%d}: {channel}: {error}"
            if person.phone:
                person.phone_rejected = note
            elif person.email:
                person.email_rejected = note
            if inv.status != "sent" or inv.channel != channel:
                return  # answered already (the number worked), or moved on before
            inv.tried_channels = [*(inv.tried_channels or []), channel]
            inv.status, inv.send_after, inv.lease_until = "scheduled", now, None
            inv.reason = f"{channel}: {error} (trying the next channel)"
        log.info("delivery.next_channel", invitation=inv_id, channel=channel)
        self.hub.wake("dispatch")
