"""``DynamicsConnector``: the hub's ``Connector`` contract over the Dataverse Web API.

Events come two ways and agree: webhooks of a Dataverse service endpoint (fast; a hint only) and polling
with change tracking (always on, the safety net). Both read the row with the same columns and build the
event with the same function, so a resolution seen both ways has one event id.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from hub import (
    AuthError,
    BadInput,
    CaseEvent,
    CheckResult,
    FetchResult,
    HubError,
    PersonRecord,
    PluginContext,
    TransientError,
    WebhookReply,
    WebhookRequest,
    WriteBackItem,
    WriteBackResult,
)
from hub_dynamics.client import DataverseClient
from hub_dynamics.config import DynamicsSettings
from hub_dynamics.mapping import (
    CLOSINGS,
    INCIDENT_COLUMNS,
    OPPORTUNITY_COLUMNS,
    Closing,
    closed_id,
    contact_columns,
    incident_event,
    is_guid,
    newest_closings,
    odata_string,
    opportunity_event,
    person_record,
)
from hub_dynamics.polling import Poller, TableCursor, load_cursor
from hub_dynamics.setup_check import check_columns
from hub_dynamics.webhooks import authenticate, read
from hub_dynamics.writeback import WriteBack

log = structlog.get_logger("hub_dynamics.connector")

OWNER_EMAIL_TTL_SECONDS = 3600.0
#: records per query of their closing activities: ``Microsoft.Dynamics.CRM.In`` with this many GUIDs keeps
#: the URL near 3 KB, far below what Dataverse and proxies accept
CLOSINGS_PER_QUERY = 50


class DynamicsConnector:
    """One Dataverse environment, as the hub sees it."""

    def __init__(self, settings: DynamicsSettings, ctx: PluginContext) -> None:
        self.settings = settings
        #: items per write_back call (the sync claims that many of one kind): as many as one $batch holds,
        #: so each $batch is full. An item is at least one request (a note makes a feedback two, and the
        #: writer then splits the batch); it was 500, which sent 1000-request batches half full.
        self.batch_size = settings.max_batch_requests
        self.ctx = ctx
        self.client = DataverseClient(settings, ctx)
        self._writer = WriteBack(self.client, settings)
        self._poller = Poller(self.client, settings, self._events_for)
        self._owner_emails: dict[str, tuple[float, str | None]] = {}
        self._last_poll: dict[str, Any] = {}

    # -- check ----------------------------------------------------------------------------------

    async def check(self) -> list[CheckResult]:
        """Credentials first (nothing else can pass without them), then every mapped column by name."""
        try:
            who = await self.client.get_json("WhoAmI")
        except AuthError as exc:
            return [CheckResult(name="credentials", ok=False, detail=f"{exc}; check the auth settings")]
        except TransientError as exc:
            return [CheckResult(name="connection", ok=False, detail=f"could not reach Dataverse: {exc}")]
        except HubError as exc:
            return [CheckResult(name="credentials", ok=False, detail=str(exc))]
        user = (who or {}).get("UserId", "?")
        results = [CheckResult(name="credentials", ok=True, detail=f"application user {user}")]
        try:
            results += await check_columns(self.client, self.settings)
        except HubError as exc:
            results.append(CheckResult(name="metadata", ok=False, detail=str(exc)))
        results.append(await self._window_check())
        return results

    async def _window_check(self) -> CheckResult:
        """Whether the hub's share of the service protection window holds the sync: what every hub process
        spent in the last five minutes (from the usage ledger), against the share it may use."""
        await self.client.share_usage()
        budget = self.client.budget
        spent, allowance = budget.spent(), budget.allowance
        detail = f"{spent} of the hub's {allowance} requests per 5 minutes used (every hub process)"
        if spent >= allowance:
            detail += "; the sync waits until requests leave the window (raise window_request_share to give the hub more)"
        return CheckResult(name="service protection", ok=spent < allowance, detail=detail)

    # -- events ---------------------------------------------------------------------------------

    async def fetch_events(self, cursor: str | None) -> FetchResult:
        now = datetime.now(UTC)
        state = load_cursor(cursor, now - timedelta(hours=self.settings.initial_lookback_hours))
        events: list[CaseEvent] = []
        has_more = False
        tables: list[tuple[str, TableCursor]] = []
        if self.settings.poll_cases:
            tables.append(("incident", state.incidents))
        if self.settings.poll_opportunities:
            tables.append(("opportunity", state.opportunities))
        try:
            for table, table_cursor in tables:
                found, more = await self._poller.poll(table, table_cursor, now)
                events += found
                has_more |= more
        finally:
            await self.client.share_usage()
        self._last_poll = {"at": now.isoformat(), "events": len(events), "has_more": has_more}
        return FetchResult(events=events, next_cursor=state.dumps(), has_more=has_more)

    async def _events_for(self, table: str, rows: list[dict[str, Any]]) -> list[CaseEvent]:
        """The events rows of ``table`` stand for: one per resolved (won) row, named after the row's newest
        closing activity, with its owner's email for alerts. Webhook and polling both come here, so one
        resolution has one event id whichever way it is seen."""
        closed = [(record_id, row) for row in rows if (record_id := closed_id(table, row)) is not None]
        if not closed:
            return []
        closings = await self._closings(table, [record_id for record_id, _ in closed])
        build = incident_event if table == "incident" else opportunity_event
        events: list[CaseEvent] = []
        for record_id, row in closed:
            event = build(row, self.settings, await self._owner_email(row), closings.get(record_id))
            if event is not None:
                events.append(event)
        return events

    async def _closings(self, table: str, record_ids: list[str]) -> dict[str, Closing]:
        """The newest case resolution (opportunity close) of each record: one query per
        ``CLOSINGS_PER_QUERY`` records (and per further page of its answer, which is rare)."""
        entity_set, lookup = CLOSINGS[table]
        wanted = sorted(set(record_ids))
        rows: list[dict[str, Any]] = []
        for start in range(0, len(wanted), CLOSINGS_PER_QUERY):
            values = ",".join(odata_string(i) for i in wanted[start : start + CLOSINGS_PER_QUERY])
            params: dict[str, str] | None = {
                "$select": f"activityid,_{lookup}_value,createdon",
                "$filter": f"Microsoft.Dynamics.CRM.In(PropertyName='{lookup}',PropertyValues=[{values}])",
            }
            link: str | None = entity_set
            while link is not None:
                data = await self.client.get_json(link, params) or {}
                rows += [row for row in data.get("value") or [] if isinstance(row, dict)]
                next_link = data.get("@odata.nextLink")
                link, params = (next_link, None) if isinstance(next_link, str) else (None, None)
        return newest_closings(rows, lookup)

    async def _owner_email(self, row: dict[str, Any]) -> str | None:
        owner = row.get("_ownerid_value")
        if not is_guid(owner):
            return None
        owner = str(owner).lower()
        cached = self._owner_emails.get(owner)
        if cached and time.monotonic() - cached[0] < OWNER_EMAIL_TTL_SECONDS:
            return cached[1]
        user = await self.client.get_record("systemusers", owner, ["internalemailaddress"])
        email = str(user.get("internalemailaddress") or "") or None if user else None
        self._owner_emails[owner] = (time.monotonic(), email)
        return email

    async def read_event(self, table: str, record_id: str) -> CaseEvent | None:
        """Read one incident or opportunity with polling's columns; the event it stands for now."""
        entity_set, columns = (
            ("incidents", INCIDENT_COLUMNS) if table == "incident" else ("opportunities", OPPORTUNITY_COLUMNS)
        )
        row = await self.client.get_record(entity_set, record_id, columns, annotations=True)
        events = await self._events_for(table, [row]) if row else []
        return events[0] if events else None

    async def parse_webhook(self, request: WebhookRequest) -> WebhookReply:
        authenticate(self.settings.webhook, request)
        notification = read(request)
        if not notification.hint or notification.record_id is None:
            return WebhookReply(events=[], status_code=200)
        if notification.entity not in ("incident", "opportunity"):
            raise BadInput(f"unexpected PrimaryEntityName {notification.entity!r}")
        event = await self.read_event(notification.entity, notification.record_id)
        return WebhookReply(events=[event] if event else [])

    # -- people ---------------------------------------------------------------------------------

    async def find_person(self, email: str | None, phone: str | None) -> PersonRecord | None:
        """By email first, then by mobile phone (as stored: E.164); active contacts only."""
        columns = contact_columns(self.settings)
        for column, value in (("emailaddress1", email), ("mobilephone", phone)):
            if not value:
                continue
            wanted = value.strip().lower() if column == "emailaddress1" else value.strip()
            rows = await self.client.query(
                "contacts", columns, f"{column} eq {odata_string(wanted)} and statecode eq 0", top=1
            )
            if rows:
                return person_record(rows[0], self.settings)
        return None

    async def get_person(self, crm_id: str) -> PersonRecord | None:
        if not is_guid(crm_id):
            return None
        row = await self.client.get_record("contacts", crm_id, contact_columns(self.settings))
        return person_record(row, self.settings) if row else None

    # -- write-back -----------------------------------------------------------------------------

    async def write_back(self, batch: Sequence[WriteBackItem]) -> list[WriteBackResult]:
        return await self._writer.write(batch)

    # -- support --------------------------------------------------------------------------------

    def diagnostics(self) -> dict[str, Any]:
        return {
            "plugin": "dynamics",
            "instance": self.ctx.instance,
            "settings": self.settings.model_dump(mode="json"),
            "api_calls": self.client.calls,
            "batch_requests": self.client.batch_requests,
            "window_requests_spent": self.client.budget.spent(),
            "window_allowance": self.client.budget.allowance,
            "last_poll": dict(self._last_poll),
        }

    async def aclose(self) -> None:
        await self.client.aclose()
