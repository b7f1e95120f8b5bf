"""The polling cursor: where each stream (closed tickets, sold sales) resumes, as a JSON string.

SuperOffice's archive filters on dates may compare whole days, and archive rows may carry local times, so a
poll asks for everything after two days before ``since - overlap`` and keeps the exact cut on the entity's own
timestamp. What each row turned out to be is remembered (``RowCache``) so a poll does not read the same ticket
again every few minutes. Paging keeps ``since`` fixed until the last page is read, and
``since`` then moves to the time the poll *started*: never past anything it has not looked at.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import structlog

from hub import CaseEvent

log = structlog.get_logger("hub_superoffice.polling")

CURSOR_VERSION = 1


@dataclass
class StreamCursor:
    """One stream: the watermark, the page reached, and when the current round of pages began."""

    since: datetime
    skip: int = 0
    started: datetime | None = None

    def lower_bound(self, overlap: timedelta) -> datetime:
        """Events at or after this instant belong to this poll."""
        return self.since - overlap

    def query_after(self, overlap: timedelta) -> date:
        """The day to ask the archive for, two days early: "after" may compare whole days, and in the
        tenant's time zone, which can be a day behind UTC."""
        return (self.lower_bound(overlap) - timedelta(days=2)).date()

    def advance(self, page_was_full: bool, page_size: int, now: datetime) -> None:
        """After one page: the next page of the same round, or a new round from when this one started."""
        if page_was_full:
            if self.started is None:
                self.started = now
            self.skip += page_size
            return
        self.since = max(self.since, self.started or now)
        self.skip = 0
        self.started = None

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "skip": self.skip,
            "started": self.started.isoformat() if self.started else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamCursor:
        started = data.get("started")
        return cls(
            since=_aware(datetime.fromisoformat(data["since"])),
            skip=int(data.get("skip", 0)),
            started=_aware(datetime.fromisoformat(started)) if started else None,
        )


@dataclass
class PollCursor:
    tickets: StreamCursor
    sales: StreamCursor

    def dumps(self) -> str:
        return json.dumps(
            {"v": CURSOR_VERSION, "tickets": self.tickets.to_json(), "sales": self.sales.to_json()},
            sort_keys=True,
        )

    @classmethod
    def start(cls, now: datetime, lookback: timedelta) -> PollCursor:
        return cls(tickets=StreamCursor(since=now - lookback), sales=StreamCursor(since=now - lookback))

    @classmethod
    def loads(cls, text: str | None, now: datetime, lookback: timedelta) -> PollCursor:
        """Read a stored cursor; a missing or unreadable one starts ``lookback`` before ``now``."""
        if not text:
            return cls.start(now, lookback)
        try:
            data = json.loads(text)
            if data.get("v") != CURSOR_VERSION:
                raise ValueError(f"cursor version {data.get('v')}")
            return cls(
                tickets=StreamCursor.from_json(data["tickets"]), sales=StreamCursor.from_json(data["sales"])
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("superoffice.cursor_unreadable", error=str(exc))
            return cls.start(now, lookback)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


RowKey = tuple[str, int, str]
#: an event and when its record last changed (the poll's cut is on that time); None: the row made no event
RowOutcome = tuple[CaseEvent, datetime | None] | None


@dataclass
class RowCache:
    """What each archive row (stream, record id, the row's timestamp) turned out to be: an event or nothing.

    A later poll that meets the same row again re-emits the cached event instead of reading the entity: no
    API call, and nothing is lost if the hub did not store the events of the earlier poll (it dedupes them).
    """

    capacity: int = 20_000
    _rows: OrderedDict[RowKey, RowOutcome] = field(default_factory=OrderedDict)

    def get(self, row: RowKey) -> tuple[bool, RowOutcome]:
        """(known, outcome): whether the row was read before, and what it made."""
        if row not in self._rows:
            return False, None
        self._rows.move_to_end(row)
        return True, self._rows[row]

    def put(self, row: RowKey, outcome: RowOutcome) -> None:
        self._rows[row] = outcome
        self._rows.move_to_end(row)
        while len(self._rows) > self.capacity:
            self._rows.popitem(last=False)

    def __len__(self) -> int:
        return len(self._rows)
