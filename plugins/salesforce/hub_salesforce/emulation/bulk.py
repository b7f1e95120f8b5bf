"""Bulk API 2.0 ingest jobs of the emulated org (``/services/data/vXX.X/jobs/ingest``), as strict as Salesforce.

The life of a job, as the Bulk API 2.0 guide describes it:

- ``POST jobs/ingest`` creates it (200 with the job info, state ``Open``). ``object`` and ``operation`` are
  required; ``externalIdFieldName`` is required for ``upsert`` and must name an External ID field; only CSV
  content; ``lineEnding`` LF (default) or CRLF; ``columnDelimiter`` one of the six documented ones. An
  unknown object, operation or property is refused with the JSON-array error body of every REST call.
- ``PUT jobs/ingest/{id}/batches`` takes the CSV (``Content-Type: text/csv``; 201, no body), only while the
  job is ``Open`` and only once: a second upload is refused as Salesforce refuses it.
- ``PATCH jobs/ingest/{id}`` with ``{"state": "UploadComplete"}`` closes it for processing, with
  ``{"state": "Aborted"}`` aborts it (from Open, UploadComplete or InProgress only).
- ``GET jobs/ingest/{id}`` reports the state. Processing happens after UploadComplete and takes
  ``polls_to_finish`` state polls (``InProgress`` until then), so a client's polling is exercised; the job
  then ends ``JobComplete``, or ``Failed`` with an ``errorMessage``.
- ``GET .../successfulResults/`` (``sf__Id``, ``sf__Created`` + the uploaded columns),
  ``.../failedResults/`` (``sf__Id``, ``sf__Error`` + the uploaded columns) and ``.../unprocessedrecords/``
  answer CSV once the job is in a final state, not in upload order (Salesforce does not keep it);
  ``DELETE jobs/ingest/{id}`` removes a job that is not Open or InProgress.

The job data is checked the way Salesforce checks it, while processing (the upload itself only stores it):
UTF-8; the declared line ending and delimiter; RFC 4180 quoting (a quote inside an unquoted value, text after
a closing quote and an unclosed quote are errors); every row as wide as the header; every header a field of
the object (exact API name). Any of these fails the whole job, as an ``InvalidBatch`` / ``ClientInputError``
``errorMessage``. Rows are then applied one by one through the same ``Org`` model and validation as the
REST writes, so a refused row carries the org's real status code in ``sf__Error``
(``CODE:message:fields --``), and the other rows are written.

Values: an empty value leaves the field untouched (insert: not set), ``#N/A`` sets it to null; numbers,
booleans, dates and dateTimes are checked against the field's type. ``update`` and ``delete`` need the
``Id`` column, ``upsert`` the external id column (per row MISSING_ARGUMENT otherwise); rows of an upsert that
repeat an external id all fail DUPLICATE_EXTERNAL_ID. ``hardDelete`` removes records as ``delete`` does (the
emulator has no recycle bin). Not emulated: relationship columns (``Account.External__c``), which fail the
job as an unknown field would, and the 150 MB upload limit.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse, Response

from hub_salesforce.emulation.org import FieldSpec, Org, RecordError, now_text

#: the value that sets a field to null; an empty value leaves it untouched
NULL = "#N/A"
OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete")
DELIMITERS = {"BACKQUOTE": "`", "CARET": "^", "COMMA": ",", "PIPE": "|", "SEMICOLON": ";", "TAB": "\t"}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
CREATE_PROPERTIES = frozenset(
    {
        "object",
        "operation",
        "externalIdFieldName",
        "contentType",
        "lineEnding",
        "columnDelimiter",
        "assignmentRuleId",
    }
)
FINAL_STATES = frozenset({"JobComplete", "Failed", "Aborted"})
NUMBER_TYPES = frozenset({"double", "currency", "percent", "int", "long"})
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?(Z|[+-]\d{2}:?\d{2})$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def errors(status: int, code: str, message: str, fields: list[str] | None = None) -> JSONResponse:
    """Salesforce's error body: a JSON array of ``{message, errorCode, fields}``."""
    return JSONResponse([{"message": message, "errorCode": code, "fields": fields or []}], status_code=status)


def apply_upsert(org: Org, sobject: str, field_name: str, values: dict[str, Any]) -> tuple[str, bool]:
    """Upsert one record by external id; ``(id, created)``. Shared by sObject Collections and Bulk.

    Several records holding the value is DUPLICATE_EXTERNAL_ID, a missing value MISSING_ARGUMENT.
    """
    key = values.get(field_name)
    if not key:
        raise RecordError("MISSING_ARGUMENT", f"{field_name} not specified", [field_name])
    found = org.by_external_id(sobject, field_name, str(key))
    if len(found) > 1:
        raise RecordError(
            "DUPLICATE_EXTERNAL_ID",
            f"{field_name}: more than one record found for external id field: {found}",
            [field_name],
        )
    if found:
        org.update(sobject, found[0], values)
        return found[0], False
    return org.create(sobject, values), True


class JobDataError(Exception):
    """The job data as a whole is unreadable: the job fails with this ``errorMessage``."""


def parse_csv(text: str, delimiter: str, line_ending: str) -> list[list[str]]:
    """Strict RFC 4180 with the job's delimiter and line ending; a final line ending is optional.

    Salesforce does not guess: data written with CRLF in an LF job (or the reverse) is refused, and so is a
    quote that does not open or close a quoted value.
    """
    rows: list[list[str]] = []
    if not text:
        return rows
    row: list[str] = []
    i, size = 0, len(text)
    while True:
        if i < size and text[i] == '"':
            parts: list[str] = []
            start = i + 1
            while True:
                close = text.find('"', start)
                if close < 0:
                    raise JobDataError(f"ClientInputError : unclosed quoted value in row {len(rows) + 1}")
                parts.append(text[start:close])
                if text.startswith('"', close + 1):
                    parts.append('"')
                    start = close + 2
                    continue
                i = close + 1
                break
            value = "".join(parts)
        else:
            end = i
            while end < size and text[end] not in "\r\n" and not text.startswith(delimiter, end):
                if text[end] == '"':
                    raise JobDataError(
                        f"ClientInputError : a double quote inside an unquoted value in row {len(rows) + 1}"
                    )
                end += 1
            value, i = text[i:end], end
        row.append(value)
        if i >= size:
            rows.append(row)
            return rows
        if text.startswith(delimiter, i):
            i += len(delimiter)
            continue
        if text.startswith(line_ending, i):
            rows.append(row)
            row = []
            i += len(line_ending)
            if i >= size:
                return rows
            continue
        if text[i] in "\r\n":
            name = "LF" if line_ending == "\n" else "CRLF"
            raise JobDataError(
                f"ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is {name}"
            )
        raise JobDataError(f"ClientInputError : unexpected text after a closing quote in row {len(rows) + 1}")


def coerce(spec: FieldSpec, name: str, text: str) -> Any:
    """A CSV value as the field's type stores it; a value of the wrong type refuses the row."""
    try:
        if spec.type in NUMBER_TYPES:
            number = float(text)
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError(text)
            return number
        if spec.type == "boolean":
            lowered = text.lower()
            if lowered in ("true", "1"):
                return True
            if lowered in ("false", "0"):
                return False
            raise ValueError(text)
        if spec.type == "datetime" and not DATETIME.match(text):
            raise ValueError(text)
        if spec.type == "date" and not DATE.match(text):
            raise ValueError(text)
    except ValueError:
        raise RecordError(
            "INVALID_TYPE_ON_FIELD_IN_RECORD", f"{name}: value not of required type: {text}", [name]
        ) from None
    return text


def error_text(exc: RecordError) -> str:
    """``sf__Error`` as Salesforce writes it: ``CODE:message:fields --``."""
    fields = " ".join(exc.fields)
    return f"{exc.code}:{exc}:{fields + ' ' if fields else ''}--"


def to_csv(header: list[str], rows: list[list[str]]) -> bytes:
    """Result CSV: every value quoted, LF line endings, UTF-8."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


@dataclass
class IngestJob:
    """One job and, once processed, its per-row outcomes (each row as uploaded, prefixed by sf__ columns)."""

    id: str
    object: str
    operation: str
    external_id_field: str | None
    line_ending: str
    column_delimiter: str
    api_version: float
    created: str
    state: str = "Open"
    data: bytes | None = None
    polls_left: int = 0
    error_message: str | None = None
    header: list[str] | None = None
    successful: list[list[str]] = field(default_factory=list)
    failed: list[list[str]] = field(default_factory=list)
    unprocessed: list[list[str]] = field(default_factory=list)
    modified: str = ""

    def info(self, version: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": "005000000000001AAA",
            "createdDate": self.created,
            "systemModstamp": self.modified or self.created,
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": self.api_version,
            "jobType": "V2Ingest",
            "lineEnding": self.line_ending,
            "columnDelimiter": self.column_delimiter,
            "numberRecordsProcessed": len(self.successful) + len(self.failed),
            "numberRecordsFailed": len(self.failed),
            "retries": 0,
            "totalProcessingTime": 0,
            "apiActiveProcessingTime": 0,
            "apexProcessingTime": 0,
        }
        if self.external_id_field:
            body["externalIdFieldName"] = self.external_id_field
        if self.state == "Open":
            body["contentUrl"] = f"services/data/{version}/jobs/ingest/{self.id}/batches"
        if self.error_message:
            body["errorMessage"] = self.error_message
        return body


@dataclass
class PlannedFailure:
    """A switch: the next job processed fails after ``after_rows`` rows with ``message``."""

    message: str
    after_rows: int


class BulkIngest:
    """The org's Bulk API 2.0 ingest jobs. ``org`` is a callable, read at each request, so the jobs act on
    whatever org the emulator holds now."""

    def __init__(self, org: Callable[[], Org], polls_to_finish: int = 2) -> None:
        self._org = org
        #: state polls answered InProgress after UploadComplete before the job is processed
        self.polls_to_finish = polls_to_finish
        self.jobs: dict[str, IngestJob] = {}
        self._planned: list[PlannedFailure] = []
        self._ids = itertools.count(1)

    # -- switches -------------------------------------------------------------------------------

    def fail_next_jobs(
        self, count: int = 1, message: str = "InternalServerError : processing failed", after_rows: int = 0
    ) -> None:
        """The next ``count`` jobs fail while processing: the first ``after_rows`` rows are applied, the
        rest stay unprocessed, and the job ends ``Failed`` with ``message`` (as when Salesforce gives up
        retrying a batch)."""
        self._planned += [PlannedFailure(message, after_rows) for _ in range(count)]

    # -- the resource ---------------------------------------------------------------------------

    def handle(
        self, method: str, parts: list[str], version: str, body: Any, raw: bytes, content_type: str
    ) -> Response:
        """``parts`` is the path below ``jobs/ingest``."""
        if not parts:
            if method == "POST":
                return self._create(body, version)
            if method == "GET":
                infos = [job.info(version) for job in self.jobs.values()]
                return JSONResponse({"done": True, "records": infos, "nextRecordsUrl": None})
            return errors(
                405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are GET,POST"
            )
        job = self.jobs.get(parts[0])
        if job is None:
            return errors(404, "NOT_FOUND", "The requested resource does not exist")
        rest = parts[1:]
        if not rest:
            if method == "GET":
                self._advance(job)
                return JSONResponse(job.info(version))
            if method == "PATCH":
                return self._set_state(job, body, version)
            if method == "DELETE":
                if job.state in ("Open", "InProgress"):
                    return errors(
                        400, "INVALIDJOBSTATE", f"Deleting a job in state {job.state} is not allowed"
                    )
                del self.jobs[job.id]
                return Response(status_code=204)
        elif rest == ["batches"] and method == "PUT":
            return self._upload(job, raw, content_type)
        elif len(rest) == 1 and method == "GET" and rest[0] in ("successfulResults", "failedResults"):
            return self._results(job, rest[0])
        elif rest == ["unprocessedrecords"] and method == "GET":
            return self._unprocessed(job)
        return errors(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed")

    def _create(self, body: Any, version: str) -> Response:
        if not isinstance(body, dict):
            return errors(400, "JSON_PARSER_ERROR", "the body must be a JSON object describing the job")
        unknown = sorted(set(body) - CREATE_PROPERTIES)
        if unknown:
            return errors(400, "JSON_PARSER_ERROR", f'Unrecognized field "{unknown[0]}"')
        operation = body.get("operation")
        if operation not in OPERATIONS:
            return errors(400, "INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
        sobject = body.get("object")
        org = self._org()
        if not isinstance(sobject, str) or sobject not in org.schema:
            return errors(400, "INVALIDJOB", f"InvalidJob : Unable to find object: {sobject}")
        external_id = body.get("externalIdFieldName")
        if operation == "upsert":
            if not external_id:
                return errors(
                    400,
                    "INVALIDJOB",
                    f"InvalidJob : External ID was blank for {sobject}. "
                    "An External ID must be specified for upsert.",
                )
            spec = org.schema[sobject].get(str(external_id))
            if spec is None or not (spec.external_id or external_id == "Id"):
                return errors(
                    400,
                    "INVALIDJOB",
                    f"InvalidJob : Field name provided, {external_id} does not match an External ID, "
                    f"Salesforce Id, or indexed field for {sobject}",
                )
        if body.get("contentType", "CSV") != "CSV":
            return errors(
                400, "INVALIDJOB", f"InvalidJob : ContentType {body['contentType']} is not supported"
            )
        line_ending = body.get("lineEnding", "LF")
        delimiter = body.get("columnDelimiter", "COMMA")
        if line_ending not in LINE_ENDINGS:
            return errors(
                400, "JSON_PARSER_ERROR", f"Cannot deserialize value of LineEndingEnum: {line_ending}"
            )
        if delimiter not in DELIMITERS:
            return errors(
                400, "JSON_PARSER_ERROR", f"Cannot deserialize value of ColumnDelimiterEnum: {delimiter}"
            )
        job = IngestJob(
            id=f"7505g{next(self._ids):010d}AAA",
            object=sobject,
            operation=operation,
            external_id_field=str(external_id) if operation == "upsert" else None,
            line_ending=line_ending,
            column_delimiter=delimiter,
            api_version=float(version.lstrip("v") or 0),
            created=now_text(),
        )
        self.jobs[job.id] = job
        return JSONResponse(job.info(version))

    def _upload(self, job: IngestJob, raw: bytes, content_type: str) -> Response:
        if content_type.split(";")[0].strip().lower() != "text/csv":
            return errors(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                f"Content-Type header specified in HTTP request is not supported: {content_type}",
            )
        if job.state != "Open":
            return errors(
                400,
                "INVALIDJOBSTATE",
                f"Job {job.id} is {job.state}: data can be uploaded to an Open job only",
            )
        if job.data is not None:
            return errors(
                400,
                "BULK_API_ERROR",
                f"Found multiple contents for job: <{job.id}>, please 'Close' / 'Abort' / 'Delete' the current "
                "Job then create a new Job and make sure you only do 'PUT' once on a given Job.",
            )
        job.data = raw
        return Response(status_code=201)

    def _set_state(self, job: IngestJob, body: Any, version: str) -> Response:
        if not isinstance(body, dict) or set(body) != {"state"}:
            return errors(
                400, "JSON_PARSER_ERROR", 'the body must be {"state": "UploadComplete" | "Aborted"}'
            )
        wanted = body["state"]
        if wanted == "UploadComplete" and job.state == "Open":
            job.state, job.polls_left = "UploadComplete", self.polls_to_finish
        elif wanted == "Aborted" and job.state in ("Open", "UploadComplete", "InProgress"):
            job.state = "Aborted"
            self._leave_unprocessed(job)
        else:
            return errors(
                400,
                "INVALIDJOBSTATE",
                f"Changing the state of job {job.id} from {job.state} to {wanted} is not allowed",
            )
        job.modified = now_text()
        return JSONResponse(job.info(version))

    def _results(self, job: IngestJob, kind: str) -> Response:
        if job.state not in FINAL_STATES:
            return errors(
                400, "INVALIDJOBSTATE", f"Job {job.id} is {job.state}: results exist once it has finished"
            )
        # Salesforce processes a job in parallel chunks and does not keep the upload's order in the results;
        # the emulator answers in reverse order, so a client that maps results by position is caught
        columns = job.header or []
        if kind == "successfulResults":
            return _csv(to_csv(["sf__Id", "sf__Created", *columns], job.successful[::-1]))
        return _csv(to_csv(["sf__Id", "sf__Error", *columns], job.failed[::-1]))

    def _unprocessed(self, job: IngestJob) -> Response:
        if job.state not in FINAL_STATES:
            return errors(
                400, "INVALIDJOBSTATE", f"Job {job.id} is {job.state}: results exist once it has finished"
            )
        if job.header is None:  # the data could not even be read: all of it is unprocessed, as uploaded
            return _csv(job.data or b"")
        return _csv(to_csv(job.header, job.unprocessed))

    # -- processing -----------------------------------------------------------------------------

    def _advance(self, job: IngestJob) -> None:
        """A state poll: the job moves on, and is processed once it has been polled often enough."""
        if job.state not in ("UploadComplete", "InProgress"):
            return
        if job.polls_left > 0:
            job.polls_left -= 1
            job.state = "InProgress"
            return
        self._process(job)
        job.modified = now_text()

    def _fail(self, job: IngestJob, message: str) -> None:
        job.state, job.error_message = "Failed", message

    def _leave_unprocessed(self, job: IngestJob) -> None:
        """What is left of an aborted job: its rows, if they can be read, are unprocessed."""
        try:
            job.header, rows = self._read(job)
        except JobDataError:
            return
        job.unprocessed = rows

    def _read(self, job: IngestJob) -> tuple[list[str], list[list[str]]]:
        if not job.data:
            raise JobDataError("ClientInputError : no data was uploaded for this job")
        try:
            text = job.data.decode("utf-8")
        except UnicodeDecodeError:
            raise JobDataError("ClientInputError : the job data is not UTF-8") from None
        rows = parse_csv(text, DELIMITERS[job.column_delimiter], LINE_ENDINGS[job.line_ending])
        if not rows or rows[0] == [""]:
            raise JobDataError("ClientInputError : the job data has no header row")
        header, data = rows[0], rows[1:]
        for number, row in enumerate(data, start=2):
            if len(row) != len(header):
                raise JobDataError(
                    f"ClientInputError : row {number} has {len(row)} values, the header {len(header)}"
                )
        return header, data

    def _process(self, job: IngestJob) -> None:
        try:
            header, rows = self._read(job)
        except JobDataError as exc:
            self._fail(job, str(exc))
            return
        org = self._org()
        schema = org.schema[job.object]
        duplicates = Counter(header)
        for name in header:
            if duplicates[name] > 1:
                self._fail(job, f"InvalidBatch : Duplicate field name: {name}")
                return
            if name not in schema:
                self._fail(job, f"InvalidBatch : Field name not found : {name}")
                return
        job.header = header
        keys: Counter[str] = Counter()
        if job.operation == "upsert" and job.external_id_field in header:
            column = header.index(job.external_id_field)
            keys = Counter(row[column] for row in rows if row[column])
        planned = self._planned.pop(0) if self._planned else None
        for number, row in enumerate(rows):
            if planned is not None and number >= planned.after_rows:
                job.unprocessed = rows[number:]
                self._fail(job, planned.message)
                return
            try:
                record_id, created = self._apply(org, job, header, row, keys)
            except RecordError as exc:
                job.failed.append(["", error_text(exc), *row])
            else:
                job.successful.append([record_id, "true" if created else "false", *row])
        if planned is not None:  # fewer rows than the failure was planned after
            self._fail(job, planned.message)
            return
        job.state = "JobComplete"

    def _apply(
        self, org: Org, job: IngestJob, header: list[str], row: list[str], keys: Counter[str]
    ) -> tuple[str, bool]:
        schema = org.schema[job.object]
        values: dict[str, Any] = {}
        for name, text in zip(header, row, strict=True):
            if text == "":
                continue  # empty: the field is left as it is
            values[name] = None if text == NULL else coerce(schema[name], name, text)
        if job.operation == "insert":
            return org.create(job.object, values), True
        if job.operation == "upsert":
            assert job.external_id_field is not None
            key = values.get(job.external_id_field)
            if key is not None and keys[str(key)] > 1:
                raise RecordError(
                    "DUPLICATE_EXTERNAL_ID",
                    f"Duplicate external id specified: {key}",
                    [job.external_id_field],
                )
            return apply_upsert(org, job.object, job.external_id_field, values)
        record_id = values.pop("Id", None)
        if not record_id:
            raise RecordError("MISSING_ARGUMENT", f"Id not specified in an {job.operation} call")
        table = org.records[job.object]
        if job.operation == "update":
            org.update(job.object, str(record_id), values)
            return str(record_id), False
        if values:
            raise RecordError("INVALID_FIELD", "a delete job takes the Id column only", sorted(values))
        if str(record_id) not in table:
            raise RecordError("ENTITY_IS_DELETED", "entity is deleted")
        del table[str(record_id)]
        return str(record_id), False


def _csv(content: bytes) -> Response:
    return Response(content, media_type="text/csv; charset=UTF-8")
