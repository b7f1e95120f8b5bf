"""Which answers the dashboard and its CSV export look at: the filter of their GET form, and its SQL.

The filter is read from the query string, so a filtered dashboard is a link one can share. What it selects is
said once here, as SQL conditions, for answers (``responses``) and for the invitations the response rate
counts, so every figure of a page and the export agree on what "in the filter" means:

* period: the last 7, 30, 90 or 365 days, or from / to dates (whole UTC days, both included); answers by
  ``answered_at``, invitations by ``sent_at``;
* campaign, survey kind, language: columns of the answer (the invitation's for invitations: the answer copies
  its language); an invitation has no survey kind, its campaign's survey in the config gives it;
* channel: the channel the invitation was sent by (``invitations.channel``); an answer keeps a copy of it
  (``responses.channel``: a reply by text is matched only to invitations sent by the channel it came by, and an
  answer on the survey page takes its invitation's), so answers are filtered without a join;
* connector: the connector whose event started the invitation (``events.connector``).

Tables are joined only when a filter needs them, so the unfiltered page reads ``responses`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, FromClause, false, join

from hub.config import HubConfig
from hub.models import SurveyKind
from hub.store.tables import Event, Invitation, Response

PERIODS = (7, 30, 90, 365)
DEFAULT_PERIOD = 30
BUCKETS = ("week", "month")
#: the longest period from / to dates may span: a trend of ten years by month is 120 points
LONGEST = timedelta(days=3660)
#: a value longer than any stored one cannot match; refused rather than sent to the database
LONGEST_VALUE = 200


@dataclass(frozen=True)
class AnswerFilter:
    """What the dashboard's form asked for, checked; ``problems`` says what was not understood (and ignored)."""

    start: datetime
    end: datetime  # exclusive
    days: int | None  # one of PERIODS, None for from / to dates
    date_from: date | None = None
    date_to: date | None = None
    campaign: str | None = None
    survey: SurveyKind | None = None
    connector: str | None = None
    channel: str | None = None
    language: str | None = None
    bucket: str = "week"
    problems: tuple[str, ...] = field(default=())

    @property
    def needs_invitation(self) -> bool:
        """Whether the answers must be joined to their invitation and event: for the connector only."""
        return self.connector is not None

    def query(self, **changes: Any) -> str:
        """The query string of this filter (with ``changes``), for links that keep it: the export, the trend's
        other bucket."""
        chosen = replace(self, **changes)
        values: dict[str, str] = {}
        if chosen.days is not None:
            values["period"] = str(chosen.days)
        else:
            values["from"] = chosen.date_from.isoformat() if chosen.date_from else ""
            values["to"] = chosen.date_to.isoformat() if chosen.date_to else ""
        for name in ("campaign", "connector", "channel", "language"):
            value = getattr(chosen, name)
            if value is not None:
                values[name] = value
        if chosen.survey is not None:
            values["survey"] = chosen.survey.value
        values["bucket"] = chosen.bucket
        return urlencode(values)


def _text(params: Any, name: str, problems: list[str]) -> str | None:
    value = params.get(name)
    if not isinstance(value, str) or not value.strip():
        return None
    if len(value) > LONGEST_VALUE or "\x00" in value:
        problems.append(name)
        return None
    return value.strip()


def _date(params: Any, name: str, problems: list[str]) -> date | None:
    value = _text(params, name, problems)
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        problems.append(name)
        return None


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def parse_filter(params: Any, now: datetime) -> AnswerFilter:
    """The filter of a query string (``request.query_params``); what is not understood is left out and named
    in ``problems`` (the page says so), so a hand-edited link still shows a page."""
    problems: list[str] = []
    campaign, connector = _text(params, "campaign", problems), _text(params, "connector", problems)
    channel, language = _text(params, "channel", problems), _text(params, "language", problems)
    survey: SurveyKind | None = None
    kind = _text(params, "survey", problems)
    if kind is not None:
        try:
            survey = SurveyKind(kind)
        except ValueError:
            problems.append("survey")
    bucket = _text(params, "bucket", problems) or "week"
    if bucket not in BUCKETS:
        problems.append("bucket")
        bucket = "week"
    start, end, days, dates = _period(params, now, problems)
    return AnswerFilter(
        start,
        end,
        days,
        *dates,
        campaign=campaign,
        survey=survey,
        connector=connector,
        channel=channel,
        language=language,
        bucket=bucket,
        problems=tuple(problems),
    )


def _period(
    params: Any, now: datetime, problems: list[str]
) -> tuple[datetime, datetime, int | None, tuple[date | None, date | None]]:
    """Start, end, the number of days of a chosen period (None for dates), and the from / to dates."""
    date_from, date_to = _date(params, "from", problems), _date(params, "to", problems)
    if date_from is not None or date_to is not None:
        last = date_to or now.date()
        first = date_from or last - timedelta(days=DEFAULT_PERIOD - 1)
        if first <= last and last - first <= LONGEST:
            return _midnight(first), _midnight(last + timedelta(days=1)), None, (first, last)
        problems.append("from")
    period = _text(params, "period", problems)
    days = int(period) if period is not None and period.isdigit() and int(period) in PERIODS else None
    if period is not None and days is None:
        problems.append("period")
    days = days or DEFAULT_PERIOD
    return now - timedelta(days=days), now, days, (None, None)


# --- SQL -----------------------------------------------------------------------------------------------------


def answers_from(chosen: AnswerFilter, *, with_invitation: bool = False) -> FromClause:
    """``responses``, joined to its invitation and event when the filter (or the caller) needs them."""
    source: FromClause = Response.__table__
    if chosen.needs_invitation or with_invitation:
        source = join(source, Invitation, Invitation.id == Response.invitation_id)
        source = join(source, Event, Event.id == Invitation.event_pk)
    return source


def _equal(*pairs: tuple[Any, str | None]) -> list[ColumnElement[bool]]:
    """``column = value`` for each pair whose value was chosen."""
    return [column == value for column, value in pairs if value is not None]


def answer_conditions(
    chosen: AnswerFilter, *, hide_connector_index: bool = False
) -> list[ColumnElement[bool]]:
    """The filter on answers (with ``answers_from``).

    ``hide_connector_index``: for SQLite, in a query that walks the answers by time and stops at its ``LIMIT``
    (the newest comments). The connector is then compared as ``connector || ''``, an expression no index
    serves: SQLite keeps no statistics here, and would take the index on events' connector as the most
    selective start, visit every event of that connector, then sort, instead of reading the time index
    backwards until it has enough (0.2 ms against 190 ms for 100,000 answers). PostgreSQL finds the walk by
    time from its statistics, which the expression would hide from it (it then starts from the events)."""
    connector: Any = Event.connector.concat("") if hide_connector_index else Event.connector
    return [
        Response.answered_at >= chosen.start,
        Response.answered_at < chosen.end,
        *_equal(
            (Response.campaign, chosen.campaign),
            (Response.survey_kind, chosen.survey.value if chosen.survey is not None else None),
            (Response.language, chosen.language),
            (Response.channel, chosen.channel),
            (connector, chosen.connector),
        ),
    ]


def invitations_from(chosen: AnswerFilter) -> FromClause:
    """``invitations``, joined to their event when the filter names a connector."""
    source: FromClause = Invitation.__table__
    if chosen.connector is not None:
        source = join(source, Event, Event.id == Invitation.event_pk)
    return source


def invitation_conditions(chosen: AnswerFilter, config: HubConfig) -> list[ColumnElement[bool]]:
    """The filter on the invitations sent (with ``invitations_from``). A survey kind selects the campaigns
    whose survey is of that kind in the config: an invitation has no kind of its own before it is answered."""
    where = [
        Invitation.sent_at >= chosen.start,
        Invitation.sent_at < chosen.end,
        *_equal(
            (Invitation.campaign, chosen.campaign),
            (Invitation.language, chosen.language),
            (Invitation.channel, chosen.channel),
            (Event.connector, chosen.connector),
        ),
    ]
    if chosen.survey is not None:
        campaigns = campaigns_of_kind(config, chosen.survey)
        where.append(Invitation.campaign.in_(campaigns) if campaigns else false())
    return where


def campaigns_of_kind(config: HubConfig, kind: SurveyKind) -> list[str]:
    """The configured campaigns that ask a survey of ``kind``."""
    return sorted(
        name
        for name, campaign in config.campaigns.items()
        if campaign.survey in config.surveys and config.surveys[campaign.survey].kind is kind
    )
