"""The person summary written to CRM fields, computed from the hub's own responses at write time.

Computing it when the sync runs (not when the answer arrives) is what makes coalescing safe: however many
answers arrived since the last write, the CRM gets one update with the latest state.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from hub.models import NpsCategory, PersonSummary
from hub.store.lists import in_chunks, one_of
from hub.store.tables import Response

#: the columns a summary is made of, in the order a person's answers are taken
_ANSWERS = (
    select(
        Response.person_id,
        Response.survey_kind,
        Response.rating,
        Response.score,
        Response.category,
        Response.comment,
        Response.answered_at,
    )
    .where(one_of(Response.person_id, "people"))
    .order_by(Response.person_id, Response.answered_at, Response.id)
)


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def summary_of(rows: Sequence[Any], now: datetime) -> PersonSummary:
    """The summary of one person's answers, oldest first (at least one)."""
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


def person_summaries(conn: Connection, people: Collection[int], now: datetime) -> dict[int, PersonSummary]:
    """Person id -> summary, for those of ``people`` who answered (nobody else has one).

    A batch of summaries is one read of its people's answers, not one per person: under a stream of answers
    the prompt sync writes a batch of summaries every few hundred milliseconds, in the process that serves
    the survey pages, and a read (and its ORM objects) per person was most of such a batch's work. A read of
    its own (``Store.read``), not a session's: on a SQLite file it runs on the loop's own connection instead
    of handing every step to a thread and back."""
    # a row per answer: its person, survey kind, rating, score, category, comment and time
    answers: dict[int, list[Any]] = {}
    for chunk in in_chunks(sorted(set(people))):
        for row in conn.execute(_ANSWERS, {"people": chunk}):
            answers.setdefault(row.person_id, []).append(row)
    return {person: summary_of(rows, now) for person, rows in answers.items()}
