"""Writing answers back with as few API calls as Salesforce allows: sObject Collections of 200 records, five
of them in one Composite request (1,000 records a call), or one Bulk API 2.0 job for a large group.

- person summaries: one Contact update per contact (ten answers in a batch become one write), carrying the
  contact's opt-out fields too when an opt-out is in the batch (``opt_out.py``);
- timeline entries: ``Survey_Response__c`` upserted by the external id ``Response_Id__c`` (the hub's response
  id), so a retried write updates the record it created instead of adding one;
- case feedback: one Case update per case. The optional internal CaseComment and Chatter posts (FeedItem
  records on the Case and/or the contact) are added only when the case's ``CXHub_Response_Id__c`` does not
  yet hold this answer (read in one query per 200 cases, five queries a call), and then in one Composite
  request with allOrNone together with the Case update that writes that marker: either both are saved or
  neither, so a retry after a failure notes the answer once, and a retry after success finds the marker and
  notes nothing. 200 cases with a comment and a post each cost that query and one Composite call, where a
  Chatter post through the Connect API would cost one call per post.

A group of ``bulk_threshold`` records or more (a full re-sync hands the connector up to ``bulk_batch_size``
items of one kind) goes as one Bulk API 2.0 ingest job (``bulk.py``): a handful of calls instead of one per
200 records. Results stay per item either way: each item gets the outcome of its own record.

A Composite request is one API call whatever it carries, and without allOrNone each of its Collections
subrequests saves or refuses each record on its own, exactly as a plain Collections call would: so a batch
of 1,000 records costs one call, and every item still gets its own record's result.

Per-record errors are classified: lock contention and limits are retried, and so are records a Bulk job did
not process; anything else is this item's fault.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import structlog

from hub import (
    CaseFeedback,
    PersonSummary,
    TimelineEntry,
    TransientError,
    WriteBackItem,
    WriteBackResult,
)
from hub_salesforce.bulk import UNPROCESSED, BulkIngest, has_null_marker
from hub_salesforce.client import (
    COLLECTION_LIMIT,
    COMPOSITE_COLLECTION_LIMIT,
    TRANSIENT_STATUSES,
    UPDATE,
    Collection,
    RecordError,
    SalesforceClient,
    Saved,
    SaveResult,
    upsert_collection,
)
from hub_salesforce.config import SalesforceSettings
from hub_salesforce.opt_out import contact_order, is_contact_item, opt_out_fields, writes_nothing
from hub_salesforce.soql import is_record_id, quote_list, select

log = structlog.get_logger("hub_salesforce.writeback")

#: per-record status codes worth retrying later
TRANSIENT_CODES = frozenset(
    {
        "UNABLE_TO_LOCK_ROW",
        "REQUEST_LIMIT_EXCEEDED",
        "SERVER_UNAVAILABLE",
        "REQUEST_RUNNING_TOO_LONG",
        UNPROCESSED,
    }
)

#: codes of records undone only because another record of the same transaction failed
ROLLED_BACK_CODES = frozenset({"ALL_OR_NONE_OPERATION_ROLLED_BACK", "PROCESSING_HALTED"})
#: CaseComment.CommentBody holds 4,000 bytes, counted in UTF-8 after HTML encoding (an "&" is five);
#: FeedItem.Body is cut the same cautious way
COMMENT_BODY_LIMIT = 4000
FEED_BODY_LIMIT = 10000

T = TypeVar("T")
Results = dict[int, WriteBackResult]
Send = Callable[[list[dict[str, Any]]], Awaitable[list[SaveResult]]]
#: sends parts of up to 200 records in one API call; one answer per part
SendParts = Callable[[list[list[dict[str, Any]]]], Awaitable[list[Saved]]]


def cut_utf16(text: str, limit: int) -> str:
    """At most ``limit`` characters as Salesforce counts them: UTF-16 code units (an emoji is two)."""
    if len(text) * 2 <= limit:
        return text
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return text[:index]
    return text


def cut_encoded(text: str, limit: int) -> str:
    """The longest start of ``text`` whose HTML-encoded UTF-8 form fits ``limit`` bytes.

    Salesforce measures CaseComment bodies in bytes after HTML encoding when they arrive through the API,
    so 4,000 characters of Norwegian text, or a few ampersands, are STRING_TOO_LONG.
    """
    if len(html.escape(text).encode("utf-8")) <= limit:
        return text
    low, high = 0, len(text)
    while low < high:  # binary search on the prefix length: encoded size grows with it
        middle = (low + high + 1) // 2
        if len(html.escape(text[:middle]).encode("utf-8")) <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def chunks(values: Sequence[T], size: int = COLLECTION_LIMIT) -> list[Sequence[T]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        # UTC with milliseconds: the dateTime form both the REST API and Bulk API CSV accept
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
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
    """Turns a batch of write-back items into Collections/Composite calls and their results into one per item."""

    def __init__(self, client: SalesforceClient, settings: SalesforceSettings) -> None:
        self.client = client
        self.settings = settings
        self.bulk = BulkIngest(client)

    def _use_bulk(self, count: int) -> bool:
        """Salesforce recommends Bulk API 2.0 from about 2,000 records; below, Collections take fewer calls."""
        return 0 < self.settings.bulk_threshold <= count

    def _text(self, value: str | None) -> str | None:
        return cut_utf16(value, self.settings.comment_max_length) if value else value

    async def write(self, batch: Sequence[WriteBackItem]) -> list[WriteBackResult]:
        results: Results = {}
        summaries = [i for i in batch if is_contact_item(i)]  # opt-outs ride with the summaries
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
                    {
                        i.id: WriteBackResult.transient(i, str(stop), stop.retry_after, sent=stop.sent)
                        for i in items
                    }
                )
                continue
            try:
                results.update(await step(items))
            except TransientError as exc:
                stop = exc
                results.update(
                    {
                        i.id: WriteBackResult.transient(i, str(exc), exc.retry_after, sent=exc.sent)
                        for i in items
                    }
                )
        if stop is not None and not any(r.status == "ok" for r in results.values()):
            raise stop  # nothing got through: stop the run and honour retry_after
        return [results[i.id] for i in batch]

    async def _apply(
        self,
        groups: dict[str, list[WriteBackItem]],
        record: Callable[[str, WriteBackItem], dict[str, Any]],
        collection: Collection,
        bulk: Send | None = None,
    ) -> Results:
        """Send the newest item of each group as one record; every item shares its group's result.

        Records go 200 to an sObject Collections part and up to five parts to one API call (a Composite
        request, ``SalesforceClient.save_collections``), or all in one ``bulk`` job when there are at least
        ``bulk_threshold`` of them. A record holding the literal text ``#N/A``, which Bulk CSV would turn
        into null, still goes through Collections. When Salesforce cannot be reached after some calls got
        through, what they saved keeps its results and the rest waits for the next attempt.
        """
        results: Results = {}
        records = {key: record(key, group[-1]) for key, group in groups.items()}
        keys = list(records)
        steps: list[tuple[Sequence[Sequence[str]], SendParts]] = []
        if bulk is not None and self._use_bulk(len(keys)):
            kept_back = {key for key in keys if has_null_marker(records[key])}
            bulk_keys = [key for key in keys if key not in kept_back]
            if bulk_keys:
                steps.append(([bulk_keys], _one_part(bulk)))
            keys = [key for key in keys if key in kept_back]
        for parts in chunks(chunks(keys), COMPOSITE_COLLECTION_LIMIT):
            steps.append((parts, partial(self.client.save_collections, collection)))
        for index, (parts, send) in enumerate(steps):
            try:
                saved = await send([[records[key] for key in part] for part in parts])
            except TransientError as exc:
                if not results:
                    raise  # nothing of this step got through: the run stops and honours retry_after
                # this call's records may have been sent; the later calls' certainly were not
                for later, (later_parts, _) in enumerate(steps[index:]):
                    sent = exc.sent if later == 0 else False
                    for key in (key for part in later_parts for key in part):
                        results.update(
                            {
                                i.id: WriteBackResult.transient(i, str(exc), exc.retry_after, sent=sent)
                                for i in groups[key]
                            }
                        )
                break
            for part, answer in zip(parts, saved, strict=True):
                for key, result in _per_record(part, answer):
                    results.update({i.id: _item_result(i, result) for i in groups[key]})
        return results

    # -- person summary ---------------------------------------------------------------------------

    async def _summaries(self, items: list[WriteBackItem]) -> Results:
        groups: dict[str, list[WriteBackItem]] = defaultdict(list)
        for item in sorted(items, key=contact_order):
            groups[item.record_id].append(item)
        unwritten = self._contacts_without_fields(groups)
        mapped = self.settings.contact.mapped()

        def record(contact_id: str, item: WriteBackItem) -> dict[str, Any]:
            summary = item.payload
            opt_out = self._opt_out_fields(groups[contact_id])
            if not isinstance(summary, PersonSummary):  # opt-outs only
                return {"attributes": {"type": "Contact"}, "id": contact_id, **opt_out}
            values = {name: getattr(summary, name) for name in mapped}
            if "latest_comment" in values:
                values["latest_comment"] = self._text(summary.latest_comment)
            fields = {mapped[name]: _value(value) for name, value in values.items()}
            return {"attributes": {"type": "Contact"}, "id": contact_id, **fields, **opt_out}

        async def bulk(records: list[dict[str, Any]]) -> list[SaveResult]:
            return await self.bulk.update("Contact", records)

        return unwritten | await self._apply(groups, record, UPDATE, bulk)

    def _opt_out_fields(self, group: list[WriteBackItem]) -> dict[str, Any]:
        """The opt-out fields a contact's update carries: its newest opt-out change's, if it has one."""
        return opt_out_fields(self.settings.opt_out, group)

    def _contacts_without_fields(self, groups: dict[str, list[WriteBackItem]]) -> Results:
        """Take out the contacts whose items write no field (opt-outs, none mapped): written, without a call."""
        empty = [contact for contact, group in groups.items() if writes_nothing(self.settings.opt_out, group)]
        if empty:
            log.info("salesforce.opt_out_not_mapped", contacts=len(empty))
        return {i.id: WriteBackResult.ok(i) for contact in empty for i in groups.pop(contact)}

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

        async def bulk(records: list[dict[str, Any]]) -> list[SaveResult]:
            return await self.bulk.upsert(target.object, target.external_id_field, records)

        return await self._apply(
            groups, record, upsert_collection(target.object, target.external_id_field), bulk
        )

    # -- case feedback ----------------------------------------------------------------------------

    async def _case_feedback(self, items: list[WriteBackItem]) -> Results:
        """One Case update per case; a case whose answer is still to be noted gets its update and its notes
        in one Composite transaction, so the marker that says "noted" exists exactly when the notes do."""
        case = self.settings.case
        groups: dict[str, list[WriteBackItem]] = defaultdict(list)
        for item in sorted(items, key=_feedback_order):
            groups[item.record_id].append(item)
        notes = await self._due_notes({key: group[-1] for key, group in groups.items()})
        mapped = case.mapped()

        def record(case_id: str, item: WriteBackItem) -> dict[str, Any]:
            feedback = item.payload
            assert isinstance(feedback, CaseFeedback)
            values = {name: getattr(feedback, name) for name in mapped}
            if "comment" in values:
                values["comment"] = self._text(feedback.comment)
            if "response_id" in values:
                values["response_id"] = noted_marker(feedback)
            fields = {mapped[name]: _value(value) for name, value in values.items()}
            status = (
                case.statuses.get(feedback.set_status, feedback.set_status) if feedback.set_status else None
            )
            if status or case.status_after_feedback:
                fields["Status"] = status or case.status_after_feedback
            return {"attributes": {"type": "Case"}, "id": case_id, **fields}

        async def bulk(records: list[dict[str, Any]]) -> list[SaveResult]:
            return await self.bulk.update("Case", records)

        plain = {case_id: group for case_id, group in groups.items() if case_id not in notes}
        results = await self._apply(plain, record, UPDATE, bulk)
        noted = [case_id for case_id in groups if case_id in notes]
        for part in chunks(noted):
            results.update(await self._noted(list(part), groups, record, notes))
        return results

    async def _noted(
        self,
        case_ids: list[str],
        groups: dict[str, list[WriteBackItem]],
        record: Callable[[str, WriteBackItem], dict[str, Any]],
        notes: dict[str, list[dict[str, Any]]],
    ) -> Results:
        """Up to 200 cases with their notes, committed all together; at most two Composite calls.

        allOrNone undoes everything when one record fails, so a bad case would hold back every other one.
        The failed subrequest's body names the records at fault: their items fail with Salesforce's error
        (or wait, for lock contention), and the rest are sent once more. If that second call fails too, its
        culprits fail and the others wait for the hub's next attempt: no loop that could spend the budget.
        """
        results: Results = {}
        pending = case_ids
        for attempt in (1, 2):
            try:
                refused = await self._commit_noted(pending, groups, record, notes)
            except RecordError as exc:  # the request itself was refused: every case of it shares the error
                for case_id in pending:
                    results.update({i.id: WriteBackResult.failed(i, str(exc)) for i in groups[case_id]})
                return results
            except TransientError as exc:
                if attempt == 1:
                    raise  # nothing of this step got through: the run stops and honours retry_after
                for case_id in pending:
                    results.update(
                        {
                            i.id: WriteBackResult.transient(i, str(exc), exc.retry_after, sent=exc.sent)
                            for i in groups[case_id]
                        }
                    )
                return results
            if refused is None:
                for case_id in pending:
                    results.update({i.id: WriteBackResult.ok(i, case_id) for i in groups[case_id]})
                return results
            for case_id, result in refused.items():
                results.update({i.id: outcome(i, result) for i in groups[case_id]})
            pending = [case_id for case_id in pending if case_id not in refused]
            if not refused or not pending:
                break  # no culprit named (resending would fail alike), or nothing left to send
        for case_id in pending:
            message = "rolled back with the other cases of a Composite request that failed; retried later"
            results.update({i.id: WriteBackResult.transient(i, message) for i in groups[case_id]})
        return results

    async def _commit_noted(
        self,
        case_ids: list[str],
        groups: dict[str, list[WriteBackItem]],
        record: Callable[[str, WriteBackItem], dict[str, Any]],
        notes: dict[str, list[dict[str, Any]]],
    ) -> dict[str, SaveResult] | None:
        """One Composite call (allOrNone): the Case updates, then the notes, 200 records a subrequest.

        Returns None when everything was saved, else the cases at fault with their error (empty when
        Salesforce named none). 200 cases with a comment and two posts each are 1 + 3 Collections
        subrequests, within Composite's 5.
        """
        owners: list[list[str]] = [case_ids]
        subrequests = [
            self.client.collection_subrequest(
                "PATCH", [record(case_id, groups[case_id][-1]) for case_id in case_ids], "cases"
            )
        ]
        flat = [(case_id, note) for case_id in case_ids for note in notes[case_id]]
        for n, part in enumerate(chunks(flat)):
            owners.append([case_id for case_id, _ in part])
            subrequests.append(
                self.client.collection_subrequest("POST", [note for _, note in part], f"notes{n}")
            )
        if len(subrequests) > COMPOSITE_COLLECTION_LIMIT:
            raise ValueError(f"{len(subrequests)} sObject Collections subrequests in one Composite request")
        answers = await self.client.composite(subrequests)
        if all(answer.succeeded for answer in answers):
            return None
        refused: dict[str, SaveResult] = {}
        for answer, owner in zip(answers, owners, strict=True):
            if answer.succeeded:
                continue
            if answer.status in TRANSIENT_STATUSES:
                raise TransientError(f"composite request: {answer.reference_id}: {answer.error.message}")
            records = answer.record_results()
            if records is not None and len(records) == len(owner):
                for case_id, result in zip(owner, records, strict=True):
                    if not result.success and not _rolled_back(result.codes):
                        refused.setdefault(case_id, result)
            elif not _rolled_back(answer.error.codes):  # the subrequest failed as a whole
                refused.update({case_id: answer.error for case_id in owner if case_id not in refused})
        return refused

    def _note_text(self, feedback: CaseFeedback) -> str:
        return self.settings.case.note_template.format(
            rating=feedback.rating,
            score=feedback.score,
            category=feedback.category.value if feedback.category else "",
            comment=feedback.comment or "",
        ).strip()

    async def _due_notes(self, newest: dict[str, WriteBackItem]) -> dict[str, list[dict[str, Any]]]:
        """The CaseComment and FeedItem records of each case whose answer is not noted yet.

        One query per 200 cases, five of them in one Composite call, reads the marker field (and, for posts on
        the contact, the Case's ContactId): a case already holding this answer's response id was noted by an
        earlier attempt and gets none.
        """
        case = self.settings.case
        feeds = case.chatter_feeds

        def comment_wanted(item: WriteBackItem) -> bool:
            return case.internal_comment and _feedback(item).internal_comment

        due = {case_id: item for case_id, item in newest.items() if feeds or comment_wanted(item)}
        if not due:
            return {}
        marker = case.response_id_field
        contact_needed = "contact" in feeds and any(
            not is_record_id(item.person_record_id) for item in due.values()
        )
        fields = ["Id", *([marker] if marker else []), *(["ContactId"] if contact_needed else [])]
        rows: dict[str, dict[str, Any]] = {}
        if len(fields) > 1:
            # 200 ids a query (a full re-sync's 10,000 would overflow one), five queries a Composite call
            queries = [
                select(fields, "Case", f"Id IN {quote_list(list(part))}") for part in chunks(list(due))
            ]
            for group in chunks(queries, COMPOSITE_COLLECTION_LIMIT):
                for found in await self.client.query_many(list(group)):
                    rows.update({row["Id"]: row for row in found})
        if marker:
            due = {
                case_id: item
                for case_id, item in due.items()
                if not already_noted(rows.get(case_id, {}).get(marker), _feedback(item))
            }
        plan: dict[str, list[dict[str, Any]]] = {}
        for case_id, item in due.items():
            text = self._note_text(_feedback(item))
            notes: list[dict[str, Any]] = []
            if comment_wanted(item):
                notes.append(
                    {
                        "attributes": {"type": "CaseComment"},
                        "ParentId": case_id,
                        "IsPublished": False,
                        "CommentBody": cut_encoded(text, COMMENT_BODY_LIMIT),
                    }
                )
            for feed in feeds:
                parent = case_id if feed == "case" else _contact_of(item, rows.get(case_id, {}))
                if parent is None:
                    log.info("salesforce.no_contact_to_post_on", case_id=case_id, item_id=item.id)
                    continue
                notes.append(
                    {
                        "attributes": {"type": "FeedItem"},
                        "ParentId": parent,
                        "Body": cut_encoded(text, FEED_BODY_LIMIT),
                        "Type": "TextPost",
                    }
                )
            if notes:
                plan[case_id] = notes
        return plan


def noted_marker(feedback: CaseFeedback) -> str:
    """What the Case's marker field holds once this answer is noted: "<response id>+score", and
    "<response id>+comment" once the note carried the customer's comment. A comment given after the score
    (the survey's second page) thus gets a note of its own, and a retry of either gets none."""
    return f"{feedback.response_id}+{'comment' if feedback.comment else 'score'}"


def already_noted(marker: object, feedback: CaseFeedback) -> bool:
    """Whether the Case's marker says this answer needs no (further) note.

    A bare response id was written by earlier versions for an answer noted with or without its comment:
    it counts as fully noted, so an upgrade followed by a full re-sync posts nothing twice.
    """
    rid = feedback.response_id
    return marker in (rid, f"{rid}+comment", noted_marker(feedback))


def _one_part(bulk: Send) -> SendParts:
    """A Bulk job as a sender of parts: one part, all its records; a refused job is that part's error."""

    async def send(parts: list[list[dict[str, Any]]]) -> list[Saved]:
        try:
            return [await bulk(parts[0])]
        except RecordError as exc:
            return [exc]

    return send


def _per_record(part: Sequence[str], answer: Saved) -> list[tuple[str, SaveResult | Exception]]:
    """Each key of a part with its record's result, or with the error that refused the whole part."""
    if isinstance(answer, list):
        return list(zip(part, answer, strict=True))
    return [(key, answer) for key in part]


def _item_result(item: WriteBackItem, result: SaveResult | Exception) -> WriteBackResult:
    if isinstance(result, SaveResult):
        return outcome(item, result)
    if isinstance(result, TransientError):
        return WriteBackResult.transient(item, str(result), result.retry_after, sent=result.sent)
    return WriteBackResult.failed(item, str(result))


def _rolled_back(codes: list[str]) -> bool:
    """Undone because another record or subrequest failed: not this record's fault."""
    return bool(codes) and set(codes) <= ROLLED_BACK_CODES


def _contact_of(item: WriteBackItem, case_row: dict[str, Any]) -> str | None:
    """The contact whose feed gets the post: the person who answered, else the Case's contact."""
    if is_record_id(item.person_record_id):
        return item.person_record_id
    contact = case_row.get("ContactId")
    return str(contact) if is_record_id(contact) else None


def _feedback(item: WriteBackItem) -> CaseFeedback:
    assert isinstance(item.payload, CaseFeedback)
    return item.payload


def _feedback_order(item: WriteBackItem) -> tuple[Any, ...]:
    assert isinstance(item.payload, CaseFeedback)
    return (item.payload.processed_at, item.id)
