"""What every stage shares: token hashes, the records hooks receive, the survey's question."""

from __future__ import annotations

from hashlib import sha256
from typing import TYPE_CHECKING

from hub.config import SurveySettings
from hub.models import InvitationRecord, NpsCategory, ResponseRecord, SurveyKind
from hub.store.tables import Event, Invitation, Response
from hub.texts import text

if TYPE_CHECKING:
    from hub.app import Hub


def hash_token(token: str) -> str:
    return sha256(token.encode()).hexdigest()


def invitation_record(inv: Invitation, event: Event) -> InvitationRecord:
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


def response_record(row: Response) -> ResponseRecord:
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
