"""Writing one answer back: summary fields on the person, a timeline entry, feedback on the ticket.

Every write is safe to repeat, because the hub retries after crashes and timeouts, and re-sends an item
with the same key when an answer changes (a comment added after the score). Field updates are plain
PATCHes; anything that *creates* a record (an activity, an extra-table row, an internal ticket message)
first looks for the hub's key stored in an earlier copy, and updates that copy instead of making a second.
Items with the same key are serialised within the process so two concurrent copies cannot both miss.

SuperOffice has no batch API, so the look-ups are what can be shared: the timeline items of one
write-back batch ask for their keys together, and one archive query (``or``-ed keys) answers all of
them (``KeyBatcher``). A batch of N new answers costs one look-up and N creations, not N of each.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import structlog

from hub import (
    CaseFeedback,
    PersonOptOut,
    PersonSummary,
    SkippableError,
    TimelineEntry,
    TransientError,
    WriteBackItem,
    WriteBackResult,
)
from hub_superoffice.client import SuperOfficeClient, ThrottleScope, current_throttle_scope
from hub_superoffice.config import SuperOfficeSettings
from hub_superoffice.mapping import (
    custom_fields_body,
    field_operations,
    message_id_for,
    opt_out_values,
    render,
    truncate,
)

#: an opt-out reason is cut to fit a short text field (SuperOffice's extra text fields hold 254)
OPT_OUT_REASON_LENGTH = 254
APPOINTMENT_TABLE = "appointment"
APPOINTMENT_ID_COLUMN = "appointment_id"
TABLE_ID_COLUMN = "id"

log = structlog.get_logger("hub_superoffice.writeback")

#: the kinds written to fields of the person, coalesced per person into one PATCH (``Writer.write_unit``)
PERSON_KINDS = (PersonSummary, PersonOptOut)


def person_units(batch: Sequence[WriteBackItem]) -> list[list[WriteBackItem]]:
    """The batch as units of work: the person-field items of one person together, every other item alone."""
    units: list[list[WriteBackItem]] = []
    people: dict[str, list[WriteBackItem]] = {}
    for item in batch:
        if not isinstance(item.payload, PERSON_KINDS):
            units.append([item])
        elif item.record_id in people:
            people[item.record_id].append(item)
        else:
            people[item.record_id] = [item]
            units.append(people[item.record_id])
    return units


class KeyLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


Lookup = Callable[[list[str]], Awaitable[dict[str, list[int]]]]


class KeyBatcher:
    """Look-ups by key asked for in the same turn of the event loop, answered by one ``lookup`` call.

    ``SuperOfficeConnector.write_back`` starts ``Writer.write`` for every item of a batch at once, and each
    timeline item asks for its key before any of them has sent a request; the first ask schedules one
    task that runs once every item has had its turn, and that task sends all the keys asked for by then
    in one ``lookup``. Asks from different write-back batches (throttle scopes) are never mixed, so a
    429 or a failure stays with the batch it belongs to; a failed look-up fails every ask it answers.
    """

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self._waiting: dict[ThrottleScope | None, dict[str, list[asyncio.Future[list[int]]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: look-up calls made, and keys they answered (for tests and diagnostics)
        self.lookups = 0
        self.keys = 0

    async def get(self, key: str) -> list[int]:
        """Ids of the records holding ``key`` (ascending; empty when there are none)."""
        scope = current_throttle_scope()
        group = self._waiting.get(scope)
        if group is None:
            group = self._waiting[scope] = {}
            task = asyncio.create_task(self._answer(scope))  # copies this context: same throttle scope
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        group.setdefault(key, []).append(future)
        return await future

    async def _answer(self, scope: ThrottleScope | None) -> None:
        group = self._waiting.pop(scope)
        self.lookups += 1
        self.keys += len(group)
        waiting = [future for futures in group.values() for future in futures]
        try:
            found = await self._lookup(list(group))
        except Exception as exc:
            for future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled: so are the asks
            for future in waiting:
                future.cancel()
            raise
        for key, futures in group.items():
            for future in futures:
                if not future.done():
                    future.set_result(list(found.get(key, [])))


def _record_id(value: str | None, what: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise SkippableError(f"{what} id {value!r} is not a SuperOffice id") from None


async def _settled(items: Sequence[WriteBackItem], work: Awaitable[str | None]) -> list[WriteBackResult]:
    """Run ``work`` for ``items`` and give each item its outcome.

    ``TransientError`` becomes a transient result (with Retry-After and whether it was sent),
    ``SkippableError`` (including a 4xx from SuperOffice) a failed one; ``AuthError`` propagates, because
    no other item can succeed either.
    """
    try:
        remote_id = await work
    except TransientError as exc:  # sent=False: nothing reached SuperOffice, so no attempt is used
        return [WriteBackResult.transient(i, str(exc), exc.retry_after, sent=exc.sent) for i in items]
    except SkippableError as exc:
        return [WriteBackResult.failed(i, str(exc)) for i in items]
    return [WriteBackResult.ok(i, remote_id) for i in items]


def _display_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class Writer:
    """Turns write-back items into SuperOffice calls; one result per item, never an exception per item
    (see ``_settled``)."""

    def __init__(self, client: SuperOfficeClient, settings: SuperOfficeSettings) -> None:
        self._client = client
        self._settings = settings
        self._locks = KeyLocks()
        self.timeline_lookups = KeyBatcher(self._find_timeline_records)

    async def write(self, item: WriteBackItem) -> WriteBackResult:
        """A timeline entry or case feedback item (person fields go through ``write_unit``)."""
        payload = item.payload
        if isinstance(payload, TimelineEntry):
            return (await _settled([item], self._timeline_entry(item, payload)))[0]
        if isinstance(payload, CaseFeedback):
            return (await _settled([item], self._case_feedback(item, payload)))[0]
        return (await self.write_unit([item]))[0]

    async def write_unit(self, items: Sequence[WriteBackItem]) -> list[WriteBackResult]:
        """One unit of ``person_units``: a lone timeline or feedback item, or the summaries and opt-outs of
        one person, written in one PATCH with the newest of each; one result per item.

        An opt-out that travels with a summary therefore costs no call of its own, and of two opt-out
        changes of one person in a batch only the newer (``changed_at``) is written.
        """
        if len(items) == 1 and not isinstance(items[0].payload, PERSON_KINDS):
            return [await self.write(items[0])]
        return await _settled(items, self._person_fields(items))

    # -- person fields

    async def _person_fields(self, items: Sequence[WriteBackItem]) -> str | None:
        person_id = _record_id(items[0].record_id, "person")
        operations: list[dict[str, Any]] = []
        summaries = [i.payload for i in items if isinstance(i.payload, PersonSummary)]
        if summaries:
            operations += self._summary_operations(max(summaries, key=lambda s: s.latest_date))
        opt_outs = [i.payload for i in items if isinstance(i.payload, PersonOptOut)]
        if opt_outs:
            operations += self._opt_out_operations(max(opt_outs, key=lambda o: o.changed_at))
        if not operations:
            return None
        await self._client.patch_entity("Person", person_id, operations)
        return str(person_id)

    def _summary_operations(self, summary: PersonSummary) -> list[dict[str, Any]]:
        values = {
            "latest_rating": summary.latest_rating,
            "latest_score": summary.latest_score,
            "latest_category": summary.latest_category,
            "latest_date": summary.latest_date,
            "latest_comment": truncate(summary.latest_comment, self._settings.comment_max_length),
            "average_rating": summary.average_rating,
            "average_rating_30_days": summary.average_rating_30_days,
            "average_score": summary.average_score,
            "count": summary.count,
        }
        mapping = self._settings.person.mapped()
        return field_operations({field: values[name] for name, field in mapping.items()})

    def _opt_out_operations(self, opt_out: PersonOptOut) -> list[dict[str, Any]]:
        """Tick, date and reason of an opt-out; an opt-in clears all three (the same values on a retry)."""
        mapping = self._settings.opt_out.mapped()
        if not mapping:
            log.info("superoffice.opt_out_not_mapped", hint="set opt_out.opted_out to write opt-outs")
            return []
        values = opt_out_values(opt_out, OPT_OUT_REASON_LENGTH)
        return field_operations({field: values[name] for name, field in mapping.items()})

    # -- timeline

    def _timeline_table(self) -> tuple[str, str]:
        """The dynamic-archive table of timeline records and its id column."""
        timeline = self._settings.timeline
        if timeline.mode == "appointment":
            return APPOINTMENT_TABLE, APPOINTMENT_ID_COLUMN
        return timeline.table, TABLE_ID_COLUMN

    async def _find_timeline_records(self, keys: list[str]) -> dict[str, list[int]]:
        table, id_column = self._timeline_table()
        return await self._client.ids_by_keys(table, id_column, self._settings.timeline.key_field, keys)

    async def _timeline_entry(self, item: WriteBackItem, entry: TimelineEntry) -> str | None:
        timeline = self._settings.timeline
        if timeline.mode == "off":
            return None
        person_id = _record_id(item.record_id, "person")
        async with self._locks.hold(f"timeline:{item.key}"):
            existing = await self.timeline_lookups.get(item.key)
            if timeline.mode == "appointment":
                appointment = self._appointment(item, person_id, entry)
                if not existing:
                    return str(await self._client.create_appointment(appointment))
                text = [{"op": "replace", "path": "/Description", "value": appointment["Description"]}]
                await self._client.patch_entity("Appointment", existing[0], text)
            else:
                row = self._table_row(item, person_id, entry)
                if not existing:
                    return str(await self._client.insert_table_row(timeline.table, row))
                await self._client.update_table_row(timeline.table, existing[0], row)
        return str(existing[0])

    def _template_values(self, entry: TimelineEntry | CaseFeedback) -> dict[str, Any]:
        values: dict[str, Any] = {
            "rating": entry.rating,
            "score": entry.score,
            "category": entry.category,
            "comment": truncate(entry.comment, self._settings.comment_max_length),
        }
        if isinstance(entry, TimelineEntry):
            values |= {
                "campaign": entry.campaign,
                "channel": entry.channel,
                "ticket": entry.case_id,
                "answered_at": _display_time(entry.answered_at),
            }
        return values

    def _appointment(self, item: WriteBackItem, person_id: int, entry: TimelineEntry) -> dict[str, Any]:
        timeline = self._settings.timeline
        when = entry.answered_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        appointment: dict[str, Any] = {
            "Person": {"PersonId": person_id},
            "StartDate": when,
            "EndDate": when,
            "Type": timeline.appointment_type,
            "Completed": "Completed",
            "Description": render(timeline.template, self._template_values(entry)),
            **custom_fields_body({timeline.key_field: item.key}),
        }
        if timeline.task_id is not None:
            appointment["Task"] = {"TaskListItemId": timeline.task_id}
        if timeline.associate_id is not None:
            appointment["Associate"] = {"AssociateId": timeline.associate_id}
        return appointment

    def _table_row(self, item: WriteBackItem, person_id: int, entry: TimelineEntry) -> dict[str, Any]:
        columns = self._settings.timeline.columns.mapped()
        values: dict[str, Any] = {
            "person": person_id,
            "rating": entry.rating,
            "score": entry.score,
            "category": entry.category.value if entry.category else None,
            "comment": truncate(entry.comment, self._settings.comment_max_length),
            "answered_at": entry.answered_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "campaign": entry.campaign,
            "ticket": int(entry.case_id) if entry.case_id and entry.case_id.isdigit() else None,
        }
        row = {column: values[name] for name, column in columns.items() if values[name] is not None}
        row[self._settings.timeline.key_field] = item.key
        return row

    # -- case feedback

    async def _case_feedback(self, item: WriteBackItem, feedback: CaseFeedback) -> str:
        ticket_id = _record_id(item.record_id, "ticket")
        ticket = self._settings.ticket
        values: dict[str, Any] = {}
        if ticket.rating_field:
            values[ticket.rating_field] = feedback.rating
        if ticket.comment_field:
            values[ticket.comment_field] = truncate(feedback.comment, self._settings.comment_max_length) or ""
        if ticket.processed_field:
            values[ticket.processed_field] = feedback.processed_at
        if ticket.received_field:
            values[ticket.received_field] = True
        operations = field_operations(values)
        status_id = self._status_id(feedback.set_status)
        if status_id is not None:
            operations.append({"op": "replace", "path": "/Status/TicketStatusId", "value": status_id})
        if operations:
            await self._client.patch_entity("Ticket", ticket_id, operations)
        if feedback.internal_comment and ticket.internal_message:
            await self._internal_message(item, ticket_id, feedback)
        return str(ticket_id)

    def _status_id(self, requested: str | None) -> int | None:
        ticket = self._settings.ticket
        if requested is None:
            return ticket.status_after_feedback
        if requested in ticket.status_ids:
            return ticket.status_ids[requested]
        if requested.isdigit():
            return int(requested)
        raise SkippableError(f"no TicketStatusId for status {requested!r}: add it to ticket.status_ids")

    async def _internal_message(self, item: WriteBackItem, ticket_id: int, feedback: CaseFeedback) -> None:
        message_id = message_id_for(item.key)
        text = render(self._settings.ticket.message_template, self._template_values(feedback))
        html_text = html.escape(text).replace("\n", "<br>")
        async with self._locks.hold(f"message:{item.key}"):
            existing = await self._client.ticket_message_ids(ticket_id, message_id)
            if existing:
                await self._client.patch_entity(
                    "TicketMessage",
                    existing[0],
                    [
                        {"op": "replace", "path": "/Body", "value": text},
                        {"op": "replace", "path": "/HtmlBody", "value": html_text},
                    ],
                )
                return
            await self._client.post_ticket_message(
                {
                    "Ticket": {"TicketId": ticket_id},
                    "Slevel": "Internal",
                    "Type": "Html",
                    "Author": "CX Hub",
                    "Body": text,
                    "HtmlBody": html_text,
                    "MessageId": message_id,
                    "Important": False,
                }
            )
