"""``SalesforceConnector``: the hub's ``Connector`` contract glued onto the client, mapping and writer.

Events come two ways and must agree: webhooks (Outbound Messages or a signed JSON callout; fast but lossy)
and SOQL polling with a watermark (the safety net). Both build events in ``mapping.py``, so a closure seen
both ways has one event id, and both give a won opportunity the person of its primary contact role.
"""

from __future__ import annotations

import json
from collections import OrderedDict
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
from hub_salesforce.client import COLLECTION_LIMIT, COMPOSITE_COLLECTION_LIMIT, RecordError, SalesforceClient
from hub_salesforce.config import SalesforceSettings
from hub_salesforce.mapping import (
    CASE_FIELDS,
    OPPORTUNITY_FIELDS,
    case_event,
    contact_fields,
    opportunity_event,
    person_record,
    primary_role_query,
)
from hub_salesforce.setup_check import Need, budget_line, judge_object, needs
from hub_salesforce.soql import datetime_literal, is_record_id, parse_datetime, quote, quote_list, select
from hub_salesforce.webhooks import (
    ACK_BODY,
    ACK_MEDIA_TYPE,
    is_soap,
    read_callout,
    read_outbound_message,
    records_of,
    same_org,
    verify_callout,
)
from hub_salesforce.writeback import Writer

log = structlog.get_logger("hub_salesforce.connector")

#: how many Outbound Message notification ids are remembered (a redelivery costs no API call)
NOTIFICATION_MEMORY = 5000


class SalesforceConnector:
    """One Salesforce org, as the hub sees it."""

    #: write-back items per batch: what one Composite request carries (five sObject Collections of 200)
    batch_size = COLLECTION_LIMIT * COMPOSITE_COLLECTION_LIMIT
    bulk_batch_size = 10_000  # a full re-sync: items per batch, written as one Bulk API 2.0 job per kind

    def __init__(self, settings: SalesforceSettings, ctx: PluginContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self.client = SalesforceClient(settings)
        self._writer = Writer(self.client, settings)
        self._notifications: OrderedDict[str, list[CaseEvent]] = OrderedDict()
        self._last_poll: dict[str, Any] = {}

    # -- check ------------------------------------------------------------------------------------

    async def check(self) -> list[CheckResult]:
        """Credentials first (nothing else can pass without them), then every field used, then the budget.

        One describe call per object (``setup_check.py`` says what is needed and judges the answers).
        """
        try:
            await self.client.connect()
        except AuthError as exc:
            return [CheckResult(name="credentials", ok=False, detail=f"{exc}; check the auth settings")]
        except TransientError as exc:
            return [CheckResult(name="connection", ok=False, detail=f"Salesforce did not answer: {exc}")]
        results = [
            CheckResult(name="credentials", ok=True, detail=f"{self.settings.auth.type} login accepted")
        ]
        await self._share_usage()  # a budget other hub processes spent is not spent again by the check
        by_object: dict[str, list[Need]] = {}
        for need in needs(self.settings):
            by_object.setdefault(need.sobject, []).append(need)
        for sobject, wanted in by_object.items():
            try:
                describe: dict[str, Any] | None = await self.client.describe(sobject)
            except RecordError:
                describe = None
            except TransientError as exc:
                unchecked = ", ".join(name for name in by_object if name not in {r.name for r in results})
                results.append(
                    CheckResult(name="fields", ok=False, detail=f"not checked ({unchecked}): {exc}")
                )
                break
            except HubError as exc:
                results.append(CheckResult(name=sobject, ok=False, detail=str(exc)))
                continue
            results.append(judge_object(sobject, wanted, describe, self.settings.comment_max_length))
        await self._share_usage()
        results.append(budget_line(self.client.budget.state()))
        return results

    # -- polling ----------------------------------------------------------------------------------

    async def fetch_events(self, cursor: str | None) -> FetchResult:
        """One page per stream: Cases closed and Opportunities won since the watermark, minus an overlap.

        The cursor keeps, per stream, the watermark and the ``nextRecordsUrl`` of a query under way; the
        watermark moves only once a query is read to its end, and never past the poll's start.
        """
        await self._share_usage()
        try:
            return await self._fetch_events(cursor)
        finally:
            await self._share_usage()

    async def _fetch_events(self, cursor: str | None) -> FetchResult:
        now = datetime.now(UTC)
        state = _load_cursor(cursor, now - timedelta(hours=self.settings.initial_lookback_hours))
        events: list[CaseEvent] = []
        has_more = False
        streams = [("case", self.settings.poll_cases), ("opportunity", self.settings.poll_opportunities)]
        paging = any(enabled and state[name].get("next") for name, enabled in streams)
        for name, enabled in streams:
            # while a query is being paged, a finished stream waits for the next round instead of re-reading
            if enabled and (not paging or state[name].get("next")):
                found, more = await self._poll(name, state[name], now)
                events += found
                has_more |= more
        self._last_poll = {"at": now.isoformat(), "events": len(events), "has_more": has_more}
        return FetchResult(events=events, next_cursor=json.dumps(state, sort_keys=True), has_more=has_more)

    def _query(self, stream: str, since: datetime) -> str:
        lower = datetime_literal(since - timedelta(seconds=self.settings.poll_overlap_seconds))
        if stream == "case":
            return select(CASE_FIELDS, "Case", f"IsClosed = true AND ClosedDate >= {lower}", "ClosedDate, Id")
        return select(
            OPPORTUNITY_FIELDS,
            "Opportunity",
            f"IsWon = true AND LastModifiedDate >= {lower}",
            "LastModifiedDate, Id",
        )

    async def _poll(self, stream: str, state: dict[str, Any], now: datetime) -> tuple[list[CaseEvent], bool]:
        since = parse_datetime(state["since"]) or now
        page_url = state.get("next")
        try:
            records, next_url = await self.client.query_page(page_url or self._query(stream, since))
        except RecordError as exc:
            if page_url and "INVALID_QUERY_LOCATOR" in exc.codes:  # the locator expired: start the query over
                state["next"] = None
                return [], True
            raise
        build = case_event if stream == "case" else opportunity_event
        instance_url = self.client.instance_url
        events = [e for e in (build(r, self.settings, instance_url) for r in records) if e is not None]
        events = await self._primary_contacts(events)
        newest = max([parse_datetime(state.get("newest")) or since, *(e.occurred_at for e in events)])
        if next_url:
            state.update(next=next_url, newest=newest.isoformat())
            return events, True
        state.update(since=min(newest, now).isoformat(), next=None, newest=None)
        return events, False

    async def _primary_contacts(self, events: list[CaseEvent]) -> list[CaseEvent]:
        """Opportunity events survey the opportunity's primary contact role, the link Salesforce documents
        between a deal and its person; Opportunity.ContactId stays the fallback when no role is primary.

        One query per page of opportunities (200 ids a query at most, which keeps the query's URL far below
        Salesforce's 16,384-byte limit); ids without the shape of a record id never reach the query.
        """
        wanted = [e for e in events if e.event_type == "opportunity.won" and is_record_id(e.record_id)]
        ids = list(dict.fromkeys(e.record_id for e in wanted))
        primary: dict[str, str] = {}
        for start in range(0, len(ids), COLLECTION_LIMIT):
            try:
                rows = await self.client.query_all(primary_role_query(ids[start : start + COLLECTION_LIMIT]))
            except RecordError as exc:  # e.g. the integration user may not read contact roles
                log.warning("salesforce.contact_roles_unreadable", error=str(exc))
                return events
            for row in rows:
                opportunity, contact = row.get("OpportunityId"), row.get("ContactId")
                if is_record_id(opportunity) and is_record_id(contact):
                    primary.setdefault(
                        str(opportunity)[:15], str(contact)
                    )  # 15 characters: case-sensitive id
        return [
            e.model_copy(update={"person_id": primary[e.record_id[:15]]})
            if e.event_type == "opportunity.won" and e.record_id[:15] in primary
            else e
            for e in events
        ]

    # -- webhooks ---------------------------------------------------------------------------------

    async def parse_webhook(self, request: WebhookRequest) -> WebhookReply:
        try:
            if is_soap(request.body, request.header("content-type")):
                return await self._outbound_message(request)
            return await self._callout(request)
        finally:
            await self._share_usage()  # a web process that never syncs still counts its reads

    async def _outbound_message(self, request: WebhookRequest) -> WebhookReply:
        message = read_outbound_message(request.body)
        org = self.settings.organization_id
        if not org:
            raise BadInput("Outbound Messages are refused: set organization_id for this connector", 401)
        if not same_org(org, message.organization_id):
            raise BadInput("Outbound Message from another Salesforce org", 401)
        records = dict(zip((n.id for n in message.notifications), records_of(message), strict=True))
        fresh = [n.id for n in message.notifications if n.id not in self._notifications]
        fresh = list(dict.fromkeys(fresh))
        # one read per object type for the whole message; a redelivery reuses what was found
        found = await self._read_events([records[n] for n in fresh])
        for notification_id in fresh:
            self._remember(notification_id, found.get(records[notification_id][1], []))
        events: dict[str, CaseEvent] = {}
        for notification in message.notifications:
            for event in self._notifications.get(notification.id) or []:
                events.setdefault(event.event_id, event.model_copy(deep=True))
        return WebhookReply(events=list(events.values()), body=ACK_BODY, media_type=ACK_MEDIA_TYPE)

    def _remember(self, notification_id: str, events: list[CaseEvent]) -> None:
        self._notifications[notification_id] = events
        while len(self._notifications) > NOTIFICATION_MEMORY:
            self._notifications.popitem(last=False)

    async def _read_events(self, records: list[tuple[str, str]]) -> dict[str, list[CaseEvent]]:
        """Record id -> its event, from the record as Salesforce holds it now.

        A notification is only a hint: its fields may be few (the Outbound Message an admin set up sends
        what they ticked), stale (a redelivery a day later) or forged (an org id is no secret). So every
        record is read, with the fields polling reads, in one query per object type and 200 ids: the
        event then carries the owner to alert and the fields campaigns filter on, and it is the very
        event polling would build, under the same event id. A record that is not (or no longer) closed
        or won gives no event.
        """
        ids: dict[str, list[str]] = {"Case": [], "Opportunity": []}
        for sobject, record_id in records:
            if sobject in ids and is_record_id(record_id) and record_id not in ids[sobject]:
                ids[sobject].append(record_id)
        found: dict[str, list[CaseEvent]] = {}
        instance_url = self.client.instance_url
        for sobject, wanted in ids.items():
            build = case_event if sobject == "Case" else opportunity_event
            for start in range(0, len(wanted), COLLECTION_LIMIT):
                part = wanted[start : start + COLLECTION_LIMIT]
                rows = await self.client.query_all(
                    select(_fields_of(sobject), sobject, f"Id IN {quote_list(part)}")
                )
                built = [
                    e for e in (build(row, self.settings, instance_url) for row in rows) if e is not None
                ]
                for event in await self._primary_contacts(built):
                    found.setdefault(event.record_id, []).append(event)
        return found

    async def _callout(self, request: WebhookRequest) -> WebhookReply:
        secret = self.settings.webhook_secret
        if secret is None:
            raise BadInput("JSON callouts are refused: set webhook_secret for this connector", 401)
        verify_callout(secret.get_secret_value(), request.headers, request.body)
        found = await self._read_events(read_callout(request.body))
        events = list({e.event_id: e for known in found.values() for e in known}.values())
        return WebhookReply(events=events, body=json.dumps({"accepted": len(events)}))

    # -- people -----------------------------------------------------------------------------------

    async def find_person(self, email: str | None, phone: str | None) -> PersonRecord | None:
        conditions = []
        if email:
            conditions.append(f"Email = {quote(email)}")
        if phone:
            conditions.append(f"MobilePhone = {quote(phone)}")
        if not conditions:
            return None
        soql = select(
            contact_fields(self.settings), "Contact", " OR ".join(conditions), "LastModifiedDate DESC", 1
        )
        records, _ = await self.client.query_page(soql)
        return person_record(records[0], self.settings) if records else None

    async def get_person(self, crm_id: str) -> PersonRecord | None:
        record = await self.client.get("Contact", crm_id, contact_fields(self.settings))
        return person_record(record, self.settings) if record else None

    # -- write-back -------------------------------------------------------------------------------

    async def write_back(self, batch: Sequence[WriteBackItem]) -> list[WriteBackResult]:
        await self._share_usage()  # what other hub processes spent counts before this batch spends more
        try:
            return await self._writer.write(batch)
        finally:
            await self._share_usage()

    async def _share_usage(self) -> None:
        """Sum the API calls of every hub process on this database (``budget.py``)."""
        await self.client.budget.share_usage(self.ctx.usage)

    # -- support ----------------------------------------------------------------------------------

    def diagnostics(self) -> dict[str, Any]:
        """Settings with every secret redacted (pydantic's SecretStr), plus login, budget and poll state."""
        return {
            "settings": self.settings.model_dump(mode="json"),
            "instance_url": self.client.instance_url,
            "logins": self.client.logins,
            "api_budget": self.client.budget.state(),
            "last_poll": dict(self._last_poll),
        }

    async def aclose(self) -> None:
        await self._share_usage()  # the calls since the last batch, before the process goes
        await self.client.aclose()


def _fields_of(sobject: str) -> tuple[str, ...]:
    return CASE_FIELDS if sobject == "Case" else OPPORTUNITY_FIELDS


def _load_cursor(cursor: str | None, start: datetime) -> dict[str, dict[str, Any]]:
    fresh = {"since": start.isoformat(), "next": None, "newest": None}
    try:
        data = json.loads(cursor) if cursor else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    return {
        stream: {**fresh, **data[stream]} if isinstance(data.get(stream), dict) else dict(fresh)
        for stream in ("case", "opportunity")
    }
