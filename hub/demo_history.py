"""Twelve weeks of earlier answers for the demo, so its cockpit has a trend, comments and numbers to show.

The demo's hub starts on an empty database and its story answers one survey; a dashboard of one answer shows
nothing of what the cockpit is for. These answers are the demo's past: customers who answered before the
story began, spread over the weeks, in the demo's campaign and languages, by email and by text. They are
people the hub knows only by their email address (no CRM identity), so nothing of them is written back to the
CRM emulator, now or by a full re-sync started from the cockpit: the emulator shows only the story's person.
Deterministic (a seeded random generator), so every demo shows the same past.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from hub.app import Hub
from hub.models import SurveyKind, nps_category
from hub.store.tables import Event, Invitation, Person, Response

WEEKS = 12
FIRST_NAMES = ("Anna", "Lars", "Sofie", "Mikkel", "Ingrid", "Jonas", "Freja", "Elias", "Maja", "Noah", "Ella")
LAST_NAMES = ("Berg", "Holm", "Dahl", "Lund", "Nielsen", "Strand", "Vik", "Eriksen", "Sand", "Moe")
COMMENTS = {
    "en": (
        "Quick and friendly, problem solved on the first call.",
        "It took three emails before anyone understood the issue.",
        "Good help, but the waiting time was long.",
        "The export still fails now and then.",
        "Excellent service, thank you!",
    ),
    "da": (
        "Hurtig og venlig hjælp.",
        "Det tog alt for lang tid at få svar.",
        "Fin løsning, men dårlig information undervejs.",
    ),
}
TOPICS = {"en": ("Speed", "Friendliness", "Solution"), "da": ("Hurtighed", "Venlighed", "Løsning")}


def _rating(rng: random.Random, week: int) -> int:
    """Scores that improve over the weeks, as a programme's first quarter often does."""
    promoter_share = 0.35 + 0.025 * week
    draw = rng.random()
    if draw < promoter_share:
        return rng.choice((9, 10))
    if draw < promoter_share + 0.35:
        return rng.choice((7, 8))
    return rng.randint(0, 6)


async def seed_history(hub: Hub, connector: str, campaign: str, channels: list[str]) -> int:
    """Store ``WEEKS`` weeks of answered and unanswered invitations before now; returns the answers stored."""
    settings = hub.config.campaigns[campaign]
    survey = hub.config.surveys[settings.survey]
    kind = survey.kind
    if kind is not SurveyKind.NPS:
        raise ValueError(f"the demo's history is of NPS answers; campaign {campaign} asks {kind.value}")
    rng = random.Random(2026)
    now = hub.now()
    people: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    invitations: list[dict[str, Any]] = []
    responses: list[dict[str, Any]] = []
    for week in range(WEEKS):
        for _ in range(rng.randint(10, 18)):
            k = len(people) + 1
            sent = now - timedelta(weeks=WEEKS - week, hours=rng.randint(0, 160))
            language = rng.choice(("en", "en", "da"))
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            people.append(
                {
                    "id": k,
                    "email": f"{first}.{last}.{k}@example.com".lower(),
                    "name": f"{first} {last}",
                    "language": language,
                    "created_at": sent,
                    "updated_at": sent,
                }
            )
            record = f"history-{k}"
            events.append(_event(k, connector, record, sent))
            channel = rng.choice(channels)
            answered = rng.random() < 0.6
            invitations.append(
                {
                    "id": k,
                    "campaign": campaign,
                    "event_pk": k,
                    "person_id": k,
                    "status": "answered" if answered else "sent",
                    "channel": channel,
                    "language": language,
                    "sent_at": sent,
                    "expires_at": sent + timedelta(days=14),
                    "created_at": sent,
                    "updated_at": sent,
                }
            )
            if answered:
                response = _response(rng, k, campaign, language, channel, sent, week)
                response["score"] = survey.score_of(response["rating"])
                responses.append(response)
    async with hub.store.session() as s:
        # ids as the database gives them (a PostgreSQL sequence must count these rows too), in input order
        person_ids = await _insert(s, Person, people)
        for event in events:
            event.pop("id")
        event_ids = await _insert(s, Event, events)
        for invitation in invitations:
            k = invitation.pop("id")
            invitation["person_id"], invitation["event_pk"] = person_ids[k - 1], event_ids[k - 1]
        invitation_ids = await _insert(s, Invitation, invitations)
        for response in responses:
            k = response["invitation_id"]
            response["invitation_id"], response["person_id"] = invitation_ids[k - 1], person_ids[k - 1]
        await s.execute(insert(Response), responses)
    return len(responses)


def _event(k: int, connector: str, record: str, at: datetime) -> dict[str, Any]:
    payload = {
        "event_id": f"{record}:closed",
        "event_type": "case.closed",
        "occurred_at": at.isoformat(),
        "record_type": "case",
        "record_id": record,
    }
    return {
        "id": k,
        "connector": connector,
        "event_id": payload["event_id"],
        "event_type": "case.closed",
        "record_id": record,
        "source": "poll",
        "payload": payload,
        "received_at": at,
        "processed_at": at,
    }


def _response(
    rng: random.Random, k: int, campaign: str, language: str, channel: str, sent: datetime, week: int
) -> dict[str, Any]:
    rating = _rating(rng, week)
    answered_at = sent + timedelta(minutes=rng.randint(5, 2000))
    with_comment = rng.random() < 0.45
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "invitation_id": k,
        "person_id": k,
        "campaign": campaign,
        "survey_kind": SurveyKind.NPS.value,
        "rating": rating,
        "score": float(rating),
        "category": nps_category(rating).value,
        "comment": rng.choice(COMMENTS[language]) if with_comment else None,
        "topic": rng.choice(TOPICS[language]) if with_comment else None,
        "language": language,
        "channel": channel,
        "answered_at": answered_at,
        "updated_at": answered_at,
    }


async def _insert(
    s: AsyncSession, table: type[Person | Event | Invitation], rows: list[dict[str, Any]]
) -> list[int]:
    for row in rows:
        row.pop("id", None)
    result = await s.execute(insert(table).returning(table.id, sort_by_parameter_order=True), rows)
    return list(result.scalars())
