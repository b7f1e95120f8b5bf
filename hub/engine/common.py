"""What every stage shares: token hashes, the records hooks receive, the survey's question."""

from __future__ import annotations

from datetime import datetime
from hashlib import sha256
from typing import TYPE_CHECKING, Protocol

from hub.config import SurveySettings
from hub.models import InvitationRecord, NpsCategory, ResponseRecord, SurveyKind
from hub.texts import text

if TYPE_CHECKING:
    from hub.app import Hub


def hash_token(token: str) -> str:
    return sha256(token.encode()).hexdigest()


class InvitationValues(Protocol):
    """An invitation's values: a mapped ``Invitation``, or the plain values the answers' batch writer reads."""

    @property
    def id(self) -> int: ...
    @property
    def campaign(self) -> str: ...
    @property
    def person_id(self) -> int | None: ...
    @property
    def status(self) -> str: ...
    @property
    def channel(self) -> str | None: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def send_after(self) -> datetime | None: ...
    @property
    def sent_at(self) -> datetime | None: ...
    @property
    def created_at(self) -> datetime: ...


class CaseValues(Protocol):
    """The event behind an invitation, as far as records and write-backs name it: its connector and record."""

    @property
    def connector(self) -> str: ...
    @property
    def event_id(self) -> str: ...
    @property
    def record_id(self) -> str: ...


class ResponseValues(Protocol):
    """A stored answer's values: a mapped ``Response``, a ``ResponseRecord``, or the batch writer's plain values
    (the code that reads an answer takes all three, so it is written once)."""

    @property
    def id(self) -> str: ...
    @property
    def invitation_id(self) -> int: ...
    @property
    def campaign(self) -> str: ...
    @property
    def person_id(self) -> int: ...
    @property
    def survey_kind(self) -> str: ...
    @property
    def rating(self) -> int: ...
    @property
    def score(self) -> float: ...
    @property
    def category(self) -> str | None: ...
    @property
    def comment(self) -> str | None: ...
    @property
    def topic(self) -> str | None: ...
    @property
    def language(self) -> str: ...
    @property
    def channel(self) -> str | None: ...
    @property
    def answered_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...


def invitation_record(inv: InvitationValues, event: CaseValues) -> InvitationRecord:
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


def response_record(row: ResponseValues) -> ResponseRecord:
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


def question(hub: Hub, survey: SurveySettings, lang: str) -> str:
    """The survey's question in one language: the survey's own wording if it has one, else the built-in text."""
    company = hub.config.hub.branding.company_name
    own = survey.question.get(lang) or survey.question.get("en")
    return (
        own.format(company=company) if own else text(lang, f"question.{survey.kind.value}", company=company)
    )
