"""Each campaign's last week in numbers, counted by the database: the events of its trigger, the invitations
sent, those suppressed by reason, and the answers. A handful of grouped queries for all campaigns together,
so the campaigns page costs the same with ten answers or ten million."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.config import HubConfig
from hub.store.tables import Event, Invitation, Response

WEEK = timedelta(days=7)
#: suppression reasons listed one by one; the rest are summed as one line
MAX_REASONS = 8


@dataclass
class CampaignWeek:
    #: events of the trigger's connector and type (before the campaign's filters)
    events: int = 0
    invited: int = 0
    answered: int = 0
    #: (reason, how many), most first
    suppressed: list[tuple[str, int]] = field(default_factory=list)
    #: suppressions past the ``MAX_REASONS`` most common reasons
    suppressed_other: int = 0

    @property
    def suppressed_total(self) -> int:
        return sum(n for _, n in self.suppressed) + self.suppressed_other


async def last_week(s: AsyncSession, config: HubConfig, now: datetime) -> dict[str, CampaignWeek]:
    """The numbers of every configured campaign over the seven days before ``now``."""
    since = now - WEEK
    weeks = {name: CampaignWeek() for name in config.campaigns}
    events = {
        (connector, kind): int(n)
        for connector, kind, n in await s.execute(
            select(Event.connector, Event.event_type, func.count())
            .where(Event.received_at >= since)
            .group_by(Event.connector, Event.event_type)
        )
    }
    for name, campaign in config.campaigns.items():
        weeks[name].events = events.get((campaign.trigger.connector, campaign.trigger.event), 0)
    for name, n in await _per_campaign(s, Invitation.campaign, Invitation.sent_at, since):
        if name in weeks:
            weeks[name].invited = n
    for name, n in await _per_campaign(s, Response.campaign, Response.answered_at, since):
        if name in weeks:
            weeks[name].answered = n
    suppressed = await s.execute(
        select(Invitation.campaign, Invitation.reason, func.count().label("n"))
        .where(Invitation.status == "suppressed", Invitation.created_at >= since)
        .group_by(Invitation.campaign, Invitation.reason)
        .order_by(Invitation.campaign, func.count().desc(), Invitation.reason)
    )
    for name, reason, n in suppressed:
        week = weeks.get(name)
        if week is None:
            continue
        if len(week.suppressed) < MAX_REASONS:
            week.suppressed.append((reason or "", int(n)))
        else:
            week.suppressed_other += int(n)
    return weeks


async def _per_campaign(
    s: AsyncSession, campaign: Any, moment: Any, since: datetime
) -> list[tuple[str, int]]:
    """How many rows per campaign have ``moment`` at or after ``since``."""
    rows = await s.execute(select(campaign, func.count()).where(moment >= since).group_by(campaign))
    return [(str(name), int(n)) for name, n in rows]
