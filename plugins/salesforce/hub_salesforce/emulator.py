"""A local stand-in of a Salesforce org's REST API, as strict as the real one (see crm-api-facts.md).

It serves the OAuth token endpoint (JWT bearer checked against the app's public key, audience and expiry;
client credentials; the legacy password flow), SOQL queries with ``nextRecordsUrl`` paging, describe,
sObject CRUD and upsert by external id, sObject Collections (200 records at most), Composite (25 subrequests,
5 of them queries or collections, ``@{ref.field}`` references, one API call; its allOrNone also binds its
Collections subrequests), Bulk API 2.0 ingest jobs (``emulation/bulk.py``), Chatter posts (Connect API, or
FeedItem records), JSON-array error bodies, ``Sforce-Limit-Info`` on every reply with REQUEST_LIMIT_EXCEEDED
beyond the daily allowance (every Bulk call counts like any other REST call), sessions that expire, latency
and fault switches (HTTP faults, and row locks that refuse one record's update as Salesforce does), and a
record of every call. ``OutboundSender`` delivers Outbound Messages the way Salesforce does: at least once,
out of order, retried until acknowledged.

simple-salesforce only speaks https, so ``serve_tls`` runs the app over TLS with a test CA.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from hub.testing.server import BackgroundServer
from hub_salesforce.emulation.bulk import BulkIngest, apply_upsert
from hub_salesforce.emulation.org import Org, RecordError, now_text
from hub_salesforce.emulation.soql import Query, SoqlError, matches, parse

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
COLLECTION_LIMIT = 200
#: Composite: subrequests per call, and how many of them may be queries or sObject Collections
COMPOSITE_LIMIT = 25
COMPOSITE_QUERY_LIMIT = 5
#: headers a Composite subrequest inherits from the top-level request and must not set itself
COMPOSITE_INHERITED_HEADERS = frozenset({"accept", "authorization", "content-type"})
REFERENCE_ID = re.compile(r"^[A-Za-z0-9_]+$")
REFERENCE = re.compile(r"@\{([A-Za-z0-9_]+)((?:\.[A-Za-z0-9_]+|\[\d+\])+)\}")
ROLLED_BACK = "The transaction was rolled back since another operation in the same transaction failed."
#: lookups that may point at records of several objects: (object, field) -> the parent objects
POLYMORPHIC_LOOKUPS = {("FeedItem", "ParentId"): ("Case", "Contact", "Opportunity", "User")}
#: FeedItem.Type values a client may create
FEED_ITEM_TYPES = frozenset({"TextPost", "LinkPost", "ContentPost", "AdvancedTextPost", "QuestionPost"})


@dataclass
class Call:
    method: str
    path: str
    status: int
    body: Any = None
    #: the query string (``q`` holds a query's SOQL)
    params: dict[str, str] = field(default_factory=dict)


#: the message of Salesforce's REQUEST_LIMIT_EXCEEDED for the org's rolling-24-hour allowance
DAILY_LIMIT_MESSAGE = "TotalRequests Limit exceeded."
#: ... and for too many concurrent long-running (20 s and more) requests
CONCURRENT_LIMIT_MESSAGE = "ConcurrentPerOrgLongTxn Limit exceeded."


@dataclass
class Fault:
    remaining: int
    status: int
    retry_after: float | None
    methods: frozenset[str]
    code: str = "SERVER_UNAVAILABLE"
    message: str = "emulated fault"
    #: matching calls answered normally before the fault starts
    skip: int = 0


def _errors(status: int, code: str, message: str, fields: list[str] | None = None) -> JSONResponse:
    return JSONResponse([{"message": message, "errorCode": code, "fields": fields or []}], status_code=status)


@dataclass
class SalesforceEmulator:
    """One org. Credentials are given at construction; switches are plain attributes and methods."""

    consumer_key: str = "cxhub-consumer-key"
    username: str = "integration@cxhub.example"
    public_key_pem: str = ""
    client_id: str = "cxhub-client"
    client_secret: str = ""
    password_users: dict[str, str] = field(default_factory=dict)
    daily_limit: int = 100_000
    session_seconds: float = 7200.0
    page_size: int = 2000
    latency_seconds: float = 0.0
    org: Org = field(default_factory=Org)

    def __post_init__(self) -> None:
        self.calls: list[Call] = []
        self.api_used = 0
        self.sessions: dict[str, float] = {}
        self.faults: list[Fault] = []
        self.expire_after_calls: int | None = None
        #: record id -> how many more updates of it fail with UNABLE_TO_LOCK_ROW (see ``lock_records``)
        self.locked: dict[str, int] = {}
        self.logins = 0
        self._cursors: dict[str, tuple[list[dict[str, Any]], int]] = {}
        self._lock = threading.RLock()
        #: Bulk API 2.0 ingest jobs; ``bulk.polls_to_finish`` and ``bulk.fail_next_jobs`` are its switches
        self.bulk = BulkIngest(lambda: self.org)
        self.app: ASGIApp = Starlette(
            routes=[
                Route("/services/oauth2/token", self._token, methods=["POST"]),
                Route(
                    "/services/data/{version}/{path:path}",
                    self._data,
                    methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
                ),
            ]
        )

    # -- switches -------------------------------------------------------------------------------

    def fail_next(
        self,
        count: int,
        status: int,
        retry_after: float | None = None,
        methods: set[str] | None = None,
        code: str = "SERVER_UNAVAILABLE",
        message: str = "emulated fault",
        skip: int = 0,
    ) -> None:
        """Answer the next ``count`` data calls (of ``methods``) with ``status`` and that error, once
        ``skip`` of them were answered normally."""
        every = frozenset(methods or {"GET", "POST", "PATCH", "PUT", "DELETE"})
        self.faults.append(Fault(count, status, retry_after, every, code, message, skip))

    def refuse_concurrent(self, count: int = 1) -> None:
        """The next ``count`` data calls meet the org's limit of concurrent long-running requests, as
        Salesforce answers it: 403 REQUEST_LIMIT_EXCEEDED, no Retry-After, the daily usage as it is."""
        self.fail_next(count, 403, code="REQUEST_LIMIT_EXCEEDED", message=CONCURRENT_LIMIT_MESSAGE)

    def clear_faults(self) -> None:
        self.faults.clear()
        self.locked.clear()

    def lock_records(self, *record_ids: str, times: int = 1) -> None:
        """The next ``times`` updates of each record fail with UNABLE_TO_LOCK_ROW, the per-record error
        Salesforce gives while another transaction holds the row: transient, and inside a Composite with
        allOrNone it rolls back every other subrequest."""
        for record_id in record_ids:
            self.locked[record_id] = times

    def expire_sessions(self, after_calls: int = 0) -> None:
        """Every session issued so far stops working after ``after_calls`` more data calls."""
        self.expire_after_calls = after_calls

    def drop_field(self, sobject: str, name: str) -> None:
        """The org lacks this field, as when the package was not deployed or a field was deleted."""
        del self.org.schema[sobject][name]

    def lock_field(self, sobject: str, name: str) -> None:
        """The integration user may read the field but not write it (field-level security)."""
        spec = self.org.schema[sobject][name]
        self.org.schema[sobject][name] = replace(spec, createable=False, updateable=False)

    def calls_to(self, method: str, fragment: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and fragment in c.path]

    # -- seeding --------------------------------------------------------------------------------

    def add_user(self, name: str, email: str) -> str:
        return self.org.create("User", {"Name": name, "Email": email, "Username": email}, system=True)

    def add_contact(self, first: str, last: str, email: str | None = None, **values: Any) -> str:
        values = {
            "FirstName": first,
            "LastName": last,
            "Email": email,
            "HasOptedOutOfEmail": False,
            "DoNotCall": False,
            **values,
        }
        return self.org.create("Contact", values, system=True)

    def add_case(self, subject: str, contact_id: str | None, owner_id: str | None = None) -> str:
        values = {
            "Subject": subject,
            "Status": "New",
            "Origin": "Email",
            "IsClosed": False,
            "ContactId": contact_id,
            "OwnerId": owner_id,
        }
        return self.org.create("Case", values, system=True)

    def close_case(self, case_id: str, at: str | None = None) -> dict[str, Any]:
        self.org.update(
            "Case",
            case_id,
            {"Status": "Closed", "IsClosed": True, "ClosedDate": at or now_text()},
            system=True,
        )
        return self.org.records["Case"][case_id]

    def win_opportunity(self, name: str, contact_id: str | None) -> str:
        values = {
            "Name": name,
            "StageName": "Closed Won",
            "IsWon": True,
            "CloseDate": now_text()[:10],
            "ContactId": contact_id,
        }
        return self.org.create("Opportunity", values, system=True)

    def add_contact_role(
        self, opportunity_id: str, contact_id: str, role: str | None = "Decision Maker", primary: bool = False
    ) -> str:
        """An OpportunityContactRole; a new primary one takes the flag from the others, as an opportunity has
        one primary contact at most."""
        if primary:
            for other in self.org.records["OpportunityContactRole"].values():
                if other.get("OpportunityId") == opportunity_id:
                    other["IsPrimary"] = False
        values = {
            "OpportunityId": opportunity_id,
            "ContactId": contact_id,
            "Role": role,
            "IsPrimary": primary,
        }
        return self.org.create("OpportunityContactRole", values, system=True)

    def records(self, sobject: str) -> list[dict[str, Any]]:
        return list(self.org.records[sobject].values())

    # -- OAuth ----------------------------------------------------------------------------------

    async def _token(self, request: Request) -> Response:
        await self._delay()
        form = {k: str(v) for k, v in (await request.form()).items()}
        grant = form.get("grant_type", "")
        origin = f"https://{request.headers.get('host', 'localhost')}"
        if grant == JWT_GRANT:
            problem = self._check_assertion(form.get("assertion", ""))
        elif grant == "client_credentials":
            ok = form.get("client_id") == self.client_id and form.get("client_secret") == self.client_secret
            problem = None if ok else ("invalid_client", "invalid client credentials")
        elif grant == "password":
            user = form.get("username", "")
            ok = (
                form.get("client_id") == self.client_id
                and form.get("client_secret") == self.client_secret
                and user in self.password_users
                and self.password_users[user] == form.get("password")
            )
            problem = None if ok else ("invalid_grant", "authentication failure")
        else:
            problem = ("unsupported_grant_type", "grant type not supported")
        self.calls.append(
            Call("POST", "/services/oauth2/token", 400 if problem else 200, {"grant_type": grant})
        )
        if problem:
            return JSONResponse({"error": problem[0], "error_description": problem[1]}, status_code=400)
        token = f"{self.org.org_id[:15]}!{self.org.new_id('Session')}{time.monotonic_ns()}"
        with self._lock:
            self.sessions[token] = time.monotonic() + self.session_seconds
            self.logins += 1
        return JSONResponse(
            {
                "access_token": token,
                "instance_url": origin,
                "id": f"{origin}/id/{self.org.org_id}/005000000000001AAA",
                "token_type": "Bearer",
                "issued_at": str(int(time.time() * 1000)),
                "signature": "emulated",
            }
        )

    def _check_assertion(self, assertion: str) -> tuple[str, str] | None:
        # Salesforce's authorization servers only: a My Domain URL (``origin``) is "audience is invalid"
        audiences = ["https://login.salesforce.com", "https://test.salesforce.com"]
        try:
            claims = jwt.decode(
                assertion,
                self.public_key_pem,
                algorithms=["RS256"],
                audience=audiences,
                options={"require": ["iss", "sub", "aud", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            return ("invalid_grant", "expired authorization code")
        except jwt.InvalidAudienceError:
            return ("invalid_grant", "audience is invalid")
        except jwt.PyJWTError:
            return ("invalid_grant", "invalid assertion")
        if claims.get("iss") != self.consumer_key:
            return ("invalid_client_id", "client identifier invalid")
        if claims.get("sub") != self.username:
            return ("invalid_grant", "user hasn't approved this consumer")
        if float(claims["exp"]) > time.time() + 180:  # Salesforce: expires within three minutes
            return ("invalid_grant", "expiration too far in the future")
        return None

    # -- data API -------------------------------------------------------------------------------

    async def _delay(self) -> None:
        if self.latency_seconds:
            await asyncio.sleep(self.latency_seconds)

    def _limit_header(self) -> dict[str, str]:
        return {"Sforce-Limit-Info": f"api-usage={self.api_used}/{self.daily_limit}"}

    def _session_ok(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        with self._lock:
            expires = self.sessions.get(token)
            if expires is None or expires < time.monotonic():
                return False
            if self.expire_after_calls is not None:
                if self.expire_after_calls <= 0:
                    self.sessions.clear()
                    self.expire_after_calls = None
                    return False
                self.expire_after_calls -= 1
        return True

    def _fault(self, method: str) -> Fault | None:
        for fault in self.faults:
            if fault.remaining > 0 and method in fault.methods:
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                fault.remaining -= 1
                return fault
        return None

    async def _data(self, request: Request) -> Response:
        await self._delay()
        path = "/" + request.path_params["path"]
        raw = await request.body()
        content_type = request.headers.get("content-type", "")
        body: Any = None
        media = content_type.split(";")[0].strip().lower()
        if media not in ("", "application/json"):
            body = raw  # CSV job data (or a wrong media type): the route decides
        else:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                if raw:
                    response: Response = _errors(400, "JSON_PARSER_ERROR", "malformed JSON")
                    return self._finish(request, path, response, None)
        if not self._session_ok(request):
            response = _errors(401, "INVALID_SESSION_ID", "Session expired or invalid")
            return self._finish(request, path, response, body, count=False)
        with self._lock:
            if self.api_used >= self.daily_limit:
                response = _errors(403, "REQUEST_LIMIT_EXCEEDED", DAILY_LIMIT_MESSAGE)
                return self._finish(request, path, response, body, count=False)
            self.api_used += 1
        fault = self._fault(request.method)
        if fault is not None:
            response = _errors(fault.status, fault.code, fault.message)
            if fault.retry_after is not None:
                response.headers["Retry-After"] = str(int(fault.retry_after))
            return self._finish(request, path, response, body)
        version = request.path_params["version"]
        params = dict(request.query_params)
        response = self._dispatch(request.method, path, params, version, body, raw, content_type)
        return self._finish(request, path, response, body)

    def _dispatch(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        version: str,
        body: Any,
        raw: bytes = b"",
        content_type: str = "application/json",
    ) -> Response:
        """One REST request or Composite subrequest; record and SOQL errors answered as Salesforce does."""
        try:
            return self._route(method, path, params, version, body, raw, content_type)
        except SoqlError as exc:
            return _errors(400, exc.code, str(exc))
        except RecordError as exc:
            status = 404 if exc.code == "NOT_FOUND" else 400
            return _errors(status, exc.code, str(exc), exc.fields)

    def _finish(
        self, request: Request, path: str, response: Response, body: Any, count: bool = True
    ) -> Response:
        response.headers.update(self._limit_header())
        self.calls.append(Call(request.method, path, response.status_code, body, dict(request.query_params)))
        return response

    def _route(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        version: str,
        body: Any,
        raw: bytes,
        content_type: str,
    ) -> Response:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] == ["jobs", "ingest"]:
            return self.bulk.handle(method, parts[2:], version, body, raw, content_type)
        if isinstance(body, bytes):
            return _errors(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                f"Content-Type header specified in HTTP request is not supported: {content_type}",
            )
        if parts[0] == "query":
            if len(parts) == 1 and method == "GET":
                return self._query(params.get("q", ""), version)
            if len(parts) == 2 and method == "GET":
                return self._query_more(parts[1], version)
        if parts[0] == "sobjects" and len(parts) >= 2:
            return self._sobject(method, parts[1:], params, body)
        if parts == ["composite"] and method == "POST":
            return self._composite(body, version)
        if parts[:2] == ["composite", "sobjects"]:
            return self._collection(method, parts[2:], body)
        if parts[:2] == ["chatter", "feed-elements"] and method == "POST":
            return self._chatter(body)
        return _errors(404, "NOT_FOUND", "The requested resource does not exist")

    # -- query ----------------------------------------------------------------------------------

    def _query(self, text: str, version: str) -> Response:
        query = parse(text)
        schema = self.org.schema.get(query.sobject)
        if schema is None:
            raise SoqlError(f"sObject type '{query.sobject}' is not supported.", "INVALID_TYPE")
        for name in [*query.fields, *(c.field for c in query.conditions), *(o for o, _ in query.order_by)]:
            if name.split(".")[0] not in schema and not ("." in name and name.split(".")[0] + "Id" in schema):
                raise SoqlError(f"No such column '{name}' on entity '{query.sobject}'", "INVALID_FIELD")
        rows = [r for r in self.org.records[query.sobject].values() if self._where(query, r)]
        for name, descending in reversed(query.order_by):
            rows.sort(key=partial(_sort_key, name), reverse=descending)
        if query.limit is not None:
            rows = rows[: query.limit]
        shaped = [self._shape(query, r, version) for r in rows]
        return self._page(shaped, 0, version, locator=None)

    def _where(self, query: Query, record: dict[str, Any]) -> bool:
        results = [matches(c, self.org.resolve(record, c.field)) for c in query.conditions]
        if not results:
            return True
        return all(results) if query.joiner == "AND" else any(results)

    def _shape(self, query: Query, record: dict[str, Any], version: str) -> dict[str, Any]:
        shaped: dict[str, Any] = {
            "attributes": {
                "type": query.sobject,
                "url": f"/services/data/{version}/sobjects/{query.sobject}/{record['Id']}",
            }
        }
        for name in query.fields:
            if "." in name:
                relation, child = name.split(".", 1)
                value = self.org.resolve(record, name)
                holder = shaped.setdefault(relation, {"attributes": {"type": "User"}})
                if isinstance(holder, dict):
                    holder[child] = value
            else:
                shaped[name] = record.get(name)
        return shaped

    def _page(self, rows: list[dict[str, Any]], start: int, version: str, locator: str | None) -> Response:
        end = start + self.page_size
        body: dict[str, Any] = {"totalSize": len(rows), "done": end >= len(rows), "records": rows[start:end]}
        if end < len(rows):
            locator = locator or f"01g5g{len(self._cursors):010d}"
            self._cursors[locator] = (rows, end)
            body["nextRecordsUrl"] = f"/services/data/{version}/query/{locator}-{end}"
        return JSONResponse(body)

    def _query_more(self, token: str, version: str) -> Response:
        locator, _, offset = token.rpartition("-")
        found = self._cursors.get(locator)
        if found is None or not offset.isdigit() or int(offset) != found[1]:
            return _errors(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(found[0], found[1], version, locator)

    # -- single records -------------------------------------------------------------------------

    def _sobject(self, method: str, parts: list[str], params: Mapping[str, str], body: Any) -> Response:
        sobject = parts[0]
        if sobject not in self.org.schema:
            return _errors(404, "NOT_FOUND", f"The requested resource does not exist: {sobject}")
        if parts[1:] == ["describe"] and method == "GET":
            return JSONResponse(self.org.describe(sobject))
        if len(parts) == 1 and method == "POST":
            record_id = self._create(sobject, self._values(body))
            return JSONResponse({"id": record_id, "success": True, "errors": []}, status_code=201)
        if len(parts) == 2:
            record = self.org.records[sobject].get(parts[1])
            if record is None:
                raise RecordError("NOT_FOUND", "The requested resource does not exist")
            if method == "GET":
                wanted = params.get("fields")
                names = wanted.split(",") if wanted else list(record)
                unknown = [n for n in names if n not in self.org.schema[sobject]]
                if unknown:
                    raise RecordError(
                        "INVALID_FIELD", f"No such column '{unknown[0]}' on sobject of type {sobject}"
                    )
                return JSONResponse({"attributes": {"type": sobject}, **{n: record.get(n) for n in names}})
            if method == "PATCH":
                self._take_lock(parts[1])
                self.org.update(sobject, parts[1], self._values(body))
                return Response(status_code=204)
            if method == "DELETE":
                del self.org.records[sobject][parts[1]]
                return Response(status_code=204)
        if len(parts) == 3 and method == "PATCH":
            return self._upsert_one(sobject, parts[1], parts[2], self._values(body))
        return _errors(405, "METHOD_NOT_ALLOWED", "HTTP method not allowed")

    def _create(self, sobject: str, values: dict[str, Any]) -> str:
        """A record created through the API: the org's field checks, plus what one FieldSpec cannot say.

        A polymorphic lookup (FeedItem.ParentId: a Case, a Contact, ...) must name an existing record of one
        of its parent objects, and a text post needs a Body, as Salesforce requires.
        """
        for (owner, name), parents in POLYMORPHIC_LOOKUPS.items():
            value = values.get(name)
            if owner != sobject or value is None:
                continue
            if not any(str(value) in self.org.records.get(parent, {}) for parent in parents):
                raise RecordError(
                    "FIELD_INTEGRITY_EXCEPTION", f"{name}: id value of incorrect type: {value}", [name]
                )
        if sobject == "FeedItem":
            if values.get("ParentId") is None:
                raise RecordError(
                    "REQUIRED_FIELD_MISSING", "Required fields are missing: [ParentId]", ["ParentId"]
                )
            if values.get("Type", "TextPost") not in FEED_ITEM_TYPES:
                raise RecordError(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    f"Feed Item Type: bad value for restricted picklist field: {values.get('Type')}",
                    ["Type"],
                )
            if values.get("Type", "TextPost") == "TextPost" and not values.get("Body"):
                raise RecordError("REQUIRED_FIELD_MISSING", "Required fields are missing: [Body]", ["Body"])
            values = {"Type": "TextPost", **values}
        record_id = self.org.create(sobject, values)
        self._stamp_created(sobject, record_id)
        return record_id

    def _stamp_created(self, sobject: str, record_id: str) -> None:
        """CreatedDate is set by the org when a record is created (read-only for clients)."""
        record = self.org.records[sobject][record_id]
        if "CreatedDate" in record:
            record["CreatedDate"] = now_text()

    def _take_lock(self, record_id: str) -> None:
        """UNABLE_TO_LOCK_ROW while ``lock_records`` holds the record (another transaction is updating it)."""
        with self._lock:
            remaining = self.locked.get(record_id, 0)
            if remaining <= 0:
                return
            self.locked[record_id] = remaining - 1
        raise RecordError(
            "UNABLE_TO_LOCK_ROW",
            f"unable to obtain exclusive access to this record or 1 records: {record_id}",
        )

    @staticmethod
    def _values(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise RecordError("JSON_PARSER_ERROR", "the body must be a JSON object")
        return {k: v for k, v in body.items() if k != "attributes"}

    def _upsert_one(self, sobject: str, field_name: str, value: str, values: dict[str, Any]) -> Response:
        found = self.org.by_external_id(sobject, field_name, value)
        if len(found) > 1:
            return JSONResponse(
                [f"/services/data/v59.0/sobjects/{sobject}/{rid}" for rid in found], status_code=300
            )
        if found:
            self.org.update(sobject, found[0], values)
            return JSONResponse({"id": found[0], "success": True, "errors": [], "created": False})
        record_id = self.org.create(sobject, {**values, field_name: value})
        return JSONResponse(
            {"id": record_id, "success": True, "errors": [], "created": True}, status_code=201
        )

    # -- sObject Collections --------------------------------------------------------------------

    def _collection(self, method: str, parts: list[str], body: Any) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            return _errors(400, "JSON_PARSER_ERROR", "expected {allOrNone, records}")
        records = body["records"]
        if len(records) > COLLECTION_LIMIT:
            return _errors(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {COLLECTION_LIMIT} records into this call",
            )
        for record in records:
            sobject = (record.get("attributes") or {}).get("type") if isinstance(record, dict) else None
            if sobject not in self.org.schema:
                return _errors(400, "INVALID_TYPE", f"sObject type '{sobject}' is not supported")
            if parts and sobject != parts[0]:
                return _errors(400, "INVALID_TYPE", "upsert takes records of one object type")
            for name in self._values(record):
                if name not in self.org.schema[sobject] and name != "id":
                    return _errors(
                        400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}", [name]
                    )
        # a rollback needs the org as it was; without allOrNone nothing is rolled back, so no copy is taken
        snapshot = json.loads(json.dumps(self.org.records)) if body.get("allOrNone") else None
        results = []
        for record in records:
            try:
                results.append(self._collection_one(method, parts, record))
            except RecordError as exc:
                results.append(
                    {
                        "id": None,
                        "success": False,
                        "errors": [{"statusCode": exc.code, "message": str(exc), "fields": exc.fields}],
                    }
                )
        if snapshot is not None and not all(r["success"] for r in results):
            self.org.records = snapshot
            results = [
                r
                if not r["success"]
                else {
                    "id": None,
                    "success": False,
                    "errors": [
                        {
                            "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                            "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
                            "fields": [],
                        }
                    ],
                }
                for r in results
            ]
        return JSONResponse(results)

    def _collection_one(self, method: str, parts: list[str], record: dict[str, Any]) -> dict[str, Any]:
        sobject = record["attributes"]["type"]
        values = {k: v for k, v in self._values(record).items() if k not in ("id", "Id")}
        if method == "POST" and not parts:
            return {"id": self._create(sobject, values), "success": True, "errors": []}
        if method == "PATCH" and not parts:
            record_id = record.get("id") or record.get("Id")
            if not record_id:
                raise RecordError("MISSING_ARGUMENT", "Id not specified in an update call")
            self._take_lock(str(record_id))
            self.org.update(sobject, str(record_id), values)
            return {"id": record_id, "success": True, "errors": []}
        if method == "PATCH" and len(parts) == 2:
            record_id, created = apply_upsert(self.org, sobject, parts[1], values)
            return {"id": record_id, "success": True, "errors": [], "created": created}
        raise RecordError("METHOD_NOT_ALLOWED", "HTTP method not allowed")

    # -- Composite ------------------------------------------------------------------------------

    def _composite(self, body: Any, version: str) -> Response:
        """``POST /composite``: subrequests in order, in one API call, each answered as its resource answers.

        Refused as a whole (400, nothing executed): more than 25 subrequests, more than 5 of them queries or
        sObject Collections, a subrequest without method, url or referenceId, a referenceId that is not
        letters, digits and underscores or is used twice, a subrequest setting Accept, Authorization or
        Content-Type (they are inherited). ``@{ref.path}`` in a url or in a body's strings is the value at
        ``path`` (``.field``, ``[index]``) of an earlier subrequest's response body; a reference to a
        subrequest that failed, or to none, halts the subrequest that holds it. With allOrNone, the first
        failure rolls the org back and every other subrequest answers 400 PROCESSING_HALTED.
        """
        if not isinstance(body, dict) or not isinstance(body.get("compositeRequest"), list):
            return _errors(400, "JSON_PARSER_ERROR", "expected {allOrNone, compositeRequest: [...]}")
        unknown = sorted(set(body) - {"allOrNone", "collateSubrequests", "compositeRequest"})
        if unknown:
            return _errors(400, "JSON_PARSER_ERROR", f'Unrecognized field "{unknown[0]}"')
        subrequests: list[Any] = body["compositeRequest"]
        problem = self._composite_problem(subrequests)
        if problem is not None:
            return _errors(400, problem[0], problem[1])
        all_or_none = bool(body.get("allOrNone"))
        snapshot = json.loads(json.dumps(self.org.records)) if all_or_none else None
        outcomes: dict[str, tuple[int, Any]] = {}
        results: list[dict[str, Any]] = []
        failed_at: int | None = None
        for index, sub in enumerate(subrequests):
            reference = str(sub["referenceId"])
            if failed_at is not None:
                results.append(_halted(reference, ROLLED_BACK))
                continue
            status: int
            reply: Any
            headers: dict[str, str]
            try:
                url = _resolve(str(sub["url"]), outcomes)
                sub_body = _resolve_body(sub.get("body"), outcomes)
            except _Unresolved as exc:
                status, reply, headers = 400, [{"errorCode": "PROCESSING_HALTED", "message": str(exc)}], {}
            else:
                status, reply, headers = self._subrequest(str(sub["method"]), url, sub_body, all_or_none)
            outcomes[reference] = (status, reply)
            results.append(
                {"body": reply, "httpHeaders": headers, "httpStatusCode": status, "referenceId": reference}
            )
            if status >= 400 and all_or_none:
                failed_at = index
        if failed_at is not None and snapshot is not None:
            self.org.records = snapshot
            results = [
                result if index == failed_at else _halted(result["referenceId"], ROLLED_BACK)
                for index, result in enumerate(results)
            ]
        return JSONResponse({"compositeResponse": results})

    @staticmethod
    def _composite_problem(subrequests: list[Any]) -> tuple[str, str] | None:
        if len(subrequests) > COMPOSITE_LIMIT:
            return (
                "LIMIT_EXCEEDED",
                f"Composite requests take at most {COMPOSITE_LIMIT} subrequests, not {len(subrequests)}",
            )
        seen: set[str] = set()
        queries = 0
        for sub in subrequests:
            if not isinstance(sub, dict):
                return ("JSON_PARSER_ERROR", "each subrequest must be a JSON object")
            unknown = sorted(set(sub) - {"method", "url", "referenceId", "body", "httpHeaders"})
            if unknown:
                return ("JSON_PARSER_ERROR", f'Unrecognized field "{unknown[0]}"')
            method, url, reference = sub.get("method"), sub.get("url"), sub.get("referenceId")
            if method not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                return ("INVALID_API_INPUT", f"Invalid method for a subrequest: {method}")
            if not isinstance(url, str) or not SUB_URL.match(urlsplit(url).path):
                return ("INVALID_API_INPUT", f"A subrequest url must start with /services/data/vXX.X/: {url}")
            if not isinstance(reference, str) or not REFERENCE_ID.match(reference):
                return (
                    "INVALID_API_INPUT",
                    f"Invalid referenceId ('{reference}'): only letters, numbers and underscores are allowed",
                )
            if reference in seen:
                return ("INVALID_API_INPUT", f"Duplicate referenceId provided in the request: {reference}")
            seen.add(reference)
            headers = sub.get("httpHeaders") or {}
            if not isinstance(headers, dict) or {h.lower() for h in headers} & COMPOSITE_INHERITED_HEADERS:
                return (
                    "INVALID_API_INPUT",
                    "A subrequest cannot set Accept, Authorization or Content-Type: they are inherited",
                )
            rest = SUB_URL.match(urlsplit(url).path)
            assert rest is not None
            if rest.group(2).startswith(("query", "queryAll", "composite/sobjects")):
                queries += 1
        if queries > COMPOSITE_QUERY_LIMIT:
            return (
                "LIMIT_EXCEEDED",
                f"Composite requests take at most {COMPOSITE_QUERY_LIMIT} query or sObject Collections "
                f"subrequests, not {queries}",
            )
        return None

    def _subrequest(
        self, method: str, url: str, body: Any, all_or_none: bool = False
    ) -> tuple[int, Any, dict[str, str]]:
        """One subrequest. Under a Composite allOrNone, an sObject Collections subrequest is all-or-none too
        (whatever its own flag says), and one failed record makes it a failed subrequest: 400, with the
        per-record results as its body (the culprit's error, ALL_OR_NONE_OPERATION_ROLLED_BACK for the rest).
        """
        split = urlsplit(url)
        match = SUB_URL.match(split.path)
        if match is None:  # a reference resolved into a url that is no longer one
            return 404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}], {}
        version, rest = match.group(1), match.group(2)
        if not rest.startswith(("sobjects/", "query", "queryAll", "composite/sobjects")):
            message = f"The resource is not supported in a composite request: {split.path}"
            return 400, [{"errorCode": "INVALID_API_INPUT", "message": message, "fields": []}], {}
        collection = rest.startswith("composite/sobjects")
        if collection and all_or_none and isinstance(body, dict):
            body = {**body, "allOrNone": True}
        params = dict(parse_qsl(split.query))
        response = self._dispatch(method, "/" + rest, params, version, body)
        reply: Any = json.loads(bytes(response.body)) if response.body else None
        if (
            collection
            and all_or_none
            and response.status_code < 300
            and isinstance(reply, list)
            and not all(isinstance(r, dict) and r.get("success") for r in reply)
        ):
            return 400, reply, {}
        headers: dict[str, str] = {}
        if response.status_code == 201 and rest.startswith("sobjects/") and isinstance(reply, dict):
            headers["Location"] = f"/services/data/{version}/sobjects/{rest.split('/')[1]}/{reply.get('id')}"
        return response.status_code, reply, headers

    def _chatter(self, body: Any) -> Response:
        if (
            not isinstance(body, dict)
            or body.get("feedElementType") != "FeedItem"
            or not body.get("subjectId")
        ):
            return _errors(400, "INVALID_API_INPUT", "feedElementType FeedItem and subjectId are required")
        if self.org.find(str(body["subjectId"])) is None:
            return _errors(404, "NOT_FOUND", "The requested resource does not exist")
        segments = (body.get("body") or {}).get("messageSegments") or []
        text = "".join(str(s.get("text", "")) for s in segments if isinstance(s, dict))
        values = {"ParentId": body["subjectId"], "Body": text, "Type": "TextPost"}
        feed_id = self.org.create("FeedItem", values, system=True)
        self._stamp_created("FeedItem", feed_id)
        return JSONResponse({"id": feed_id, "feedElementType": "FeedItem"}, status_code=201)


def _sort_key(name: str, record: dict[str, Any]) -> tuple[bool, str]:
    """ORDER BY: nulls last, then by the value's text."""
    return (record.get(name) is None, str(record.get(name) or ""))


class _Unresolved(Exception):
    """A Composite reference that names no earlier successful subrequest, or no value in its response."""


SUB_URL = re.compile(r"^/services/data/(v\d+\.\d)/(.+)$")


def _halted(reference: str, message: str) -> dict[str, Any]:
    return {
        "body": [{"errorCode": "PROCESSING_HALTED", "message": message}],
        "httpHeaders": {},
        "httpStatusCode": 400,
        "referenceId": reference,
    }


def _resolve(text: str, outcomes: dict[str, tuple[int, Any]]) -> str:
    """Replace every ``@{ref.path}`` in ``text`` by that value of the earlier response ``ref``."""

    def value(match: re.Match[str]) -> str:
        reference, path = match.group(1), match.group(2)
        outcome = outcomes.get(reference)
        problem = _Unresolved(
            f"Invalid reference specified. No value for {reference}{path} found in {reference}. "
            f"Provided referenceId ('{reference}') must name an earlier subrequest that succeeded"
        )
        if outcome is None or outcome[0] >= 400:
            raise problem
        found: Any = outcome[1]
        for step in re.findall(r"\.([A-Za-z0-9_]+)|\[(\d+)\]", path):
            name, index = step
            if name and isinstance(found, dict) and name in found:
                found = found[name]
            elif index and isinstance(found, list) and int(index) < len(found):
                found = found[int(index)]
            else:
                raise problem
        if found is None or isinstance(found, (dict, list)):
            raise problem
        return found if isinstance(found, str) else json.dumps(found)

    return REFERENCE.sub(value, text)


def _resolve_body(body: Any, outcomes: dict[str, tuple[int, Any]]) -> Any:
    if isinstance(body, str):
        return _resolve(body, outcomes)
    if isinstance(body, dict):
        return {key: _resolve_body(item, outcomes) for key, item in body.items()}
    if isinstance(body, list):
        return [_resolve_body(item, outcomes) for item in body]
    return body


# --- serving over TLS ------------------------------------------------------------------------------


def generate_key_pair() -> tuple[str, str]:
    """(private PEM, public PEM) of a connected app's certificate key, made fresh for a demo, test or bench.

    The emulator is given the public half (``public_key_pem``), the connector's ``private_key`` the other.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    return private, public


class TlsServer(BackgroundServer):
    """The emulator served over TLS (simple-salesforce insists on https) on a free loopback port.

    The certificate comes from a fresh trustme CA; ``ca_file`` is its PEM, which clients must trust
    explicitly. ``tls=False`` serves plain HTTP (a test's webhook receiver).
    """

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", tls: bool = True) -> None:
        import trustme  # a test and demo dependency only

        self.tls = tls
        self._dir = tempfile.TemporaryDirectory(prefix="sf-emulator-")
        ca = trustme.CA()
        self.ca_file = str(Path(self._dir.name) / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        key_file = str(Path(self._dir.name) / "server.pem")
        ca.issue_cert(host, "localhost").private_key_and_cert_chain_pem.write_to_path(key_file)
        super().__init__(app, host, certfile=key_file if tls else None)

    def stop(self) -> None:
        super().stop()
        self._dir.cleanup()


@contextmanager
def serve_tls(app: ASGIApp, host: str = "127.0.0.1", tls: bool = True) -> Iterator[TlsServer]:
    """Serve ``app`` over TLS (or plain HTTP, for a test's webhook receiver) while the block runs."""
    server = TlsServer(app, host, tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()
