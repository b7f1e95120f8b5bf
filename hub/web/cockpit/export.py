"""The answers in the dashboard's filter as CSV, streamed: for a spreadsheet, or another tool.

Written for Excel as much as for programs: UTF-8 with a byte order mark (without it Excel reads UTF-8 as the
local code page), a header row of stable English column names (a program's import keeps working whatever the
page's language), one answer per row, oldest first. A comment is text from outside: a cell that begins with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return would be taken by a spreadsheet as a formula (which can
run commands or leak other cells), so such a cell gets a ``'`` in front, the mark that says "text".

The rows are read in batches by keyset (``answered_at``, ``id``): each batch is a short query of its own, so a
slow download never holds a database connection or an old SQLite snapshot for its whole length.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select

from hub.store import Store
from hub.store.tables import Event, Person, Response
from hub.web.cockpit.answer_filter import AnswerFilter, answer_conditions, answers_from
from hub.web.cockpit.figures import safe_link

BATCH = 2000
BOM = "\ufeff"
#: what a spreadsheet takes as the start of a formula
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
COLUMNS = (
    "answered_at",
    "response_id",
    "campaign",
    "survey_kind",
    "rating",
    "score",
    "nps_category",
    "comment",
    "topic",
    "language",
    "channel",
    "connector",
    "crm_record_id",
    "crm_record_url",
    "person_id",
    "person_name",
)


def spreadsheet_safe(value: object) -> object:
    """``value`` as a cell no spreadsheet runs as a formula: text that starts like one gets a ``'`` first.
    Numbers are written as numbers (a negative one is a number, not a formula)."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _query(chosen: AnswerFilter, after: tuple[datetime, str] | None) -> Any:
    where = answer_conditions(chosen)
    if after is not None:
        moment, response_id = after
        where.append(
            or_(
                Response.answered_at > moment, and_(Response.answered_at == moment, Response.id > response_id)
            )
        )
    return (
        select(
            Response.answered_at,
            Response.id,
            Response.campaign,
            Response.survey_kind,
            Response.rating,
            Response.score,
            Response.category,
            Response.comment,
            Response.topic,
            Response.language,
            Response.channel,
            Event.connector,
            Event.record_id,
            Event.payload["record_url"].as_string(),
            Response.person_id,
            Person.name,
        )
        .select_from(answers_from(chosen, with_invitation=True).join(Person, Person.id == Response.person_id))
        .where(*where)
        .order_by(Response.answered_at, Response.id)
        .limit(BATCH)
    )


def _lines(rows: Sequence[Sequence[object]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow([spreadsheet_safe(value) for value in row])
    return buffer.getvalue().encode("utf-8")


async def answers_csv(store: Store, chosen: AnswerFilter) -> AsyncIterator[bytes]:
    """The CSV file, a batch of rows at a time."""
    yield (BOM).encode("utf-8") + _lines([COLUMNS])
    after: tuple[datetime, str] | None = None
    while True:
        async with store.engine.connect() as conn:
            batch = (await conn.execute(_query(chosen, after))).all()
        if not batch:
            return
        yield _lines(
            [
                (answered_at.isoformat(), *middle, safe_link(url), person_id, name)
                for answered_at, *middle, url, person_id, name in batch
            ]
        )
        if len(batch) < BATCH:
            return
        after = (batch[-1][0], batch[-1][1])
