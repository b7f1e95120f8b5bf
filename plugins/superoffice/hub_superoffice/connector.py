"""``SuperOfficeConnector``: the hub's ``Connector`` contract, glued onto the client, mapping and writer.

Events come two ways and must agree: a webhook (fast, but SuperOffice drops it after three failed attempts)
and polling (the safety net). Both read the record itself and build the event with the same function, so a
closure seen both ways has one event id and the hub keeps one copy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import phonenumbers
import structlog

from hub import (
    AuthError,
    BadInput,
    CaseEvent,
    CheckResult,
    ConfigError,
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
from hub_superoffice.client import RecordError, SuperOfficeClient, throttle_scope
from hub_superoffice.config import SuperOfficeSettings
from hub_superoffice.mapping import (
    first_email,
    is_closed,
    is_sold,
    mobile_numbers,
    owner_person_id,
    parse_datetime,
    person_event_id,
    person_record,
    sale_event,
    ticket_event,
)
from hub_superoffice.polling import PollCursor, RowCache, StreamCursor
from hub_superoffice.webhooks import WebhookPayload, is_test_request, read_payload, verify_signature
from hub_superoffice.writeback import APPOINTMENT_TABLE, Writer, person_units

log = structlog.get_logger("hub_superoffice.connector")

OWNER_EMAIL_TTL_SECONDS = 3600.0
WEBHOOK_EVENTS = ("ticket.changed", "sale.sold", "person.changed")
#: columns SuperOffice lists in ``Changes`` on every save, whatever was changed
BOOKKEEPING_CHANGES = frozenset({"updated", "updated_associate_id", "updatedcount", "dbi_last_modified"})

_Read = tuple[CaseEvent | None, datetime | None]


class SuperOfficeConnector:
    """One SuperOffice tenant, as the hub sees it."""

    #: write-back items per call: SuperOffice has no batch API, so this only bounds one run's fan-out
    batch_size = 50

    def __init__(self, settings: SuperOfficeSettings, ctx: PluginContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self.client = SuperOfficeClient(settings, ctx.http_client)
        self._writer = Writer(self.client, settings)
        self._rows = RowCache()
        self._owner_emails: dict[int, tuple[float, str | None]] = {}
        self._last_poll: dict[str, Any] = {}

    @property
    def webhook_url(self) -> str:
        """Where the hub receives this instance's webhooks."""
        return f"{self.ctx.public_url.rstrip('/')}/hooks/{self.ctx.instance}"

    # -- check ------------------------------------------------------------------------------------

    async def check(self) -> list[CheckResult]:
        """Credentials first (nothing else can pass without them), then every mapped field by name."""
        try:
            person_fields = await self.client.custom_field_names("Person")
        except (AuthError, RecordError) as exc:
            return [CheckResult(name="credentials", ok=False, detail=f"{exc}; check the auth settings")]
        except TransientError as exc:
            problem = "could not reach SuperOffice" if not exc.sent else "SuperOffice did not answer"
            return [CheckResult(name="connection", ok=False, detail=f"{problem}: {exc}")]
        results = [
            CheckResult(
                name="credentials",
                ok=True,
                detail=f"{self.settings.auth.type} accepted by {self.settings.base_url}",
            )
        ]
        results += [
            _field_result("Person", field, setting, person_fields)
            for setting, field in self._person_field_settings().items()
        ]
        results += await self._guarded("ticket fields", self._check_ticket_fields)
        results += await self._guarded("timeline", self._check_timeline)
        if self.settings.webhook_secret is not None:
            results += await self._guarded("webhook", self._check_webhook)
        return results

    def _person_field_settings(self) -> dict[str, str]:
        """Setting -> person field, for every field the connector writes on a person."""
        return {f"person.{name}": field for name, field in self.settings.person.mapped().items()} | {
            f"opt_out.{name}": field for name, field in self.settings.opt_out.mapped().items()
        }

    async def _guarded(self, name: str, check: Any) -> list[CheckResult]:
        try:
            return list(await check())
        except HubError as exc:
            return [CheckResult(name=name, ok=False, detail=str(exc))]

    async def _check_ticket_fields(self) -> list[CheckResult]:
        ticket = self.settings.ticket
        configured = {
            "ticket.rating_field": ticket.rating_field,
            "ticket.comment_field": ticket.comment_field,
            "ticket.processed_field": ticket.processed_field,
            "ticket.received_field": ticket.received_field,
        }
        wanted = {setting: field for setting, field in configured.items() if field}
        if not wanted:
            return []
        fields = await self.client.custom_field_names("Ticket")
        return [_field_result("Ticket", field, setting, fields) for setting, field in wanted.items()]

    async def _check_timeline(self) -> list[CheckResult]:
        timeline = self.settings.timeline
        if timeline.mode == "off":
            return []
        if timeline.mode == "appointment":
            fields = await self.client.custom_field_names("Appointment")
            return [_field_result("Appointment", timeline.key_field, "timeline.key_field", fields)]
        columns = {f"timeline.columns.{name}": column for name, column in timeline.columns.mapped().items()}
        columns["timeline.key_field"] = timeline.key_field
        missing = await self.client.missing_table_columns(timeline.table, list(columns.values()))
        return [
            CheckResult(
                name=f"{timeline.table}.{column}",
                ok=column not in missing,
                detail=f"extra table {timeline.table} has no column {column} ({setting})"
                if column in missing
                else "",
            )
            for setting, column in columns.items()
        ]

    async def _check_webhook(self) -> list[CheckResult]:
        hooks = [
            hook for hook in await self.client.list_webhooks() if hook.get("TargetUrl") == self.webhook_url
        ]
        if not hooks:
            return [
                CheckResult(
                    name="webhook",
                    ok=False,
                    detail=f"no SuperOffice webhook posts to {self.webhook_url}; polling still finds events",
                )
            ]
        state = str(hooks[0].get("State", ""))
        if state.lower() != "active":
            return [
                CheckResult(
                    name="webhook",
                    ok=False,
                    detail=f"webhook {hooks[0].get('Name')} is {state}: SuperOffice stopped; set it Active",
                )
            ]
        return [CheckResult(name="webhook", ok=True, detail=f"active, posting to {self.webhook_url}")]

    # -- events -----------------------------------------------------------------------------------

    async def fetch_events(self, cursor: str | None) -> FetchResult:
        now = datetime.now(UTC)
        poll = PollCursor.loads(cursor, now, timedelta(hours=self.settings.initial_lookback_hours))
        events: list[CaseEvent] = []
        has_more = False
        if self.settings.poll_tickets:
            found, more = await self._poll("ticket", poll.tickets, now)
            events += found
            has_more |= more
        if self.settings.poll_sales:
            found, more = await self._poll("sale", poll.sales, now)
            events += found
            has_more |= more
        self._last_poll = {"at": now.isoformat(), "events": len(events), "has_more": has_more}
        return FetchResult(events=events, next_cursor=poll.dumps(), has_more=has_more)

    async def _poll(self, kind: str, stream: StreamCursor, now: datetime) -> tuple[list[CaseEvent], bool]:
        overlap = timedelta(seconds=self.settings.poll_overlap_seconds)
        lower = stream.lower_bound(overlap)
        page_size = self.settings.poll_page_size
        if kind == "ticket":
            rows = await self.client.closed_ticket_rows(
                stream.query_after(overlap), top=page_size, skip=stream.skip
            )
            id_column, time_column = "ticketId", "closedAt"
        else:
            rows = await self.client.updated_sale_rows(
                stream.query_after(overlap), top=page_size, skip=stream.skip
            )
            id_column, time_column = "saleId", "updatedDate"
        events: list[CaseEvent] = []
        unread: list[tuple[tuple[str, int, str], int]] = []
        for row in rows:
            try:
                record_id = int(str(row.get(id_column, row.get("PrimaryKey"))))
            except ValueError:
                continue
            key = (kind, record_id, str(row.get(time_column)))
            known, cached = self._rows.get(key)
            if not known:
                unread.append((key, record_id))
            elif cached is not None and cached[1] is not None and cached[1] >= lower:
                events.append(cached[0])
        reads = await asyncio.gather(
            *(self._read_record(kind, record_id) for _, record_id in unread), return_exceptions=True
        )
        failure: BaseException | None = None
        for (key, _), read in zip(unread, reads, strict=True):
            if isinstance(read, BaseException):
                failure = failure or read
                continue
            event, changed_at = read
            self._rows.put(key, (event, changed_at) if event else None)
            if event is not None and changed_at is not None and changed_at >= lower:
                events.append(event)
        if failure is not None:
            raise failure
        stream.advance(len(rows) >= page_size, page_size, now)
        return events, len(rows) >= page_size

    async def _read_record(self, kind: str, record_id: int) -> _Read:
        """The event a ticket or sale stands for now (None if none), and when it last changed."""
        if kind == "ticket":
            ticket = await self.client.get_entity("Ticket", record_id)
            if ticket is None or not is_closed(ticket):
                return None, None
            event = ticket_event(ticket, self.settings, await self._owner_email(ticket, "OwnedBy"))
            return event, event.occurred_at if event else None
        sale = await self.client.get_entity("Sale", record_id)
        if sale is None or not is_sold(sale):
            return None, None
        event = sale_event(sale, self.settings, await self._owner_email(sale, "Associate"))
        changed_at = parse_datetime(sale.get("UpdatedDate")) or (event.occurred_at if event else None)
        return event, changed_at

    async def _owner_email(self, entity: dict[str, Any], key: str) -> str | None:
        """E-mail of the associate owning a ticket or sale, via the associate's person (cached 1 h)."""
        person_id = owner_person_id(entity, key)
        if person_id is None:
            return None
        cached = self._owner_emails.get(person_id)
        if cached and time.monotonic() - cached[0] < OWNER_EMAIL_TTL_SECONDS:
            return cached[1]
        try:
            person = await self.client.get_entity("Person", person_id)
        except RecordError:
            person = None
        email = first_email(person) if person else None
        self._owner_emails[person_id] = (time.monotonic(), email)
        return email

    async def parse_webhook(self, request: WebhookRequest) -> WebhookReply:
        secret = self.settings.webhook_secret
        if secret is None:
            raise BadInput("webhooks are off for this connector: set webhook_secret", 401)
        verify_signature(secret.get_secret_value(), request)
        payload = read_payload(request)
        if payload.is_test or is_test_request(request):
            return WebhookReply(events=[], status_code=200)
        return WebhookReply(events=await self._webhook_events(payload))

    async def _webhook_events(self, payload: WebhookPayload) -> list[CaseEvent]:
        if payload.primary_key <= 0:
            return []
        if payload.event in ("ticket.changed", "ticket.created"):
            event, _ = await self._read_record("ticket", payload.primary_key)
            return [event] if event else []
        if payload.event in ("sale.sold", "sale.changed"):
            event, _ = await self._read_record("sale", payload.primary_key)
            return [event] if event else []
        if payload.event == "person.changed":
            if self._only_our_own_fields(payload.changes):
                return []
            return [
                CaseEvent(
                    event_id=person_event_id(
                        payload.primary_key, payload.event_id or payload.timestamp.isoformat()
                    ),
                    event_type="person.changed",
                    occurred_at=payload.timestamp,
                    record_type="person",
                    record_id=str(payload.primary_key),
                    person_id=str(payload.primary_key),
                    fields={"changes": payload.changes} if payload.changes else {},
                )
            ]
        return []

    def _only_our_own_fields(self, changes: list[str]) -> bool:
        """A person.changed caused by this connector writing its person fields is not news to the hub."""
        own = {field.lower() for field in self._person_field_settings().values()}
        changed = {change.lower() for change in changes} - BOOKKEEPING_CHANGES
        return bool(changes) and changed <= own

    async def ensure_webhook(self) -> dict[str, Any]:
        """Register this hub as a SuperOffice webhook target unless one already posts to it.

        SuperOffice sends a signed test POST while saving, so the hub must already be reachable at
        ``webhook_url``; the saved webhook (or the existing one) is returned.
        """
        secret = self.settings.webhook_secret
        if secret is None:
            raise ConfigError("set webhook_secret before registering a webhook")
        for hook in await self.client.list_webhooks():
            if hook.get("TargetUrl") == self.webhook_url:
                return hook
        return await self.client.create_webhook(
            {
                "Name": f"cxhub-{self.ctx.instance}",
                "Events": list(WEBHOOK_EVENTS),
                "TargetUrl": self.webhook_url,
                "Secret": secret.get_secret_value(),
                "State": "Active",
                "Type": "webhook",
            }
        )

    async def register_webhook(self) -> str:
        """``cxhub register-webhook``: ensure the hub's webhook exists in the tenant."""
        hook = await self.ensure_webhook()
        return f"webhook {hook.get('Name')} posts {', '.join(hook.get('Events', []))} to {hook.get('TargetUrl')} ({hook.get('State')})"

    # -- people -----------------------------------------------------------------------------------

    async def find_person(self, email: str | None, phone: str | None) -> PersonRecord | None:
        """By e-mail first, then by mobile; candidates from the archive are confirmed on the entity."""
        if email:
            wanted = email.strip().lower()
            for person_id in await self.client.person_ids_by_email(wanted):
                person = await self.client.get_entity("Person", person_id)
                if person and wanted in _emails(person):
                    return person_record(person, self.settings)
        if phone:
            digits = _national_digits(phone)
            if digits:
                for person_id in await self.client.person_ids_by_mobile(digits):
                    person = await self.client.get_entity("Person", person_id)
                    if person and phone in mobile_numbers(person):
                        return person_record(person, self.settings)
        return None

    async def get_person(self, crm_id: str) -> PersonRecord | None:
        if not crm_id.isdigit():
            return None
        person = await self.client.get_entity("Person", int(crm_id))
        return person_record(person, self.settings) if person else None

    # -- write-back -------------------------------------------------------------------------------

    async def write_back(self, batch: Sequence[WriteBackItem]) -> list[WriteBackResult]:
        """All items concurrently (``max_in_flight`` calls at a time), one result each.

        The summary and the opt-out of one person are one unit, written in one PATCH (``person_units``).

        After a 429 nothing more of the batch is sent: items already written are ``ok``, the others are
        ``transient`` with SuperOffice's Retry-After and ``sent=False`` (a 429 applies nothing), so waiting
        for the rate limit never uses an attempt. Only when no item reached SuperOffice at all (refused,
        unreachable, throttled from the first call) is the batch's error raised: the hub then stops this
        run instead of sending the rest of the queue into the same wall, and honours Retry-After.
        """
        units = person_units(batch)
        with throttle_scope():
            outcomes = await asyncio.gather(
                *(self._writer.write_unit(unit) for unit in units), return_exceptions=True
            )
        for outcome in outcomes:
            if isinstance(outcome, AuthError | ConfigError):
                raise outcome
        by_id: dict[int, WriteBackResult] = {}
        for unit, outcome in zip(units, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.warning("superoffice.write_failed", item_id=unit[0].id, error_type=type(outcome).__name__)
                outcome = [WriteBackResult.failed(i, f"{type(outcome).__name__}: {outcome}") for i in unit]
            by_id.update({result.item_id: result for result in outcome})
        results = [by_id[item.id] for item in batch]
        if results and all(r.status == "transient" and not r.sent for r in results):
            waits = [r.retry_after for r in results if r.retry_after is not None]
            raise TransientError(
                results[0].error or "SuperOffice received nothing", max(waits, default=None), sent=False
            )
        return results

    # -- support ----------------------------------------------------------------------------------

    def diagnostics(self) -> dict[str, Any]:
        return {
            "plugin": "superoffice",
            "instance": self.ctx.instance,
            "settings": self.settings.model_dump(mode="json"),
            "webhook_url": self.webhook_url,
            "client": self.client.describe(),
            "last_poll": dict(self._last_poll),
            "cached_rows": len(self._rows),
            "timeline_table": APPOINTMENT_TABLE
            if self.settings.timeline.mode == "appointment"
            else self.settings.timeline.table,
        }

    async def aclose(self) -> None:
        await self.client.aclose()


def _field_result(entity: str, field: str, setting: str, existing: set[str]) -> CheckResult:
    if field in existing:
        return CheckResult(name=f"{entity}.{field}", ok=True)
    return CheckResult(
        name=f"{entity}.{field}",
        ok=False,
        detail=f"{entity} has no custom field {field}: create it in SuperOffice or change {setting}",
    )


def _emails(person: dict[str, Any]) -> set[str]:
    return {
        str(item.get("Value", "")).strip().lower()
        for item in person.get("Emails") or []
        if isinstance(item, dict)
    }


def _national_digits(phone: str) -> str | None:
    """The national significant number of an E.164 phone: what SuperOffice's formatted numbers contain."""
    try:
        return phonenumbers.national_significant_number(phonenumbers.parse(phone, None))
    except phonenumbers.NumberParseException:
        return None
