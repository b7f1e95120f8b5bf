"""The one contact policy, as pure functions: who may be surveyed, and when.

Kept free of I/O so every rule is tested directly and ``cxhub explain`` can print the same reasons the
engine stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hub.config import PolicySettings


@dataclass(frozen=True)
class PersonFacts:
    has_email: bool
    has_phone: bool
    crm_opted_out: bool
    crm_opt_out_reason: str | None
    hub_opted_out_at: datetime | None
    timezone: str | None


@dataclass(frozen=True)
class RecentSurvey:
    campaign: str
    at: datetime


@dataclass(frozen=True)
class Decision:
    send_after: datetime | None
    reason: str | None

    @property
    def suppressed(self) -> bool:
        return self.reason is not None


def decide(
    policy: PolicySettings,
    person: PersonFacts,
    connector: str,
    recent: list[RecentSurvey],
    now: datetime,
    delay: timedelta,
) -> Decision:
    """Apply the policy; the first rule that forbids a survey gives the reason."""
    if person.hub_opted_out_at is not None:
        return Decision(None, f"unsubscribed from surveys on {person.hub_opted_out_at:%Y-%m-%d}")
    if policy.honour_crm_opt_out and person.crm_opted_out:
        why = f": {person.crm_opt_out_reason}" if person.crm_opt_out_reason else ""
        return Decision(None, f"opted out in {connector}{why}")
    if not person.has_email and not person.has_phone:
        return Decision(None, "no email address or phone number")
    if recent and policy.min_days_between_surveys > 0:
        last = max(recent, key=lambda r: r.at)
        if now - last.at < timedelta(days=policy.min_days_between_surveys):
            days = (now - last.at).days
            return Decision(
                None,
                f'surveyed {days} day(s) ago by campaign "{last.campaign}" '
                f"(policy: at most one survey every {policy.min_days_between_surveys:g} days)",
            )
    return Decision(outside_quiet_hours(policy, person.timezone, now + delay), None)


def zone_of(policy: PolicySettings, timezone: str | None) -> ZoneInfo:
    if timezone:
        try:
            return ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo(policy.default_timezone)


def outside_quiet_hours(policy: PolicySettings, timezone: str | None, when: datetime) -> datetime:
    """``when``, or the end of the quiet hours it falls in, in the person's (or the default) time zone."""
    quiet = policy.quiet_hours
    if quiet is None:
        return when
    local = when.astimezone(zone_of(policy, timezone))
    if not quiet.contains(local.time()):
        return when
    end = local.replace(hour=quiet.end.hour, minute=quiet.end.minute, second=0, microsecond=0)
    if end <= local:
        end += timedelta(days=1)
    return end.astimezone(when.tzinfo)
