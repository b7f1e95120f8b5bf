"""Bulk API 2.0 ingest: one job instead of dozens of sObject Collections calls for a full re-sync.

Writing 10,000 records through sObject Collections takes 50 calls of 200; a Bulk API 2.0 ingest job takes a
handful whatever its size: create the job, upload the CSV, close it, poll its state (with a bounded backoff),
fetch the successful and failed rows. Salesforce recommends Bulk from about 2,000 records, so ``writeback.py``
sends a group of records this way only from ``bulk_threshold`` on. Every HTTP call goes through
``SalesforceClient.request``: the same session, API budget, renewal on INVALID_SESSION_ID and classification
as every other call, and each counts against the org's allowance.

The CSV (Salesforce's "Prepare CSV Files"): UTF-8 without a byte order mark, comma-delimited, LF line
endings (the job says ``lineEnding: LF``), a header of field API names, and a value quoted (``"`` doubled)
only when it holds a comma, a quote, a CR or an LF, so text in any language, emoji and multi-line comments
arrive byte for byte. Nulls: Salesforce ignores an empty value (the field is left as it is) and sets a field
to null for ``#N/A``. Records are the dicts the Collections calls send, so their meaning is kept: a field
that is ``None`` (or ``""``, which Salesforce stores as null anyway) is written ``#N/A``; a field missing
from a record is left empty, i.e. untouched. The one value the format cannot carry is text that is exactly ``#N/A``;
``has_null_marker`` lets the caller send such a record through Collections instead.

Results are mapped back by the record's key column (``Id`` for update, the external id for upsert), never
by position: Salesforce does not keep the upload's row order. A row in neither ``successfulResults`` nor
``failedResults`` was not processed (the job failed or was aborted): it gets a result with the
``BULK_UNPROCESSED`` code, which ``writeback.py`` retries. A job that ends Failed or Aborted without a single
processed row raises ``TransientError`` (the job id in the message); so does a job still running after
``PollPolicy.timeout_seconds``, which is then aborted, so that it cannot race the retry.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import requests
import structlog

from hub import TransientError
from hub_salesforce.client import RecordError, SalesforceClient, SaveResult

log = structlog.get_logger("hub_salesforce.bulk")

#: the CSV value that sets a field to null (an empty value leaves the field as it is)
NULL_MARKER = "#N/A"
#: the status code given to rows a job did not process: retried later
UNPROCESSED = "BULK_UNPROCESSED"
#: an upload may hold 150 MB once Salesforce has base64-encoded it, i.e. 100 MB as sent
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
FINAL_STATES = frozenset({"JobComplete", "Failed", "Aborted"})
RUNNING_STATES = frozenset({"UploadComplete", "InProgress"})


@dataclass(frozen=True)
class PollPolicy:
    """How a job's state is polled: waits grow from ``first_seconds`` by ``factor`` up to ``max_seconds``;
    after ``timeout_seconds`` in all the job is aborted and its records retried later. Every poll is an API
    call, so the waits grow: a job of 10,000 records usually finishes within a few polls."""

    first_seconds: float = 1.0
    factor: float = 2.0
    max_seconds: float = 15.0
    timeout_seconds: float = 600.0

    def delays(self) -> Iterator[float]:
        delay = self.first_seconds
        while True:
            yield delay
            delay = min(delay * self.factor, self.max_seconds)


# --- CSV ------------------------------------------------------------------------------------------


def csv_value(value: Any) -> str:
    """One value as Bulk API CSV text: None and "" are ``#N/A`` (null), booleans true/false, numbers as
    Python writes them back exactly (``repr``; scientific notation is valid for Salesforce doubles)."""
    if value is None or value == "":
        return NULL_MARKER
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def quote(text: str) -> str:
    """Quote a value only when it must be: a comma, a quote, a CR or an LF inside (quotes doubled)."""
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def row_of(record: dict[str, Any]) -> dict[str, Any]:
    """A Collections record as a CSV row: no ``attributes``; ``id`` is the ``Id`` column."""
    return {("Id" if name == "id" else name): value for name, value in record.items() if name != "attributes"}


def columns_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every column any row has, in the order first seen."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def encode_row(columns: Sequence[str], row: dict[str, Any]) -> bytes:
    """One CSV line (LF); a column the row lacks is empty: Salesforce leaves that field as it is."""
    return (",".join(quote(csv_value(row[c])) if c in row else "" for c in columns) + "\n").encode("utf-8")


def build_csv(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> bytes:
    """The job data: header and rows, UTF-8, LF line endings."""
    return (",".join(quote(c) for c in columns) + "\n").encode("utf-8") + b"".join(
        encode_row(columns, row) for row in rows
    )


#: ``errorMessage`` prefixes of a job that failed because of its data, not because of Salesforce
PERMANENT_JOB_ERRORS = ("InvalidBatch", "ClientInputError", "InvalidJob")


def parse_results(content: bytes) -> list[dict[str, str]]:
    """A results CSV (any quoting, values may hold line breaks) as one dict per row."""
    reader = csv.reader(io.StringIO(content.decode("utf-8-sig"), newline=""))
    header = next(reader, None)
    if header is None:
        return []
    return [dict(zip(header, row, strict=False)) for row in reader if row]


def has_null_marker(record: dict[str, Any]) -> bool:
    """True when a value is exactly ``#N/A``: Bulk CSV would turn it into null, Collections keep it."""
    return any(value == NULL_MARKER for value in record.values())


def failed_result(row: dict[str, str]) -> SaveResult:
    """``sf__Error`` is ``CODE:message:fields --``: the code is what classifies the row."""
    text = row.get("sf__Error", "")
    code = text.split(":", 1)[0].strip() if ":" in text else "UNKNOWN_EXCEPTION"
    return SaveResult(id=row.get("sf__Id") or None, success=False, created=None, codes=[code], message=text)


# --- jobs -----------------------------------------------------------------------------------------


class BulkIngest:
    """Bulk API 2.0 ingest jobs of one org, through the connector's client."""

    def __init__(self, client: SalesforceClient, policy: PollPolicy | None = None) -> None:
        self.client = client
        self.policy = policy or PollPolicy()
        #: ids of the jobs this instance created, newest last (diagnostics and tests)
        self.jobs: list[str] = []

    async def update(self, sobject: str, records: list[dict[str, Any]]) -> list[SaveResult]:
        """Update records by Id (Collections-shaped dicts): one result per record, in order."""
        return await self.run(sobject, "update", records, key_column="Id")

    async def upsert(
        self, sobject: str, external_id_field: str, records: list[dict[str, Any]]
    ) -> list[SaveResult]:
        """Upsert records by external id: one result per record, in order."""
        return await self.run(
            sobject, "upsert", records, key_column=external_id_field, external_id_field=external_id_field
        )

    async def run(
        self,
        sobject: str,
        operation: str,
        records: list[dict[str, Any]],
        key_column: str,
        external_id_field: str | None = None,
    ) -> list[SaveResult]:
        """As many jobs as uploads of at most ``MAX_UPLOAD_BYTES`` take (usually one)."""
        rows = [row_of(record) for record in records]
        keys = [str(row.get(key_column) or "") for row in rows]
        if len(set(keys)) != len(keys) or "" in keys:
            raise ValueError(f"every record of a Bulk job needs its own {key_column}")
        columns = columns_of(rows)
        header = build_csv(columns, [])
        uploads: list[tuple[bytes, list[str]]] = []
        start, part = 0, [header]
        size = len(header)
        for index, row in enumerate(rows):
            line = encode_row(columns, row)
            if size + len(line) > MAX_UPLOAD_BYTES and index > start:
                uploads.append((b"".join(part), keys[start:index]))
                start, part, size = index, [header], len(header)
            part.append(line)
            size += len(line)
        if rows:
            uploads.append((b"".join(part), keys[start:]))
        found: dict[str, SaveResult] = {}
        for data, part_keys in uploads:
            try:
                found.update(
                    await self._job(sobject, operation, data, part_keys, key_column, external_id_field)
                )
            except TransientError as exc:  # after an earlier job, records did reach Salesforce
                raise (handed_over(exc) if found else exc) from None
        return [found[key] for key in keys]

    async def _job(
        self,
        sobject: str,
        operation: str,
        data: bytes,
        keys: list[str],
        key_column: str,
        external_id_field: str | None,
    ) -> dict[str, SaveResult]:
        what = f"bulk {operation} {sobject}"
        spec: dict[str, Any] = {
            "object": sobject,
            "operation": operation,
            "contentType": "CSV",
            "lineEnding": "LF",
            "columnDelimiter": "COMMA",
        }
        if external_id_field:
            spec["externalIdFieldName"] = external_id_field
        created = _json(await self.client.request("POST", "jobs/ingest", f"{what}: create job", json=spec))
        job_id = str(created.get("id") or "")
        if not job_id:
            raise TransientError(f"{what}: Salesforce created a job without an id")
        self.jobs.append(job_id)
        try:
            await self.client.request(
                "PUT", f"jobs/ingest/{job_id}/batches", f"{what}: upload", data=data, content_type="text/csv"
            )
            await self.client.request(
                "PATCH", f"jobs/ingest/{job_id}", f"{what}: close", json={"state": "UploadComplete"}
            )
        except Exception:
            await self._abort(job_id, what)
            raise
        try:
            info = await self._wait(job_id, what)
            return await self._outcomes(job_id, info, keys, key_column, what)
        except TransientError as exc:
            raise handed_over(exc) from None

    async def _wait(self, job_id: str, what: str) -> dict[str, Any]:
        """Poll until the job is final; abort it and raise ``TransientError`` once the timeout is spent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.timeout_seconds
        state = "UploadComplete"
        for delay in self.policy.delays():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(delay, remaining))
            try:
                info = _json(await self.client.request("GET", f"jobs/ingest/{job_id}", f"{what}: state"))
            except RecordError as exc:  # the data may be written already: never dead-letter on a poll
                raise TransientError(f"{what}: job {job_id} cannot be read: {exc}") from None
            state = str(info.get("state"))
            if state in FINAL_STATES:
                return info
            if state not in RUNNING_STATES:
                raise TransientError(f"{what}: job {job_id} is in an unexpected state {state!r}")
        await self._abort(job_id, what)
        raise TransientError(
            f"{what}: Bulk API job {job_id} still {state} after {self.policy.timeout_seconds:.0f} s; "
            "aborted, its records will be retried"
        )

    async def _outcomes(
        self, job_id: str, info: dict[str, Any], keys: list[str], key_column: str, what: str
    ) -> dict[str, SaveResult]:
        """One result per key from the job's result CSVs; keys in neither are unprocessed."""
        state = str(info.get("state"))
        processed = int(info.get("numberRecordsProcessed") or 0)
        failed = int(info.get("numberRecordsFailed") or 0)
        wanted = set(keys)
        found: dict[str, SaveResult] = {}
        try:
            if processed - failed > 0:
                for row in await self._results(job_id, "successfulResults", what):
                    key = _key(row, key_column, wanted)
                    if key is not None:
                        created = row.get("sf__Created", "").lower() == "true"
                        found[key] = SaveResult(row.get("sf__Id") or None, True, created, [], "")
            if failed > 0:
                for row in await self._results(job_id, "failedResults", what):
                    key = _key(row, key_column, wanted)
                    if key is not None:
                        found[key] = failed_result(row)
        except RecordError as exc:
            raise TransientError(f"{what}: results of job {job_id} cannot be read: {exc}") from None
        reason = f"Bulk API job {job_id} ended {state}"
        if info.get("errorMessage"):
            reason += f": {info['errorMessage']}"
        log.info(
            "salesforce.bulk_job",
            job=job_id,
            operation=what,
            state=state,
            records=len(keys),
            succeeded=sum(1 for r in found.values() if r.success),
            failed=sum(1 for r in found.values() if not r.success),
        )
        if state != "JobComplete" and not found:
            message = str(info.get("errorMessage") or "")
            if state == "Failed" and message.startswith(PERMANENT_JOB_ERRORS):
                # the data itself is wrong (a field the org lacks, a bad CSV): sending it again fails alike
                code = message.split(":", 1)[0].strip()
                raise RecordError(f"{what}: {reason}", 400, [code])
            raise TransientError(f"{what}: {reason}")
        unprocessed = SaveResult(None, False, None, [UNPROCESSED], f"not processed: {reason}")
        return {key: found.get(key, unprocessed) for key in keys}

    async def _results(self, job_id: str, kind: str, what: str) -> list[dict[str, str]]:
        reply = await self.client.request(
            "GET", f"jobs/ingest/{job_id}/{kind}/", f"{what}: {kind}", accept="text/csv"
        )
        return parse_results(reply.content)

    async def _abort(self, job_id: str, what: str) -> None:
        """Best effort: a job that is left open or running could race the retry of its records."""
        try:
            await self.client.request(
                "PATCH", f"jobs/ingest/{job_id}", f"{what}: abort", json={"state": "Aborted"}
            )
        except Exception as exc:
            log.warning("salesforce.bulk_abort_failed", job=job_id, error=str(exc))


def handed_over(exc: TransientError) -> TransientError:
    """``exc`` as a failure after records reached Salesforce (a job closed, an earlier job done).

    A refused connection while polling a closed job says nothing about the job, which runs on: its
    records may be written, so the failure uses an attempt like any other that may have been applied.
    """
    if exc.sent:
        return exc
    return TransientError(str(exc), exc.retry_after, sent=True)


def _key(row: dict[str, str], key_column: str, wanted: set[str]) -> str | None:
    """The record a result row belongs to: its key column as uploaded (for updates also ``sf__Id``)."""
    key = row.get(key_column)
    if key is not None and key in wanted:
        return key
    record_id = row.get("sf__Id")
    if key_column == "Id" and record_id is not None and record_id in wanted:
        return record_id
    return None


def _json(reply: requests.Response) -> dict[str, Any]:
    """A JSON object reply; anything else is a protocol error worth a retry, not a dead letter."""
    try:
        body = reply.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise TransientError(
            f"unexpected reply from the Bulk API: HTTP {reply.status_code} {reply.text[:200]!r}"
        )
    return body
