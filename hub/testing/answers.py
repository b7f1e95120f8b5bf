"""Answered (and unanswered) surveys written straight into a hub's database, for the dashboard's tests and its
benchmark: the rows the engine would have left, people, events, invitations and responses, in bulk.

Bulk inserts through SQLAlchemy Core (``INSERT ... RETURNING`` in batches, the ids in the order given), so a
hundred thousand answers take seconds on SQLite and PostgreSQL alike; nothing is sent and no plugin runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from hub.models import SCALES, SurveyKind, nps_category
from hub.store.tables import Event, Invitation, Person, Response


@dataclass(frozen=True)
class Seeded:
    """One invitation sent, answered unless ``rating`` is None. People are shared by ``person`` number."""

    sent_at: datetime
    rating: int | None = None
    kind: SurveyKind = SurveyKind.NPS
    campaign: str = "case_closed"
    connector: str = "crm"
    channel: str = "mail"
    language: str = "en"
    comment: str | None = None
    person: int = 0
    answered_after: timedelta = timedelta(hours=1)
    record_url: str | None = None

    @property
    def answered_at(self) -> datetime:
        return self.sent_at + self.answered_after


def score_of(kind: SurveyKind, rating: int) -> float:
    """The 0-100 score of a rating, as a survey without a ``score_map`` gives it."""
    low, high = SCALES[kind]
    return round(100.0 * (rating - low) / (high - low), 2)


async def _ids(conn: AsyncConnection, table: Any, rows: list[dict[str, Any]]) -> list[int]:
    """Insert ``rows`` and return their new ids in the same order."""
    if not rows:
        return []
    result = await conn.execute(insert(table).returning(table.id, sort_by_parameter_order=True), rows)
    return [row[0] for row in result]


async def seed(conn: AsyncConnection, items: Sequence[Seeded]) -> list[str | None]:
    """Write ``items``; returns each one's response id (None for an unanswered invitation)."""
    numbers = sorted({item.person for item in items})
    person_ids = await _ids(
        conn,
        Person,
        [
            {
                "email": f"person{n}@seed.example",
                "name": f"Person {n}",
                "language": "en",
                "created_at": items[0].sent_at,
                "updated_at": items[0].sent_at,
            }
            for n in numbers
        ],
    )
    person_of = dict(zip(numbers, person_ids, strict=True))
    tag = uuid.uuid4().hex[:8]  # event ids stay unique when a database is seeded twice
    event_ids = await _ids(
        conn,
        Event,
        [
            {
                "connector": item.connector,
                "event_id": f"seed:{tag}:{index}",
                "event_type": "case.closed",
                "record_id": f"CASE-{index}",
                "source": "poll",
                "payload": {"record_id": f"CASE-{index}", "record_url": item.record_url},
                "received_at": item.sent_at - timedelta(hours=1),
                "processed_at": item.sent_at - timedelta(hours=1),
            }
            for index, item in enumerate(items)
        ],
    )
    invitation_ids = await _ids(
        conn,
        Invitation,
        [
            {
                "campaign": item.campaign,
                "event_pk": event_id,
                "person_id": person_of[item.person],
                "status": "sent" if item.rating is None else "answered",
                "channel": item.channel,
                "language": item.language,
                "attempts": 1,
                "sent_at": item.sent_at,
                "created_at": item.sent_at,
                "updated_at": item.sent_at,
            }
            for item, event_id in zip(items, event_ids, strict=True)
        ],
    )
    response_ids: list[str | None] = []
    responses = []
    for item, invitation_id in zip(items, invitation_ids, strict=True):
        if item.rating is None:
            response_ids.append(None)
            continue
        response_id = str(uuid.uuid4())
        response_ids.append(response_id)
        responses.append(
            {
                "id": response_id,
                "invitation_id": invitation_id,
                "person_id": person_of[item.person],
                "campaign": item.campaign,
                "survey_kind": item.kind.value,
                "rating": item.rating,
                "score": score_of(item.kind, item.rating),
                "category": nps_category(item.rating).value if item.kind is SurveyKind.NPS else None,
                "comment": item.comment,
                "language": item.language,
                "channel": item.channel,
                "answered_at": item.answered_at,
                "updated_at": item.answered_at,
            }
        )
    if responses:
        await conn.execute(insert(Response), responses)
    return response_ids
