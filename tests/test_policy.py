"""The contact policy: the first rule that forbids a survey gives the reason an admin reads."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from hub.config import PolicySettings, QuietHours
from hub.policy import PersonFacts, RecentSurvey, decide, outside_quiet_hours

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def facts(**overrides: object) -> PersonFacts:
    base = dict(
        has_email=True,
        has_phone=False,
        crm_opted_out=False,
        crm_opt_out_reason=None,
        hub_opted_out_at=None,
        timezone=None,
    )
    base.update(overrides)
    return PersonFacts(**base)  # type: ignore[arg-type]


def test_a_reachable_person_is_scheduled_after_the_delay() -> None:
    decision = decide(PolicySettings(), facts(), "crm", [], NOW, timedelta(minutes=30))
    assert not decision.suppressed
    assert decision.send_after == NOW + timedelta(minutes=30)


def test_hub_opt_out_wins_over_everything() -> None:
    decision = decide(
        PolicySettings(),
        facts(hub_opted_out_at=NOW - timedelta(days=3), crm_opted_out=True),
        "crm",
        [],
        NOW,
        timedelta(0),
    )
    assert decision.reason == "unsubscribed from surveys on 2026-03-07"


def test_crm_opt_out_names_the_crm_and_its_reason() -> None:
    decision = decide(
        PolicySettings(),
        facts(crm_opted_out=True, crm_opt_out_reason="no mailings"),
        "service",
        [],
        NOW,
        timedelta(0),
    )
    assert decision.reason == "opted out in service: no mailings"


def test_crm_opt_out_can_be_ignored_by_config() -> None:
    policy = PolicySettings(honour_crm_opt_out=False)
    assert not decide(policy, facts(crm_opted_out=True), "crm", [], NOW, timedelta(0)).suppressed


def test_nobody_to_reach() -> None:
    decision = decide(PolicySettings(), facts(has_email=False), "crm", [], NOW, timedelta(0))
    assert decision.reason == "no email address or phone number"


def test_one_survey_per_person_within_the_frequency_window_across_campaigns() -> None:
    recent = [RecentSurvey("deal_won", NOW - timedelta(days=12))]
    decision = decide(PolicySettings(min_days_between_surveys=30), facts(), "crm", recent, NOW, timedelta(0))
    assert (
        decision.reason
        == 'surveyed 12 day(s) ago by campaign "deal_won" (policy: at most one survey every 30 days)'
    )
    later = decide(PolicySettings(min_days_between_surveys=10), facts(), "crm", recent, NOW, timedelta(0))
    assert not later.suppressed


def test_quiet_hours_across_midnight_in_the_persons_time_zone() -> None:
    policy = PolicySettings(quiet_hours=QuietHours(start=time(21), end=time(8)), default_timezone="UTC")
    # 22:30 in Copenhagen (UTC+1 in March) is quiet: wait until 08:00 local = 07:00 UTC the next day
    when = datetime(2026, 3, 10, 21, 30, tzinfo=UTC)
    assert outside_quiet_hours(policy, "Europe/Copenhagen", when) == datetime(2026, 3, 11, 7, 0, tzinfo=UTC)
    # 06:00 local, after midnight: same morning
    early = datetime(2026, 3, 10, 5, 0, tzinfo=UTC)
    assert outside_quiet_hours(policy, "Europe/Copenhagen", early) == datetime(2026, 3, 10, 7, 0, tzinfo=UTC)
    # midday is not quiet
    assert outside_quiet_hours(policy, "Europe/Copenhagen", NOW) == NOW


def test_quiet_hours_use_the_default_zone_when_the_person_has_none_or_a_bad_one() -> None:
    policy = PolicySettings(
        quiet_hours=QuietHours(start=time(21), end=time(8)), default_timezone="America/New_York"
    )
    when = datetime(2026, 3, 10, 3, 0, tzinfo=UTC)  # 23:00 in New York (UTC-4 after DST)
    expected = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert outside_quiet_hours(policy, None, when) == expected
    assert outside_quiet_hours(policy, "Not/AZone", when) == expected
