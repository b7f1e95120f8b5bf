"""Write-back items -> ``$batch`` operations, and the batch's replies -> one ``WriteBackResult`` per item.

- person summary: one PATCH of the contact's summary columns (``If-Match: *``: update only, a deleted contact
  is a failed item, never a new empty contact); several summaries of one contact in a batch coalesce into one
  PATCH carrying the newest;
- person opt-out: the contact's opt-out columns (flag, date, reason; cleared by an opt-in), in the same PATCH
  as the contact's summary when both are in the batch;
- timeline entry: an upsert (PATCH by id) of a ``cxhub_surveyresponse`` activity whose id is a uuid5 of the
  hub's key, regarding the case (or the contact without a case), with the contact as its Customer party in
  the same body (a deep insert of ``<activity>_activity_parties``): it shows on the case's timeline and on
  the contact's. A retry updates the same row, and the party list it carries replaces the Customer parties
  the activity has, so the contact stays its one party;
- case feedback: the incident's feedback columns (and status reason), plus an internal note upserted with a
  uuid5 id, as one changeset: the note never exists without the columns.

Groups go in batches of at most ``batch_requests`` requests with continue-on-error, so one bad record
fails alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from hub import (
    CaseFeedback,
    PersonOptOut,
    PersonSummary,
    TimelineEntry,
    TransientError,
    WriteBackItem,
    WriteBackResult,
)
from hub_dynamics.batch import Operation, PartReply
from hub_dynamics.client import DataverseClient
from hub_dynamics.config import DynamicsSettings
from hub_dynamics.mapping import ENTITY_SETS, hub_id, odata_datetime, record_ref

log = structlog.get_logger("hub_dynamics.writeback")

#: ActivityParty.participationtypemask of the contact who answered: Customer (a custom activity table
#: accepts every party type; the contact's timeline shows the activities it is a party of)
CUSTOMER = 11
#: an opt-out reason is cut to the length of the solution's reason column
OPT_OUT_REASON_LENGTH = 200


@dataclass
class Group:
    """The operations of one or more items that succeed or fail together."""

    items: list[WriteBackItem]
    operations: list[Operation]
    remote_id: str | None = None


def _cut(text: str | None, limit: int) -> str | None:
    return text[:limit] if text else text


class WriteBack:
    def __init__(self, client: DataverseClient, settings: DynamicsSettings) -> None:
        self.client = client
        self.settings = settings

    # -- operations -----------------------------------------------------------------------------

    def _category(self, category: object) -> int | None:
        return self.settings.category_options.get(str(category)) if category else None

    def summary(self, record_id: str, summary: PersonSummary) -> Operation:
        return self._contact_patch(record_id, self.summary_values(summary))

    def summary_values(self, summary: PersonSummary) -> dict[str, Any]:
        values: dict[str, Any] = {
            "latest_score": summary.latest_rating,
            "latest_category": self._category(summary.latest_category),
            "latest_date": odata_datetime(summary.latest_date),
            "latest_comment": _cut(summary.latest_comment, self.settings.comment_max_length),
            "average_rating": round(summary.average_rating, 2),
            "average_rating_30_days": round(summary.average_rating_30_days, 2)
            if summary.average_rating_30_days is not None
            else None,
            "count": summary.count,
        }
        return {column: values[name] for name, column in self.settings.contact.mapped().items()}

    def opt_out_values(self, opt_out: PersonOptOut) -> dict[str, Any]:
        """Flag, date and reason of an opt-out; an opt-in clears all three (``PersonOptOut.shown``)."""
        shown = opt_out.shown()
        values = shown | {
            "changed_at": odata_datetime(shown["changed_at"]) if shown["changed_at"] else None,
            "reason": _cut(shown["reason"], OPT_OUT_REASON_LENGTH),
        }
        return {column: values[name] for name, column in self.settings.opt_out.mapped().items()}

    @staticmethod
    def _contact_patch(record_id: str, body: dict[str, Any]) -> Operation:
        """Update only (``If-Match: *``): a deleted contact fails the item instead of coming back empty."""
        return Operation("PATCH", f"contacts({record_id})", body, {"If-Match": "*"})

    def timeline(self, item: WriteBackItem, entry: TimelineEntry) -> tuple[str, Operation]:
        timeline = self.settings.timeline
        row_id = hub_id(item.key)
        comment = _cut(entry.comment, self.settings.comment_max_length)
        body: dict[str, Any] = {
            "subject": f"Customer feedback ({entry.campaign}): {entry.rating}"
            + (f" ({entry.category})" if entry.category else ""),
            "description": comment,
            "actualend": odata_datetime(entry.answered_at),
        }
        optional = {
            timeline.score_column: entry.rating,
            timeline.category_column: self._category(entry.category),
            timeline.comment_column: comment,
            timeline.response_id_column: entry.response_id,
        }
        body.update({column: value for column, value in optional.items() if column})
        table, record = record_ref(entry.case_id or "") or ("contact", item.record_id)
        body[f"regardingobjectid_{table}_{timeline.table}@odata.bind"] = f"/{ENTITY_SETS[table]}({record})"
        # the whole party list every time: an update replaces the Customer parties, never adds a second
        body[f"{timeline.table}_activity_parties"] = [
            {
                "partyid_contact@odata.bind": f"/contacts({item.record_id.lower()})",
                "participationtypemask": CUSTOMER,
            }
        ]
        return row_id, Operation("PATCH", f"{timeline.entity_set}({row_id})", body)

    def feedback(self, item: WriteBackItem, feedback: CaseFeedback) -> list[Operation]:
        """An incident's columns and note; an opportunity has no feedback columns, only the note."""
        case = self.settings.case
        table, record = record_ref(item.record_id) or ("incident", item.record_id)
        comment = _cut(feedback.comment, self.settings.comment_max_length)
        body: dict[str, Any] = {
            column: value
            for column, value in (
                (case.score_column, feedback.rating),
                (case.comment_column, comment),
                (case.date_column, odata_datetime(feedback.processed_at)),
            )
            if column
        }
        if feedback.set_status and feedback.set_status in case.status_reasons:
            body["statuscode"] = case.status_reasons[feedback.set_status]
        operations: list[Operation] = []
        if table == "incident":
            operations.append(Operation("PATCH", f"incidents({record})", body, {"If-Match": "*"}))
        if feedback.internal_comment and case.internal_note:
            note = {
                "subject": case.note_subject,
                "notetext": f"Rating {feedback.rating}"
                + (f" ({feedback.category})" if feedback.category else "")
                + (f"\n{comment}" if comment else ""),
                f"objectid_{table}@odata.bind": f"/{ENTITY_SETS[table]}({record})",
            }
            operations.append(Operation("PATCH", f"annotations({hub_id(item.key + ':note')})", note))
        return operations

    def groups(self, batch: Sequence[WriteBackItem]) -> tuple[list[Group], list[WriteBackResult]]:
        """The batch's groups, and the results of items settled without a request (bad ids, nothing to write)."""
        groups: list[Group] = []
        settled: list[WriteBackResult] = []
        people: dict[str, list[WriteBackItem]] = {}
        for item in batch:
            if record_ref(item.record_id) is None:
                settled.append(WriteBackResult.failed(item, f"{item.record_id!r} is not a Dataverse id"))
                continue
            payload = item.payload
            if isinstance(payload, PersonSummary | PersonOptOut):
                people.setdefault(item.record_id.lower(), []).append(item)
            elif isinstance(payload, TimelineEntry):
                if not self.settings.timeline.enabled:
                    settled.append(WriteBackResult.ok(item))
                    continue
                row_id, operation = self.timeline(item, payload)
                groups.append(Group([item], [operation], row_id))
            else:
                operations = self.feedback(item, payload)
                if operations:
                    groups.append(Group([item], operations, item.record_id))
                else:  # an opportunity without a note: nothing of it is kept in Dataverse
                    settled.append(WriteBackResult.ok(item))
        for record_id, items in people.items():
            body = self.contact_body(items)
            if body:
                groups.append(Group(items, [self._contact_patch(record_id, body)], record_id))
            else:  # no column mapped for what these items carry (opt-outs with opt_out all unset)
                log.info("dynamics.contact_columns_not_mapped", items=len(items))
                settled += [WriteBackResult.ok(item) for item in items]
        return groups, settled

    def contact_body(self, items: Sequence[WriteBackItem]) -> dict[str, Any]:
        """The columns one PATCH writes on a contact: the newest summary's and the newest opt-out's.

        An opt-out travelling with a summary therefore costs no request of its own, and of two opt-out
        changes of one contact in a batch only the newer (``changed_at``) is written.
        """
        summaries = [i.payload for i in items if isinstance(i.payload, PersonSummary)]
        opt_outs = [i.payload for i in items if isinstance(i.payload, PersonOptOut)]
        body: dict[str, Any] = {}
        if summaries:
            body |= self.summary_values(max(summaries, key=lambda summary: summary.latest_date))
        if opt_outs:
            body |= self.opt_out_values(max(opt_outs, key=lambda opt_out: opt_out.changed_at))
        return body

    # -- sending --------------------------------------------------------------------------------

    def _chunks(self, groups: list[Group]) -> list[list[Group]]:
        chunks: list[list[Group]] = [[]]
        size = 0
        for group in groups:
            if chunks[-1] and size + len(group.operations) > self.client.batch_requests:
                chunks.append([])
                size = 0
            chunks[-1].append(group)
            size += len(group.operations)
        return [chunk for chunk in chunks if chunk]

    async def write(self, batch: Sequence[WriteBackItem]) -> list[WriteBackResult]:
        groups, results = self.groups(batch)
        pending = list(groups)
        while pending:
            chunk = self._chunks(pending)[0]
            try:
                replies = await self.client.execute_batch([g.operations for g in chunk])
            except TransientError as exc:
                if not results and len(pending) == len(groups):
                    raise  # nothing reached Dataverse: the hub holds the whole connector
                if exc.retry_after and not exc.sent:
                    self.client.budget.hold(exc.retry_after)
                results += [
                    WriteBackResult.transient(item, str(exc), exc.retry_after, sent=exc.sent)
                    for group in pending
                    for item in group.items
                ]
                return results
            finally:
                await self.client.share_usage()
            results += self._results(chunk, replies)
            pending = pending[len(chunk) :]
        return results

    def _results(self, chunk: list[Group], replies: list[PartReply]) -> list[WriteBackResult]:
        results: list[WriteBackResult] = []
        position = 0
        for group in chunk:
            # a failed changeset answers with one error part; a successful one with one part per request
            first = replies[position] if position < len(replies) else None
            width = 1 if first is not None and not first.ok else len(group.operations)
            answer = replies[position : position + width]
            position += width
            failed = next((r for r in answer if not r.ok), None)
            if len(answer) < width or not answer:
                failure = "missing from the $batch reply"
                results += [WriteBackResult.transient(item, failure) for item in group.items]
            elif failed is None:
                results += [WriteBackResult.ok(item, group.remote_id) for item in group.items]
            else:
                results += [self._failure(item, failed) for item in group.items]
        return results

    def _failure(self, item: WriteBackItem, reply: PartReply) -> WriteBackResult:
        code, message = reply.error()
        error = f"HTTP {reply.status} {code}: {message}".strip()
        log.warning("dynamics.write_failed", item_id=item.id, status=reply.status, code=code)
        if reply.status == 429 or reply.status >= 500:
            return WriteBackResult.transient(item, error, sent=reply.status != 429)
        return WriteBackResult.failed(item, error)
