"""Writing answers back with as few API calls as Salesforce allows: sObject Collections, 200 records a call.

- person summaries: one Contact update per contact (ten answers in a batch become one write);
- timeline entries: ``Survey_Response__c`` upserted by the external id ``Response_Id__c`` (the hub's response
  id), so a retried write updates the record it created instead of adding one;
- case feedback: one Case update per case; the optional internal CaseComment / Chatter post is added only when
  the case's ``CXHub_Response_Id__c`` does not yet hold this answer (read in one query for the batch).

Per-record errors are classified: lock contention and limits are retried, anything else is this item's fault.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from hub import (
    CaseFeedback,
    PersonSummary,
    TimelineEntry,
    TransientError,
    WriteBackItem,
    WriteBackResult,
)
from hub_salesforce.client import COLLECTION_LIMIT, RecordError, SalesforceClient, SaveResult
from hub_salesforce.config import SalesforceSettings
from hub_salesforce.soql import quote_list, select

#: per-record status codes worth retrying later
TRANSIENT_CODES = frozenset(
    {"UNABLE_TO_LOCK_ROW", "REQUEST_LIMIT_EXCEEDED", "SERVER_UNAVAILABLE", "REQUEST_RUNNING_TOO_LONG"}
)

T = TypeVar("T")
Results = dict[int, WriteBackResult]


def chunks(values: Sequence[T], size: int = COLLECTION_LIMIT) -> list[Sequence[T]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if hasattr(value, "value"):  # enums
        return value.value
    return value


def outcome(item: WriteBackItem, result: SaveResult) -> WriteBackResult:
    if result.success:
        return WriteBackResult.ok(item, result.id)
    if set(result.codes) & TRANSIENT_CODES:
        return WriteBackResult.transient(item, result.message)
    return WriteBackResult.failed(item, result.message or "Salesforce refused the record")


class Writer:
    """Turns a batch of write-back items into sObject Collections calls and their results into one per item."""

    def __init__(self, client: SalesforceClient, settings: SalesforceSettings) -> None:
        self.client = client
        self.settings = settings

    def _text(self, value: str | None) -> str | None:
        return value[: self.settings.comment_max_length] if value else value

    async def write(self, batch: Sequence[WriteBackItem]) -> list[WriteBackResult]:
        results: Results = {}
        summaries = [i for i in batch if isinstance(i.payload, PersonSummary)]
        entries = [i for i in batch if isinstance(i.payload, TimelineEntry)]
        feedback = [i for i in batch if isinstance(i.payload, CaseFeedback)]
        stop: TransientError | None = None
        for step, items in (
            (self._summaries, summaries),
            (self._timeline, entries),
            (self._case_feedback, feedback),
        ):
            if not items:
                continue
            if stop is not None:
                results.update(
                    {i.id: WriteBackResult.transient(i, str(stop), stop.retry_after) for i in items}
                )
                continue
            try:
                results.update(await step(items))
            except TransientError as exc:
                stop = exc
                results.update({i.id: WriteBackResult.transient(i, str(exc), exc.retry_after) for i in items})
        if stop is not None and not any(r.status == "ok" for r in results.values()):
            raise stop  # nothing got through: stop the run and honour retry_after
        return [results[i.id] for i in batch]

    async def _apply(
        self,
        groups: dict[str, list[WriteBackItem]],
        record: Callable[[str, WriteBackItem], dict[str, Any]],
        send: Callable[[list[dict[str, Any]]], Any],
    ) -> Results:
        """Send the newest item of each group as one record, 200 a call; every item shares its group's result."""
        results: Results = {}
        keys = list(groups)
        for part in chunks(keys):
            records = [record(key, groups[key][-1]) for key in part]
            try:
                saved: list[SaveResult] = await send(records)
            except RecordError as exc:
                for key in part:
                    results.update({i.id: WriteBackResult.failed(i, str(exc)) for i in groups[key]})
                continue
            for key, result in zip(part, saved, strict=True):
                results.update({i.id: outcome(i, result) for i in groups[key]})
        return results

    # -- person summary ---------------------------------------------------------------------------

    async def _summaries(self, items: list[WriteBackItem]) -> Results:
        groups: dict[str, list[WriteBackItem]] = defaultdict(list)
        for item in sorted(items, key=_summary_order):
            groups[item.record_id].append(item)
        mapped = self.settings.contact.mapped()

        def record(contact_id: str, item: WriteBackItem) -> dict[str, Any]:
            summary = item.payload
            assert isinstance(summary, PersonSummary)
            values = {name: getattr(summary, name) for name in mapped}
            if "latest_comment" in values:
                values["latest_comment"] = self._text(summary.latest_comment)
            fields = {mapped[name]: _value(value) for name, value in values.items()}
            return {"attributes": {"type": "Contact"}, "id": contact_id, **fields}

        return await self._apply(groups, record, self.client.update_records)

    # -- timeline ---------------------------------------------------------------------------------

    async def _timeline(self, items: list[WriteBackItem]) -> Results:
        target = self.settings.response_object
        if not target.enabled:
            return {i.id: WriteBackResult.ok(i) for i in items}
        groups: dict[str, list[WriteBackItem]] = defaultdict(list)
        for item in items:
            assert isinstance(item.payload, TimelineEntry)
            groups[item.payload.response_id].append(item)
        value_fields = target.value_fields()

        def record(response_id: str, item: WriteBackItem) -> dict[str, Any]:
            entry = item.payload
            assert isinstance(entry, TimelineEntry)
            fields: dict[str, Any] = {
                "attributes": {"type": target.object},
                target.external_id_field: response_id,
                target.contact_field: item.record_id,
            }
            if target.case_field and entry.case_id:
                fields[target.case_field] = entry.case_id
            for name, field in value_fields.items():
                value = getattr(entry, name)
                fields[field] = _value(self._text(value) if name == "comment" else value)
            return fields

        async def send(records: list[dict[str, Any]]) -> list[SaveResult]:
            return await self.client.upsert_records(target.object, target.external_id_field, records)

        return await self._apply(groups, record, send)

    # -- case feedback ----------------------------------------------------------------------------

    async def _case_feedback(self, items: list[WriteBackItem]) -> Results:
        case = self.settings.case
        groups: dict[str, list[WriteBackItem]] = defaultdict(list)
        for item in sorted(items, key=_feedback_order):
            groups[item.record_id].append(item)
        results = await self._notes({key: group[-1] for key, group in groups.items()})
        for case_id in list(groups):
            failed = results.get(groups[case_id][-1].id)
            if failed is not None:  # the note could not be added: leave the case for the retry
                results.update(
                    {i.id: failed.model_copy(update={"item_id": i.id}) for i in groups.pop(case_id)}
                )
        mapped = case.mapped()

        def record(case_id: str, item: WriteBackItem) -> dict[str, Any]:
            feedback = item.payload
            assert isinstance(feedback, CaseFeedback)
            values = {name: getattr(feedback, name) for name in mapped}
            if "comment" in values:
                values["comment"] = self._text(feedback.comment)
            fields = {mapped[name]: _value(value) for name, value in values.items()}
            status = (
                case.statuses.get(feedback.set_status, feedback.set_status) if feedback.set_status else None
            )
            if status or case.status_after_feedback:
                fields["Status"] = status or case.status_after_feedback
            return {"attributes": {"type": "Case"}, "id": case_id, **fields}

        results.update(await self._apply(groups, record, self.client.update_records))
        return results

    def _note_text(self, feedback: CaseFeedback) -> str:
        return self.settings.case.note_template.format(
            rating=feedback.rating,
            score=feedback.score,
            category=feedback.category.value if feedback.category else "",
            comment=feedback.comment or "",
        ).strip()

    async def _notes(self, newest: dict[str, WriteBackItem]) -> Results:
        """Add the internal CaseComment / Chatter post of each case that has not had it for this answer.

        Returns results only for the items whose note failed.
        """
        case = self.settings.case

        def wants(item: WriteBackItem) -> bool:
            feedback = item.payload
            assert isinstance(feedback, CaseFeedback)
            return case.chatter_post or (case.internal_comment and feedback.internal_comment)

        due = {case_id: item for case_id, item in newest.items() if wants(item)}
        if not due:
            return {}
        if case.response_id_field:
            rows = await self.client.query_all(
                select(["Id", case.response_id_field], "Case", f"Id IN {quote_list(list(due))}")
            )
            noted = {row["Id"]: row.get(case.response_id_field) for row in rows}
            due = {
                case_id: item
                for case_id, item in due.items()
                if noted.get(case_id) != getattr(item.payload, "response_id", None)
            }
        failures: Results = {}
        comments = {
            case_id: item
            for case_id, item in due.items()
            if case.internal_comment and getattr(item.payload, "internal_comment", False)
        }
        for part in chunks(list(comments)):
            records = [
                {
                    "attributes": {"type": "CaseComment"},
                    "ParentId": case_id,
                    "IsPublished": False,
                    "CommentBody": self._note_text(_feedback(comments[case_id])),
                }
                for case_id in part
            ]
            try:
                saved = await self.client.create_records(records)
            except RecordError as exc:
                failures.update({comments[c].id: WriteBackResult.failed(comments[c], str(exc)) for c in part})
                continue
            for case_id, result in zip(part, saved, strict=True):
                if not result.success:
                    failures[comments[case_id].id] = outcome(comments[case_id], result)
        if case.chatter_post:
            for case_id, item in due.items():
                if item.id in failures:
                    continue
                try:
                    await self.client.post_chatter(case_id, self._note_text(_feedback(item)))
                except RecordError as exc:
                    failures[item.id] = WriteBackResult.failed(item, str(exc))
        return failures


def _feedback(item: WriteBackItem) -> CaseFeedback:
    assert isinstance(item.payload, CaseFeedback)
    return item.payload


def _summary_order(item: WriteBackItem) -> tuple[Any, ...]:
    assert isinstance(item.payload, PersonSummary)
    return (item.payload.latest_date, item.payload.count, item.id)


def _feedback_order(item: WriteBackItem) -> tuple[Any, ...]:
    assert isinstance(item.payload, CaseFeedback)
    return (item.payload.processed_at, item.id)
