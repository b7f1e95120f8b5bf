"""The hub's own opt-out of a person, and its end: one mechanism for every way a person asks.

An unsubscribe link, an opt-out keyword texted back ("STOPP"), a provider that refuses to message someone who
opted out with it, or its delivery report saying so: each sets ``Person.opted_out_at`` (honoured by every
campaign and channel at send time), records how, and queues a ``PersonOptOut`` write-back for each CRM the
person is known in, in the same transaction, so the CRM users see it and nothing is lost between the two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.engine.writebacks import WriteBackQueue
from hub.models import PersonOptOut
from hub.people import normalise_email, normalise_phone
from hub.store.tables import Person

if TYPE_CHECKING:
    from hub.app import Hub

log = structlog.get_logger("hub.engine.optouts")


async def people_at(s: AsyncSession, address: str, region: str | None = None) -> list[Person]:
    """The people an address (an email, or a phone number: E.164, or national in ``region``) belongs to;
    several CRMs may share one number. Empty when ``address`` is neither."""
    email, phone = normalise_email(address), normalise_phone(address, region)
    clauses = []
    if email:
        clauses.append(Person.email == email)
    if phone:
        clauses.append(Person.phone == phone)
    if not clauses:
        return []
    return list(await s.scalars(select(Person).where(or_(*clauses)).order_by(Person.id)))


class OptOuts:
    """Sets and ends the hub's opt-out of people, and reports each change to their CRMs."""

    def __init__(self, hub: Hub, write_backs: WriteBackQueue) -> None:
        self.hub = hub
        self.write_backs = write_backs

    async def change(
        self, s: AsyncSession, person: Person, opted_out: bool, channel: str | None, reason: str
    ) -> bool:
        """Opt ``person`` out (or back in) in the session ``s``; False when they already were.

        A repeated STOP changes nothing and queues nothing: the CRM already has it.
        """
        if (person.opted_out_at is not None) == opted_out:
            return False
        now = self.hub.now()
        person.opted_out_at = now if opted_out else None
        person.opt_out_channel, person.opt_out_reason = channel, reason
        change = PersonOptOut(opted_out=opted_out, changed_at=now, channel=channel, reason=reason)
        crms = await self.write_backs.queue_opt_out(s, person.id, change)
        log.info(
            "person.opt_out" if opted_out else "person.opt_in", person=person.id, channel=channel, crms=crms
        )
        self.hub.wake("sync")
        return True

    async def by_address(self, address: str, opted_out: bool, channel: str | None, reason: str) -> int:
        """Opt everyone at ``address`` out (or back in); returns how many people changed."""
        async with self.hub.store.session() as s:
            changed = 0
            for person in await people_at(s, address):
                changed += await self.change(s, person, opted_out, channel, reason)
        return changed

    async def by_id(self, person_id: int, opted_out: bool, channel: str | None, reason: str) -> bool:
        async with self.hub.store.session() as s:
            person = await s.get(Person, person_id)
            return person is not None and await self.change(s, person, opted_out, channel, reason)
