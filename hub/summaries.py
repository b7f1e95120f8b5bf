"""The person summary written to CRM fields, computed from the hub's own responses at write time.

Computing it when the sync runs (not when the answer arrives) is what makes coalescing safe: however many
answers arrived since the last write, the CRM gets one update with the latest state.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.models import NpsCategory, PersonSummary
from hub.store.tables import Response


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


async def person_summary(session: AsyncSession, person_id: int, now: datetime) -> PersonSummary | None:
    rows = list(
        await session.scalars(
            select(Response)
            .where(Response.person_id == person_id)
            .order_by(Response.answered_at, Response.id)
        )
    )
    if not rows:
        return None
    latest = rows[-1]
    same_scale = [r for r in rows if r.survey_kind == latest.survey_kind]
    recent = [r for r in same_scale if r.answered_at >= now - timedelta(days=30)]
    comments = [r for r in rows if r.comment]
    return PersonSummary(
        latest_rating=latest.rating,
        latest_score=latest.score,
        latest_category=NpsCategory(latest.category) if latest.category else None,
        latest_date=latest.answered_at,
        latest_comment=comments[-1].comment if comments else None,
        average_rating=_mean([float(r.rating) for r in same_scale]) or 0.0,
        average_rating_30_days=_mean([float(r.rating) for r in recent]),
        average_score=_mean([r.score for r in rows]) or 0.0,
        count=len(rows),
    )
