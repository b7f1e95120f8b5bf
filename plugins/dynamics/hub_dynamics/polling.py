"""Polling with Dataverse change tracking, per table (incidents, opportunities).

The cursor holds, per table, one of three modes:

- ``seed``: the first change-tracking read (``Prefer: odata.track-changes``) pages through every row;
  rows modified since ``floor`` that are resolved (won) become events; its last page brings the delta link;
- ``delta``: the stored ``@odata.deltaLink`` (or a nextLink inside a delta) is followed verbatim and
  returns what changed since; ``since`` is when that last succeeded;
- ``window``: the delta token was refused (tokens expire): rows with ``modifiedon ge since - overlap`` and
  the wanted state are read with ``$filter`` (change tracking refuses $filter), page by page; then a new
  ``seed`` (floored at the window's start) fetches a fresh delta link. Nothing in between is missed.

Every page advances the cursor, which the hub stores only after the page's events: a crash re-reads a page.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog

from hub import CaseEvent
from hub_dynamics.client import DataverseClient, DataverseError
from hub_dynamics.config import DynamicsSettings
from hub_dynamics.mapping import INCIDENT_COLUMNS, OPPORTUNITY_COLUMNS, odata_datetime, parse_datetime

log = structlog.get_logger("hub_dynamics.polling")

ANNOTATIONS = 'odata.include-annotations="*"'
TABLES = {
    "incident": ("incidents", "incidentid", INCIDENT_COLUMNS, 1),
    "opportunity": ("opportunities", "opportunityid", OPPORTUNITY_COLUMNS, 1),
}

#: the events of a page's rows of a table (all at once: their closing activities are read in one query)
EventsFor = Callable[[str, list[dict[str, Any]]], Awaitable[list[CaseEvent]]]


@dataclass
class TableCursor:
    mode: Literal["seed", "delta", "window"] = "seed"
    link: str | None = None
    floor: str = ""
    since: str = ""


@dataclass
class PollState:
    incidents: TableCursor = field(default_factory=TableCursor)
    opportunities: TableCursor = field(default_factory=TableCursor)

    def dumps(self) -> str:
        return json.dumps(
            {"v": 1, "incidents": asdict(self.incidents), "opportunities": asdict(self.opportunities)}
        )


def _table_cursor(data: Any, start: datetime) -> TableCursor:
    if isinstance(data, dict) and data.get("mode") in ("seed", "delta", "window"):
        try:
            return TableCursor(
                mode=data["mode"],
                link=str(data["link"]) if data.get("link") else None,
                floor=str(data.get("floor") or odata_datetime(start)),
                since=str(data.get("since") or ""),
            )
        except (KeyError, TypeError):
            pass
    return TableCursor(floor=odata_datetime(start))


def load_cursor(cursor: str | None, start: datetime) -> PollState:
    """The stored cursor; an unreadable or missing one starts from ``start`` (the initial lookback)."""
    try:
        data = json.loads(cursor) if cursor else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    return PollState(
        _table_cursor(data.get("incidents"), start), _table_cursor(data.get("opportunities"), start)
    )


class Poller:
    def __init__(self, client: DataverseClient, settings: DynamicsSettings, events_for: EventsFor) -> None:
        self.client = client
        self.settings = settings
        self.events_for = events_for

    def _prefer(self, track: bool) -> list[str]:
        prefer = [f"odata.maxpagesize={self.settings.poll_page_size}", ANNOTATIONS]
        return ["odata.track-changes", *prefer] if track else prefer

    async def poll(self, table: str, cursor: TableCursor, now: datetime) -> tuple[list[CaseEvent], bool]:
        """One page of ``table``; (events, whether more pages are waiting)."""
        entity_set, id_column, columns, state = TABLES[table]
        select = {"$select": ",".join(columns)}
        floor: datetime | None = None
        if cursor.mode == "delta" and cursor.link:
            try:
                data = await self.client.page(cursor.link, None, self._prefer(True))
            except DataverseError as exc:
                log.warning("dynamics.delta_token_refused", table=table, code=exc.code, status=exc.status)
                since = parse_datetime(cursor.since) or parse_datetime(cursor.floor) or now
                floor = since - timedelta(seconds=self.settings.poll_overlap_seconds)
                cursor.mode, cursor.link, cursor.floor = "window", None, odata_datetime(floor)
                cursor.since = odata_datetime(now)  # the window's start: where the next seed is floored
                return [], True
        elif cursor.mode == "window":
            params = None
            if cursor.link is None:
                params = {
                    **select,
                    "$filter": f"modifiedon ge {cursor.floor} and statecode eq {state}",
                }
            data = await self.client.page(cursor.link or entity_set, params, self._prefer(False))
        else:
            params = select if cursor.link is None else None
            data = await self.client.page(cursor.link or entity_set, params, self._prefer(True))
            floor = parse_datetime(cursor.floor)
        events = await self._events(table, id_column, data.get("value"), floor)
        more = self._advance(cursor, data, now)
        return events, more

    async def _events(self, table: str, id_column: str, rows: Any, floor: datetime | None) -> list[CaseEvent]:
        kept: list[dict[str, Any]] = []
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict) or id_column not in row:  # $deletedEntity entries
                continue
            modified = parse_datetime(row.get("modifiedon"))
            if floor is not None and (modified is None or modified < floor):
                continue
            kept.append(row)
        return await self.events_for(table, kept)

    def _advance(self, cursor: TableCursor, data: dict[str, Any], now: datetime) -> bool:
        next_link = data.get("@odata.nextLink")
        if isinstance(next_link, str):
            cursor.link = next_link
            return True
        delta_link = data.get("@odata.deltaLink")
        if cursor.mode == "window":  # the window is read: track changes again from its start
            cursor.mode, cursor.link = "seed", None
            cursor.floor = cursor.since or odata_datetime(now)
            return True
        if not isinstance(delta_link, str):
            raise DataverseError(200, "", "a change-tracking reply without @odata.deltaLink")
        cursor.mode, cursor.link, cursor.since = "delta", delta_link, odata_datetime(now)
        return False
