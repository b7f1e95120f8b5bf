"""A local stand-in of a Dataverse environment and its Entra ID authority, as strict as the real ones.

Test and demo code only: production code never imports this module (``hub_dynamics/__init__`` loads it
lazily when ``cxhub demo`` asks). It serves, over TLS with a test CA (``TlsServer``):

- Entra ID: ``{tenant}/v2.0/.well-known/openid-configuration`` and ``{tenant}/oauth2/v2.0/token`` (client
  credentials with a client secret or a certificate assertion, the scope's audience checked; tokens expire);
- the Web API under ``/api/data/v9.2``: WhoAmI, ``EntityDefinitions`` metadata, entity sets with
  ``$select``, ``$filter`` (eq/ne/ge/gt/le/lt and ``Microsoft.Dynamics.CRM.In`` joined by ``and``: what the
  connector uses; anything else is a 400), ``$top``, paging (``Prefer: odata.maxpagesize``, ``@odata.nextLink``), change tracking
  (``Prefer: odata.track-changes``, delta tokens that expire, ``$deletedEntity``), PATCH upserts and POST
  creates with ``If-Match``/``If-None-Match``, column types and lengths, lookups bound with ``@odata.bind``,
  activity parties deep-inserted with an activity (``<activity>_activity_parties``: each party's
  ``partyid_<table>@odata.bind`` and ``participationtypemask`` checked, ``activityparties`` read-only), and
  ``$batch`` (multipart parsed strictly, changesets with Content-ID, at most 1000 requests,
  ``odata.continue-on-error``);
- the activities closing a record leaves, one per closing (``incidentresolutions``, ``opportunitycloses``),
  created by the ``close_incident`` / ``win_opportunity`` helpers as CloseIncident / WinOpportunity do;
- service protection limits per user and 5-minute window (requests, execution time) with 429,
  ``Retry-After`` and Dataverse's error codes; latency and fault switches; a record of every call.

Errors have Dataverse's shape ``{"error": {"code": "0x...", "message": ...}}``. Where the documentation
leaves a detail open (the exact code of an expired delta token, of a batch over 1000 requests) the code
used is marked *unconfirmed*; the connector does not depend on it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub.testing.server import TlsServer

API = "/api/data/v9.2"
BATCH_LIMIT = 1000
WINDOW_SECONDS = 300.0
ERR_SYNTAX = "0x80060888"
ERR_NOT_FOUND = "0x80040217"
ERR_VALIDATION = "0x80044331"
ERR_DUPLICATE = "0x80040237"
ERR_REQUESTS = "0x80072322"
ERR_EXECUTION_TIME = "0x80072321"
ERR_CONCURRENCY = "0x80072326"
ERR_DELTA_EXPIRED = "0x80044352"  # unconfirmed
ERR_BATCH_TOO_LARGE = "0x8005f103"  # unconfirmed
ERR_AUTH = "0x80072243"
ERR_OPTION_RANGE = ERR_VALIDATION  # unconfirmed: the code of an option value outside its range
#: ActivityParty.ParticipationTypeMask: Sender 1, To 2, Cc 3, Bcc 4, Required 5, Optional 6, Organizer 7,
#: Regarding 8, Owner 9, Resource 10, Customer 11, ChatParticipant 12, Related 13 (a custom activity
#: table accepts every type)
PARTICIPATION_TYPES = tuple(range(1, 14))
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
ENTITY_KEY = re.compile(r"^([A-Za-z_]+)\(([^)]*)\)$")
CONDITION = re.compile(r"^([a-z_][a-z0-9_]*) (eq|ne|ge|gt|le|lt) (.+)$")
IN_FUNCTION = re.compile(
    r"^Microsoft\.Dynamics\.CRM\.In\(PropertyName='([a-z_][a-z0-9_]*)',\s*PropertyValues=\[(.*)\]\)$"
)
IN_ITEM = "'((?:[^']|'')*)'|" + '"([^"]*)"'  # a single-quoted (quotes doubled) or double-quoted text
IN_VALUE = rf"\s*(?:{IN_ITEM})\s*"
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


class Fault(Exception):
    """A Dataverse error answer."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


# --- the schema -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    kind: str  # string memo int decimal bool datetime choice state lookup
    max_length: int = 0
    options: tuple[int, ...] = ()
    targets: tuple[str, ...] = ()  # lookups: the tables it may point at
    read_only: bool = False


@dataclass
class Table:
    logical: str
    entity_set: str
    key: str
    columns: dict[str, Column]
    track_changes: bool = True
    activity: bool = False  # an activity table (IsActivity): it has ``<logical>_activity_parties``
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def parties(self) -> str:
        """The collection-valued navigation property of the activity's parties."""
        return f"{self.logical}_activity_parties"

    def navigation(self, name: str) -> tuple[str, str] | None:
        """``<lookup>_<table>[_<this table>]`` nav property -> (lookup column, target table)."""
        for column, spec in self.columns.items():
            if spec.kind != "lookup":
                continue
            for target in spec.targets:
                if name in (f"{column}_{target}", f"{column}_{target}_{self.logical}", column):
                    if name == column and len(spec.targets) > 1:
                        continue
                    return column, target
        return None


CATEGORY = (100000000, 100000001, 100000002)
CUSTOM_CONTACT = {
    "cxhub_lastscore": Column("int"),
    "cxhub_lastcategory": Column("choice", options=CATEGORY),
    "cxhub_lastresponsedate": Column("datetime"),
    "cxhub_lastcomment": Column("memo", 2000),
    "cxhub_averagescore": Column("decimal"),
    "cxhub_averagescore30d": Column("decimal"),
    "cxhub_responsecount": Column("int"),
    "cxhub_surveyoptout": Column("bool"),
    "cxhub_surveyoptoutdate": Column("datetime"),
    "cxhub_surveyoptoutreason": Column("string", 200),
}
CUSTOM_INCIDENT = {
    "cxhub_feedbackscore": Column("int"),
    "cxhub_feedbackcomment": Column("memo", 2000),
    "cxhub_feedbackdate": Column("datetime"),
}


def _schema(solution: bool) -> dict[str, Table]:
    modified = Column("datetime", read_only=True)
    created = Column("datetime", read_only=True)
    tables = [
        Table(
            "systemuser",
            "systemusers",
            "systemuserid",
            {
                "fullname": Column("string", 200),
                "internalemailaddress": Column("string", 100),
            },
            track_changes=False,
        ),
        Table(
            "account",
            "accounts",
            "accountid",
            {
                "name": Column("string", 160),
                "primarycontactid": Column("lookup", targets=("contact",)),
                "modifiedon": modified,
            },
        ),
        Table(
            "contact",
            "contacts",
            "contactid",
            {
                "firstname": Column("string", 50),
                "lastname": Column("string", 50),
                "emailaddress1": Column("string", 100),
                "mobilephone": Column("string", 50),
                "donotemail": Column("bool"),
                "donotbulkemail": Column("bool"),
                "donotsms": Column("bool"),
                "statecode": Column("state", options=(0, 1)),
                "modifiedon": modified,
                **(CUSTOM_CONTACT if solution else {}),
            },
        ),
        Table(
            "incident",
            "incidents",
            "incidentid",
            {
                "title": Column("string", 200),
                "ticketnumber": Column("string", 100),
                "statecode": Column("state", options=(0, 1, 2)),
                "statuscode": Column("int"),
                "customerid": Column("lookup", targets=("account", "contact")),
                "primarycontactid": Column("lookup", targets=("contact",)),
                "ownerid": Column("lookup", targets=("systemuser",)),
                "modifiedon": modified,
                **(CUSTOM_INCIDENT if solution else {}),
            },
        ),
        Table(
            "opportunity",
            "opportunities",
            "opportunityid",
            {
                "name": Column("string", 300),
                "statecode": Column("state", options=(0, 1, 2)),
                "actualclosedate": Column("datetime"),
                "parentcontactid": Column("lookup", targets=("contact",)),
                "ownerid": Column("lookup", targets=("systemuser",)),
                "modifiedon": modified,
            },
        ),
        Table(  # the case resolution activity CloseIncident creates (one per resolution)
            "incidentresolution",
            "incidentresolutions",
            "activityid",
            {
                "subject": Column("string", 200),
                "incidentid": Column("lookup", targets=("incident",)),
                "actualend": Column("datetime"),
                "statecode": Column("state", options=(0, 1, 2)),
                "createdon": created,
                "modifiedon": modified,
            },
            track_changes=False,
            activity=True,
        ),
        Table(  # the opportunity close activity WinOpportunity (and LoseOpportunity) creates
            "opportunityclose",
            "opportunitycloses",
            "activityid",
            {
                "subject": Column("string", 200),
                "opportunityid": Column("lookup", targets=("opportunity",)),
                "actualend": Column("datetime"),
                "statecode": Column("state", options=(0, 1, 2)),
                "createdon": created,
                "modifiedon": modified,
            },
            track_changes=False,
            activity=True,
        ),
        Table(
            "annotation",
            "annotations",
            "annotationid",
            {
                "subject": Column("string", 500),
                "notetext": Column("memo", 100000),
                "objectid": Column("lookup", targets=("incident", "opportunity", "contact")),
                "modifiedon": modified,
            },
            track_changes=False,
        ),
    ]
    if solution:
        tables.append(
            Table(
                "cxhub_surveyresponse",
                "cxhub_surveyresponses",
                "activityid",
                {
                    "subject": Column("string", 400),
                    "description": Column("memo", 2000),
                    "actualend": Column("datetime"),
                    "cxhub_score": Column("int"),
                    "cxhub_category": Column("choice", options=CATEGORY),
                    "cxhub_comment": Column("memo", 2000),
                    "cxhub_responseid": Column("string", 100),
                    "regardingobjectid": Column("lookup", targets=("incident", "opportunity", "contact")),
                    "modifiedon": modified,
                },
                track_changes=False,
                activity=True,
            )
        )
    tables.append(
        Table(
            "activityparty",
            "activityparties",
            "activitypartyid",
            {
                "participationtypemask": Column("choice", options=PARTICIPATION_TYPES),
                "partyid": Column("lookup", targets=("contact", "account", "systemuser")),
                "activityid": Column(
                    "lookup", targets=tuple(t.logical for t in tables if t.activity), read_only=True
                ),
                "addressused": Column("string", 320),
            },
            track_changes=False,
        )
    )
    return {t.logical: t for t in tables}


def now_text(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- recorded calls, switches -----------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: str
    status: int
    kind: str  # "login" (Entra ID), "api" (Web API), "batch-part" (inside a $batch)
    received: float = 0.0  # the emulator's clock when the request came in (before the latency switch)
    answered: float = 0.0  # ... and when it was answered: a Retry-After counts from here
    retry_after: float | None = None  # the answer's Retry-After, seconds


@dataclass
class Throttle:
    count: int
    status: int
    retry_after: float | None
    code: str
    writes_only: bool
    after: int = 0


@dataclass
class Application:
    client_id: str
    secret: str | None = None
    certificate_pem: str | None = None


# --- the emulator -----------------------------------------------------------------------------------


class DataverseEmulator:
    """One environment. ``url`` must be set to where it is served before msal or the connector call it."""

    def __init__(
        self,
        tenant_id: str = "contoso.onmicrosoft.com",
        *,
        solution: bool = True,
        window_requests: int = 6000,
        window_execution_ms: float = 20 * 60 * 1000,
        operation_ms: float = 5.0,
        token_seconds: float = 3599.0,
        delta_token_seconds: float = 7 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tenant_id = tenant_id
        self.url = ""
        self.tables = _schema(solution)
        self.apps: dict[str, Application] = {}
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> (client_id, expires)
        self.window_requests = window_requests
        self.window_execution_ms = window_execution_ms
        self.operation_ms = operation_ms
        self.token_seconds = token_seconds
        self.delta_token_seconds = delta_token_seconds
        self.clock = clock
        self.calls: list[Call] = []
        self.version = 0
        self.deleted: list[tuple[int, str, str]] = []
        self.organization_id = str(uuid.uuid4())
        self.user_id = str(uuid.uuid4())
        self.latency = 0.0
        self.concurrency_limit = 52
        self._in_flight = 0
        self.throttles: list[Throttle] = []
        self.row_faults: dict[str, tuple[int, str, str]] = {}
        self.delta_tokens_valid_after = 0.0
        self._usage: dict[str, list[tuple[float, float]]] = {}  # client -> [(at, execution ms)]
        self._lock = threading.RLock()
        self.app = Starlette(
            routes=[
                Route("/{tenant}/v2.0/.well-known/openid-configuration", self._openid, methods=["GET"]),
                Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
                Route(API + "/{path:path}", self._api, methods=["GET", "POST", "PATCH", "DELETE"]),
            ]
        )

    # -- set-up ---------------------------------------------------------------------------------

    def register_app(
        self, client_id: str, secret: str | None = None, certificate_pem: str | None = None
    ) -> None:
        self.apps[client_id] = Application(client_id, secret, certificate_pem)

    def _stamp(self, table: Table, row: dict[str, Any]) -> None:
        self.version += 1
        row["_version"] = self.version
        if "modifiedon" in table.columns:
            row["modifiedon"] = now_text(self.clock())
        if "createdon" in table.columns:
            row.setdefault("createdon", now_text(self.clock()))

    def add(self, table: str, **values: Any) -> str:
        """Insert a row as a CRM user would (no validation of read-only columns); returns its id."""
        with self._lock:
            spec = self.tables[table]
            row_id = str(values.pop(spec.key, uuid.uuid4()))
            row: dict[str, Any] = {spec.key: row_id}
            for name, value in values.items():
                column = spec.columns[name]
                row[f"_{name}_value" if column.kind == "lookup" else name] = value
                if column.kind == "lookup":
                    row[f"_{name}_table"] = next(t for t in column.targets if value in self.tables[t].rows)
            if "statecode" in spec.columns:
                row.setdefault("statecode", 0)
            self._stamp(spec, row)
            spec.rows[row_id] = row
            return row_id

    def update(self, table: str, row_id: str, **values: Any) -> None:
        """Change a row as a CRM user would (e.g. resolve a case: statecode=1, statuscode=5)."""
        with self._lock:
            spec = self.tables[table]
            row = spec.rows[row_id]
            row.update(values)
            self._stamp(spec, row)

    def close_incident(self, incident: str, statuscode: int = 5, subject: str = "Problem solved") -> str:
        """Resolve a case as ``CloseIncident`` does: a completed case resolution activity is created for the
        case, then the case becomes Resolved. Returns the resolution's activityid."""
        with self._lock:
            resolution = self.add(
                "incidentresolution",
                subject=subject,
                incidentid=incident,
                actualend=now_text(self.clock()),
                statecode=1,
            )
            self.update("incident", incident, statecode=1, statuscode=statuscode)
            return resolution

    def win_opportunity(self, opportunity: str, subject: str = "Won") -> str:
        """Win an opportunity as ``WinOpportunity`` does: a completed opportunity close activity is created,
        then the opportunity becomes Won (``actualclosedate`` set). Returns the activity's activityid."""
        with self._lock:
            closed = now_text(self.clock())
            activity = self.add(
                "opportunityclose", subject=subject, opportunityid=opportunity, actualend=closed, statecode=1
            )
            self.update("opportunity", opportunity, statecode=1, actualclosedate=closed)
            return activity

    def delete(self, table: str, row_id: str) -> None:
        """Delete a row; an activity's parties go with it."""
        with self._lock:
            del self.tables[table].rows[row_id]
            self.version += 1
            self.deleted.append((self.version, table, row_id))
            if self.tables[table].activity:
                parties = self.tables["activityparty"].rows
                for party_id in [p for p, row in parties.items() if row.get("_activityid_value") == row_id]:
                    del parties[party_id]

    def row(self, table: str, row_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.tables[table].rows.get(row_id)
            return copy.deepcopy(row) if row else None

    def rows(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(r) for r in self.tables[table].rows.values()]

    def parties(self, activity_id: str) -> list[dict[str, Any]]:
        """The activity party rows of an activity."""
        return [r for r in self.rows("activityparty") if r.get("_activityid_value") == activity_id.lower()]

    def timeline(self, record_id: str) -> list[dict[str, Any]]:
        """The activities on a record's timeline: those regarding it, and those it is a party of (as a
        contact's timeline shows an email it received or an activity it is the customer of)."""
        record_id = record_id.lower()
        with self._lock:
            party_of = {
                r.get("_activityid_value")
                for r in self.tables["activityparty"].rows.values()
                if r.get("_partyid_value") == record_id
            }
            return [
                copy.deepcopy(row)
                for table in self.tables.values()
                if table.activity
                for row_id, row in table.rows.items()
                if row.get("_regardingobjectid_value") == record_id or row_id in party_of
            ]

    # -- switches -------------------------------------------------------------------------------

    def throttle(
        self,
        count: int,
        status: int = 429,
        retry_after: float | None = 1.0,
        *,
        code: str = ERR_REQUESTS,
        writes_only: bool = False,
        after: int = 0,
    ) -> None:
        """Answer ``count`` Web API requests (or writes only) with ``status``, from the one after the next
        ``after`` on (a storm in the middle of a sync); 0 clears."""
        with self._lock:
            self.throttles = [Throttle(count, status, retry_after, code, writes_only, after)] if count else []

    def fail_row(
        self, row_id: str, status: int = 400, code: str = ERR_VALIDATION, message: str = "refused"
    ) -> None:
        """Every write to this row fails (e.g. a plug-in on the record throws)."""
        self.row_faults[row_id] = (status, code, message)

    def expire_delta_tokens(self) -> None:
        """Every delta token issued so far is expired (as after 7 days, or a table's tracking reset)."""
        self.delta_tokens_valid_after = self.clock() + 1e-6

    def revoke_tokens(self) -> None:
        """Access tokens issued so far are refused (as after a credential rotation)."""
        with self._lock:
            self.tokens.clear()

    def calls_of(self, kind: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.kind == kind]

    # -- Entra ID -------------------------------------------------------------------------------

    def _record(
        self,
        method: str,
        path: str,
        query: str,
        status: int,
        kind: str,
        received: float | None = None,
        retry_after: float | None = None,
    ) -> None:
        now = self.clock()
        call = Call(
            method, path, query, status, kind, now if received is None else received, now, retry_after
        )
        with self._lock:
            self.calls.append(call)

    async def _openid(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        status = 200 if tenant == self.tenant_id else 400
        self._record("GET", request.url.path, "", status, "login")
        if status != 200:
            return JSONResponse(
                {"error": "invalid_tenant", "error_description": "AADSTS90002: Tenant not found."}, 400
            )
        base = f"{self.url}/{tenant}"
        return JSONResponse(
            {
                "issuer": f"{self.url}/{tenant}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            }
        )

    async def _token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        try:
            client_id = self._authenticate_client(request.path_params["tenant"], form, str(request.url))
            status, body = 200, self._issue(client_id)
        except Fault as fault:
            status, body = fault.status, {"error": fault.code, "error_description": fault.message}
        self._record("POST", request.url.path, "", status, "login")
        return JSONResponse(body, status)

    def _authenticate_client(self, tenant: str, form: dict[str, str], endpoint: str) -> str:
        if tenant != self.tenant_id:
            raise Fault(400, "invalid_request", "AADSTS90002: Tenant not found.")
        if form.get("grant_type") != "client_credentials":
            raise Fault(400, "unsupported_grant_type", "AADSTS70003: only client_credentials here")
        app = self.apps.get(form.get("client_id", ""))
        if app is None:
            raise Fault(400, "unauthorized_client", "AADSTS700016: Application not found in the directory.")
        if form.get("scope") != f"{self.url}/.default":
            raise Fault(400, "invalid_scope", "AADSTS1002012: The provided value for scope is not valid.")
        if "client_secret" in form:
            if app.secret is None or not secrets.compare_digest(form["client_secret"], app.secret):
                raise Fault(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
            return app.client_id
        assertion = form.get("client_assertion")
        if (
            form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            or not assertion
        ):
            raise Fault(
                401, "invalid_client", "AADSTS7000216: client_assertion or client_secret is required."
            )
        self._verify_assertion(app, assertion, endpoint)
        return app.client_id

    def _verify_assertion(self, app: Application, assertion: str, endpoint: str) -> None:
        from cryptography import x509  # the emulator's own dependency
        from cryptography.hazmat.primitives.asymmetric import rsa

        if app.certificate_pem is None:
            raise Fault(401, "invalid_client", "AADSTS700027: no certificate registered for the app.")
        key = x509.load_pem_x509_certificate(app.certificate_pem.encode("ascii")).public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise Fault(401, "invalid_client", "AADSTS700027: the certificate's key is not RSA.")
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=["RS256", "PS256"],
                audience=endpoint,
                issuer=app.client_id,
                options={"require": ["exp", "aud", "iss", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise Fault(401, "invalid_client", f"AADSTS700027: Client assertion failed: {exc}") from None
        if claims.get("sub") != app.client_id:
            raise Fault(401, "invalid_client", "AADSTS700023: sub must be the client id.")

    def _issue(self, client_id: str) -> dict[str, Any]:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self.tokens[token] = (client_id, self.clock() + self.token_seconds)
        return {
            "token_type": "Bearer",
            "expires_in": int(self.token_seconds),
            "ext_expires_in": int(self.token_seconds),
            "access_token": token,
        }

    # -- the Web API ----------------------------------------------------------------------------

    async def _api(self, request: Request) -> Response:
        path = request.path_params["path"]
        query = request.url.query
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        received = self.clock()
        with self._lock:
            self._in_flight += 1
            crowded = self._in_flight > self.concurrency_limit
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            return self._answer(request.method, path, query, headers, body, crowded, received)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _answer(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        crowded: bool,
        received: float,
    ) -> Response:
        try:
            client = self._bearer(headers)
            if crowded:
                raise Fault(
                    429,
                    ERR_CONCURRENCY,
                    f"Number of concurrent requests exceeded the limit of {self.concurrency_limit}.",
                    {"Retry-After": "1"},
                )
            self._protect(client, method, path)
            if path == "$batch" and method == "POST":
                status, out_headers, content = self._batch(client, headers, body)
            else:
                status, out_headers, payload = self._execute(method, path, query, headers, body)
                self._spend(client, 1)
                content = json.dumps(payload).encode() if payload is not None else b""
                if payload is not None:
                    out_headers.setdefault("Content-Type", "application/json; odata.metadata=minimal")
        except Fault as fault:
            status, out_headers, content = (
                fault.status,
                dict(fault.headers),
                json.dumps(fault.body()).encode(),
            )
            out_headers["Content-Type"] = "application/json"
        wait = out_headers.get("Retry-After")
        self._record(
            method, "/" + path, unquote(query), status, "api", received, float(wait) if wait else None
        )
        out_headers["OData-Version"] = "4.0"
        return Response(content, status, headers=out_headers)

    def _bearer(self, headers: dict[str, str]) -> str:
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        with self._lock:
            entry = self.tokens.get(token)
        if entry is None or entry[1] < self.clock():
            raise Fault(
                401,
                ERR_AUTH,
                "The user is not authenticated",
                {
                    "WWW-Authenticate": f'Bearer authorization_uri="{self.url}/{self.tenant_id}/oauth2/authorize"'
                },
            )
        return entry[0]

    def _protect(self, client: str, method: str, path: str) -> None:
        """Service protection: switches first, then the 5-minute window's requests and execution time."""
        now = self.clock()
        with self._lock:
            if self.throttles:
                rule = self.throttles[0]
                if rule.after and (not rule.writes_only or method != "GET"):
                    rule.after -= 1
                elif not rule.writes_only or method != "GET":
                    rule.count -= 1
                    if rule.count <= 0:
                        self.throttles.clear()
                    headers = (
                        {"Retry-After": str(int(rule.retry_after))} if rule.retry_after is not None else {}
                    )
                    raise Fault(
                        rule.status,
                        rule.code if rule.status == 429 else "0x80040216",
                        "Number of requests exceeded the limit"
                        if rule.status == 429
                        else "Service unavailable",
                        headers,
                    )
            usage = [u for u in self._usage.get(client, []) if u[0] > now - WINDOW_SECONDS]
            self._usage[client] = usage
            if len(usage) >= self.window_requests:
                wait = max(1, int(usage[0][0] + WINDOW_SECONDS - now) + 1)
                raise Fault(
                    429,
                    ERR_REQUESTS,
                    "Number of requests exceeded the limit of "
                    f"{self.window_requests} over time window of 300 seconds.",
                    {"Retry-After": str(wait)},
                )
            if sum(ms for _, ms in usage) >= self.window_execution_ms:
                wait = max(1, int(usage[0][0] + WINDOW_SECONDS - now) + 1)
                raise Fault(
                    429,
                    ERR_EXECUTION_TIME,
                    "Combined execution time of incoming requests "
                    "exceeded limit of 1,200,000 milliseconds over time window of 300 seconds.",
                    {"Retry-After": str(wait)},
                )

    def _spend(self, client: str, operations: int) -> None:
        with self._lock:
            self._usage.setdefault(client, []).append((self.clock(), operations * self.operation_ms))

    def _execute(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        """One Web API request: (status, headers, JSON payload or None)."""
        with self._lock:
            params = self._params(query)
            if path == "WhoAmI" and method == "GET":
                return (
                    200,
                    {},
                    {
                        "BusinessUnitId": str(uuid.uuid5(uuid.NAMESPACE_URL, self.url)),
                        "UserId": self.user_id,
                        "OrganizationId": self.organization_id,
                    },
                )
            if path.startswith("EntityDefinitions("):
                return 200, {}, self._metadata(path, params)
            match = ENTITY_KEY.match(path)
            entity_set, key = (match.group(1), match.group(2)) if match else (path, None)
            table = next((t for t in self.tables.values() if t.entity_set == entity_set), None)
            if table is None:
                raise Fault(404, ERR_SYNTAX, f"Resource not found for the segment '{entity_set}'.")
            if table.logical == "activityparty" and (method != "GET" or key is not None):
                # only RetrieveMultiple: parties are written with their activity
                message = "Create" if method == "POST" else "Retrieve" if method == "GET" else method.title()
                raise Fault(
                    405,
                    ERR_SYNTAX,
                    f"The '{message}' method does not support entities of type 'activityparty'.",
                )
            if key is not None:
                if not GUID.match(key):
                    raise Fault(400, ERR_SYNTAX, f"Bad Request - Error in query syntax: key {key!r}.")
                key = key.lower()
                if method == "GET":
                    return 200, {}, self._read(table, key, params, headers)
                if method == "PATCH":
                    return self._upsert(table, key, headers, body)
                if method == "DELETE":
                    if key not in table.rows:
                        raise self._missing(table, key)
                    self.delete(table.logical, key)
                    return 204, {}, None
            elif method == "GET":
                return 200, self._preference_headers(headers), self._collection(table, params, headers)
            elif method == "POST":
                return self._upsert(table, str(uuid.uuid4()), {**headers, "if-none-match": "*"}, body)
            raise Fault(405, ERR_SYNTAX, f"{method} is not allowed on {path}")

    # -- reads ----------------------------------------------------------------------------------

    def _params(self, query: str) -> dict[str, str]:
        params: dict[str, str] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name.startswith("$") and name not in (
                "$select",
                "$filter",
                "$top",
                "$orderby",
                "$expand",
                "$skiptoken",
                "$deltatoken",
                "$count",
            ):
                raise Fault(400, ERR_SYNTAX, f"The query parameter {name} is not supported")
            if name in params:
                raise Fault(400, ERR_SYNTAX, f"Query option '{name}' was specified more than once")
            params[name] = value
        return params

    def _select(self, table: Table, params: dict[str, str]) -> list[str]:
        names = [n.strip() for n in params.get("$select", "").split(",") if n.strip()]
        for name in names:
            if name == table.key or name in table.columns:
                continue
            if (
                name.startswith("_")
                and name.endswith("_value")
                and table.columns.get(name[1:-6], Column("x")).kind == "lookup"
            ):
                continue
            raise Fault(
                400,
                ERR_SYNTAX,
                f"Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{table.logical}'.",
            )
        return names or [table.key, *[c for c, s in table.columns.items() if s.kind != "lookup"]]

    def _shape(self, table: Table, row: dict[str, Any], names: list[str], annotate: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"@odata.etag": f'W/"{row["_version"]}"'}
        for name in names:
            out[name] = row.get(name)
            if annotate and name.startswith("_") and name.endswith("_value") and row.get(name):
                out[f"{name}@Microsoft.Dynamics.CRM.lookuplogicalname"] = row.get(f"{name[:-6]}_table")
        out[table.key] = row[table.key]
        return out

    @staticmethod
    def _prefer(headers: dict[str, str]) -> dict[str, str]:
        prefer: dict[str, str] = {}
        for item in headers.get("prefer", "").split(","):
            name, _, value = item.strip().partition("=")
            if name:
                prefer[name.strip()] = value.strip().strip('"')
        return prefer

    def _preference_headers(self, headers: dict[str, str]) -> dict[str, str]:
        prefer = self._prefer(headers)
        applied = (
            [f"odata.maxpagesize={prefer['odata.maxpagesize']}"] if "odata.maxpagesize" in prefer else []
        )
        if "odata.track-changes" in prefer:
            applied.append("odata.track-changes")
        return {"Preference-Applied": ",".join(applied)} if applied else {}

    def _read(
        self, table: Table, key: str, params: dict[str, str], headers: dict[str, str]
    ) -> dict[str, Any]:
        row = table.rows.get(key)
        if row is None:
            raise self._missing(table, key)
        annotate = "odata.include-annotations" in self._prefer(headers)
        return {
            "@odata.context": f"{self.url}{API}/$metadata#{table.entity_set}/$entity",
            **self._shape(table, row, self._select(table, params), annotate),
        }

    def _missing(self, table: Table, key: str) -> Fault:
        return Fault(404, ERR_NOT_FOUND, f"{table.logical} With Id = {key} Does Not Exist")

    def _page_size(self, headers: dict[str, str]) -> int:
        value = self._prefer(headers).get("odata.maxpagesize", "5000")
        if not value.isdigit() or not 0 < int(value) <= 5000:
            raise Fault(400, ERR_SYNTAX, "odata.maxpagesize must be between 1 and 5000")
        return int(value)

    def _collection(self, table: Table, params: dict[str, str], headers: dict[str, str]) -> dict[str, Any]:
        prefer = self._prefer(headers)
        names = self._select(table, params)
        annotate = "odata.include-annotations" in prefer
        size = self._page_size(headers)
        tracking = "odata.track-changes" in prefer or "$deltatoken" in params
        skip, snapshot = 0, self.version
        if "$skiptoken" in params:
            parts = params["$skiptoken"].split("!")
            if len(parts) != 2 or not all(p.isdigit() for p in parts):
                raise Fault(400, ERR_SYNTAX, "The $skiptoken is not valid")
            skip, snapshot = int(parts[0]), int(parts[1])
        if tracking:
            return self._changes(table, params, names, annotate, size, skip, snapshot)
        conditions = self._conditions(table, params.get("$filter"))
        rows = [r for r in table.rows.values() if self._matches(r, conditions)]
        rows.sort(key=lambda r: str(r[table.key]))
        if "$top" in params:
            if not params["$top"].isdigit():
                raise Fault(400, ERR_SYNTAX, "$top must be a non-negative integer")
            rows = rows[: int(params["$top"])]
        page = rows[skip : skip + size]
        out: dict[str, Any] = {
            "@odata.context": f"{self.url}{API}/$metadata#{table.entity_set}",
            "value": [self._shape(table, r, names, annotate) for r in page],
        }
        if skip + size < len(rows):
            out["@odata.nextLink"] = self._link(table, params, skiptoken=f"{skip + size}!{snapshot}")
        return out

    def _link(self, table: Table, params: dict[str, str], **extra: str) -> str:
        from urllib.parse import urlencode

        kept = {k: v for k, v in params.items() if k not in ("$skiptoken", "$deltatoken")}
        kept.update({f"${k}": v for k, v in extra.items()})
        return f"{self.url}{API}/{table.entity_set}?{urlencode(kept)}"

    def _changes(
        self,
        table: Table,
        params: dict[str, str],
        names: list[str],
        annotate: bool,
        size: int,
        skip: int,
        snapshot: int,
    ) -> dict[str, Any]:
        for refused in ("$filter", "$orderby", "$expand", "$top"):
            if refused in params:
                raise Fault(400, ERR_SYNTAX, f"{refused} is not supported with change tracking")
        if not table.track_changes:
            raise Fault(400, "0x80072491", f"Change tracking is not enabled for {table.logical}")
        since = 0
        if "$deltatoken" in params:
            token = params["$deltatoken"].split("!")
            if len(token) != 2 or not token[0].isdigit():
                raise Fault(400, ERR_SYNTAX, "The $deltatoken is not valid")
            issued = float(token[1]) if token[1].replace(".", "", 1).isdigit() else 0.0
            if issued < self.delta_tokens_valid_after or issued + self.delta_token_seconds < self.clock():
                raise Fault(
                    400,
                    ERR_DELTA_EXPIRED,
                    "The delta token has expired or is invalid; "
                    "resynchronize with a new change tracking request.",
                )
            since = int(token[0])
        changed: list[dict[str, Any]] = [
            self._shape(table, r, names, annotate)
            for r in sorted(table.rows.values(), key=lambda r: int(r["_version"]))
            if since < int(r["_version"]) <= snapshot
        ]
        changed += [
            {
                "@odata.context": f"{self.url}{API}/$metadata#{table.entity_set}/$deletedEntity",
                "id": row_id,
                "reason": "deleted",
            }
            for version, logical, row_id in self.deleted
            if logical == table.logical and since < version <= snapshot and since > 0
        ]
        page = changed[skip : skip + size]
        out: dict[str, Any] = {
            "@odata.context": f"{self.url}{API}/$metadata#{table.entity_set}/$delta",
            "value": page,
        }
        if skip + size < len(changed):
            extra = {"skiptoken": f"{skip + size}!{snapshot}"}
            if since:
                extra["deltatoken"] = params["$deltatoken"]
            out["@odata.nextLink"] = self._link(table, params, **extra)
        else:
            out["@odata.deltaLink"] = self._link(table, params, deltatoken=f"{snapshot}!{self.clock():.6f}")
        return out

    def _conditions(self, table: Table, expression: str | None) -> list[tuple[str, str, Any]]:
        """A ``$filter`` as (column, operator, value) triples, checked before any row is looked at."""
        conditions: list[tuple[str, str, Any]] = []
        for condition in (expression or "").split(" and ") if expression else []:
            function = IN_FUNCTION.match(condition.strip())
            if function is not None:
                conditions.append(self._in_condition(table, function.group(1), function.group(2)))
                continue
            match = CONDITION.match(condition.strip())
            if match is None:
                raise Fault(400, ERR_SYNTAX, f"Syntax error at position 0 in '{condition.strip()[:80]}'.")
            name, op, literal = match.groups()
            column = table.columns.get(name)
            lookup = name.startswith("_") and name.endswith("_value")
            if column is None and name != table.key and not lookup:
                raise Fault(
                    400,
                    ERR_SYNTAX,
                    f"Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{table.logical}'.",
                )
            conditions.append((name, op, self._literal(literal, column)))
        return conditions

    @staticmethod
    def _in_condition(table: Table, name: str, listed: str) -> tuple[str, str, Any]:
        """``Microsoft.Dynamics.CRM.In(PropertyName='<column>',PropertyValues=[...])``: PropertyName is a
        column's logical name (a lookup by its name, e.g. ``incidentid``, not ``_incidentid_value``: an
        *unconfirmed* detail), the values a non-empty list of string literals of that column's type."""
        column = table.columns.get(name)
        if column is None and name != table.key:
            raise Fault(
                400,
                ERR_SYNTAX,
                f"'{table.logical}' entity doesn't contain attribute with Name = '{name}'.",
            )
        if not re.fullmatch(f"{IN_VALUE}(,{IN_VALUE})*", listed):
            raise Fault(  # unconfirmed: the exact message of an empty or malformed PropertyValues
                400, ERR_SYNTAX, "PropertyValues must be a non-empty JSON array of string literals."
            )
        texts = [
            single.replace("''", "'") if single else double for single, double in re.findall(IN_ITEM, listed)
        ]
        kind = "guid" if column is None or column.kind == "lookup" else column.kind
        values: list[Any] = []
        for text in texts:
            if kind == "guid" and GUID.match(text):
                values.append(text.lower())
            elif kind in ("int", "choice", "state") and re.fullmatch(r"-?\d+", text):
                values.append(int(text))
            elif kind in ("string", "memo"):
                values.append(text)
            else:
                raise Fault(400, ERR_SYNTAX, f"Cannot convert the literal '{text[:40]}' for {name} ({kind}).")
        return (f"_{name}_value" if column is not None and column.kind == "lookup" else name), "in", values

    @staticmethod
    def _matches(row: dict[str, Any], conditions: list[tuple[str, str, Any]]) -> bool:
        for name, op, value in conditions:
            actual = row.get(name)
            if op == "in":
                wanted = {v.lower() if isinstance(v, str) else v for v in value}
                if (actual.lower() if isinstance(actual, str) else actual) not in wanted:
                    return False
                continue
            if op in ("eq", "ne"):
                if isinstance(actual, str) and isinstance(value, str):
                    equal = actual.lower() == value.lower()  # Dataverse compares text case-insensitively
                else:
                    equal = actual == value
                if equal != (op == "eq"):
                    return False
                continue
            if actual is None or value is None:
                return False
            compare = {
                "ge": actual >= value,
                "gt": actual > value,
                "le": actual <= value,
                "lt": actual < value,
            }
            if not compare[op]:
                return False
        return True

    @staticmethod
    def _literal(text: str, column: Column | None) -> Any:
        if text == "null":
            return None
        if text in ("true", "false"):
            return text == "true"
        if len(text) >= 2 and text[0] == text[-1] == "'":
            inner = text[1:-1]
            if re.search(r"(?<!')'(?!')", inner):
                raise Fault(400, ERR_SYNTAX, "Syntax error: an unescaped quote in a string literal.")
            return inner.replace("''", "'")
        if GUID.match(text):
            return text.lower()
        if DATETIME.match(text):
            if column is not None and column.kind != "datetime":
                raise Fault(400, ERR_SYNTAX, "A binary operator with incompatible types was detected.")
            return text[:19] + "Z"
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return float(text) if "." in text else int(text)
        raise Fault(400, ERR_SYNTAX, f"Syntax error: '{text[:40]}' is not a literal the service understands.")

    def _metadata(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        match = re.fullmatch(
            r"EntityDefinitions\(LogicalName='([a-z_]+)'\)(/Attributes)?(/Microsoft\.Dynamics\.CRM\.\w+)?",
            path,
        )
        if match is None:
            raise Fault(400, ERR_SYNTAX, f"Bad Request - Error in query syntax: {path[:80]}")
        table = self.tables.get(match.group(1))
        if table is None:
            raise Fault(404, "0x80040217", f"Could not find entity with name '{match.group(1)}'.")
        if not match.group(2):
            entity = {
                "LogicalName": table.logical,
                "EntitySetName": table.entity_set,
                "ChangeTrackingEnabled": table.track_changes,
                "IsActivity": table.activity,
            }
            select = [n for n in params.get("$select", ",".join(entity)).split(",") if n]
            unknown = [n for n in select if n not in entity]
            if unknown:
                raise Fault(
                    400,
                    ERR_SYNTAX,
                    f"Could not find a property named '{unknown[0]}' on type 'Microsoft.Dynamics.CRM.EntityMetadata'.",
                )
            return {name: entity[name] for name in select}
        cast = match.group(3)
        allowed = {"LogicalName", "AttributeType", "SchemaName"} | ({"MaxLength"} if cast else set())
        select = [s for s in params.get("$select", "LogicalName").split(",") if s]
        if not set(select) <= allowed:
            raise Fault(
                400,
                ERR_SYNTAX,
                f"Could not find a property named '{(set(select) - allowed).pop()}' "
                "on type 'Microsoft.Dynamics.CRM.AttributeMetadata'.",
            )
        kinds = {
            "string": "String",
            "memo": "Memo",
            "int": "Integer",
            "decimal": "Decimal",
            "bool": "Boolean",
            "datetime": "DateTime",
            "choice": "Picklist",
            "state": "State",
            "lookup": "Lookup",
        }
        attributes: list[dict[str, Any]] = [
            {"LogicalName": table.key, "AttributeType": "Uniqueidentifier", "MaxLength": None}
        ]
        attributes += [
            {"LogicalName": n, "AttributeType": kinds[c.kind], "MaxLength": c.max_length or None}
            for n, c in table.columns.items()
        ]
        if cast:
            wanted = "String" if cast.endswith("StringAttributeMetadata") else "Memo"
            attributes = [a for a in attributes if a["AttributeType"] == wanted]
        return {"value": [{k: a.get(k) for k in select} for a in attributes]}

    # -- writes ---------------------------------------------------------------------------------

    def _upsert(
        self, table: Table, key: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        if key in self.row_faults:
            status, code, message = self.row_faults[key]
            raise Fault(status, code, message)
        try:
            data = json.loads(body.decode("utf-8")) if body else None
        except (UnicodeDecodeError, ValueError):
            raise Fault(400, ERR_SYNTAX, "The request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise Fault(400, ERR_SYNTAX, "The request body must be a JSON object.")
        exists = key in table.rows
        if headers.get("if-match") == "*" and not exists:
            raise self._missing(table, key)
        if headers.get("if-none-match") == "*" and exists:
            raise Fault(412, ERR_DUPLICATE, "A record with matching key values already exists.")
        parties = None
        if table.activity and table.parties in data:
            parties = self._parties(table, key, data.pop(table.parties))
        values = self._validate(table, data)
        if table.key in data and str(data[table.key]).lower() != key:
            raise Fault(400, ERR_SYNTAX, "The key in the body does not match the URL.")
        row = table.rows.get(key) or {
            table.key: key,
            **({"statecode": 0} if "statecode" in table.columns else {}),
        }
        row.update(values)
        self._stamp(table, row)
        table.rows[key] = row
        if parties is not None:
            self._set_parties(table, key, parties)
        return 204, {"OData-EntityId": f"{self.url}{API}/{table.entity_set}({key})"}, None

    def _parties(self, table: Table, activity_id: str, value: Any) -> list[dict[str, Any]]:
        """The parties of a deep insert or update, each checked as an ``activityparty`` row of its own
        (before anything is written: a refused party leaves the activity as it was)."""
        spec = self.tables["activityparty"]
        if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
            raise Fault(
                400,
                ERR_SYNTAX,
                f"The value of the collection-valued navigation property '{table.parties}' "
                "must be an array of activityparty objects.",
            )
        parties: list[dict[str, Any]] = []
        for party in value:
            mask = party.get("participationtypemask")
            if not isinstance(mask, int) or isinstance(mask, bool):
                raise Fault(  # unconfirmed: Dataverse needs the party's role to file it in a party list
                    400, ERR_VALIDATION, "An activity party needs its participationtypemask (an integer)."
                )
            if mask not in PARTICIPATION_TYPES:
                raise Fault(
                    400,
                    ERR_OPTION_RANGE,
                    f"A validation error occurred. The value {mask} of 'participationtypemask' on record of "
                    "type 'activityparty' is outside the valid range. Accepted Values: "
                    + ",".join(str(t) for t in PARTICIPATION_TYPES),
                )
            if any(name.startswith("activityid") for name in party):
                raise Fault(
                    400, ERR_VALIDATION, "activityid cannot be set: the party belongs to its activity"
                )
            values = self._validate(spec, party)
            if not values.get("_partyid_value") and not values.get("addressused"):
                raise Fault(
                    400,
                    ERR_VALIDATION,
                    "An activity party needs a party (partyid_<table>@odata.bind) or an address (addressused).",
                )
            party_id = str(party.get(spec.key, uuid.uuid4())).lower()
            if not GUID.match(party_id):
                raise Fault(400, ERR_SYNTAX, f"Cannot convert the literal '{party_id[:40]}' to Edm.Guid.")
            owner = spec.rows.get(party_id, {})
            if owner and (
                owner.get("_activityid_value") != activity_id
                or owner.get("participationtypemask") not in {p.get("participationtypemask") for p in value}
            ):
                raise Fault(412, ERR_DUPLICATE, "A record with matching key values already exists.")
            parties.append({spec.key: party_id, **values})
        return parties

    def _set_parties(self, table: Table, activity_id: str, parties: list[dict[str, Any]]) -> None:
        """Set an activity's parties as Dataverse sets a party list column (``customers``, ``to``, ...):
        the parties of each participation type the request names replace that type's parties; the other
        types keep theirs. So an update that repeats its parties leaves one row each, not two."""
        spec = self.tables["activityparty"]
        replaced = {p["participationtypemask"] for p in parties}
        for party_id, row in list(spec.rows.items()):
            if row.get("_activityid_value") == activity_id and row.get("participationtypemask") in replaced:
                del spec.rows[party_id]
        for party in parties:
            row = {**party, "_activityid_value": activity_id, "_activityid_table": table.logical}
            self._stamp(spec, row)
            spec.rows[party[spec.key]] = row

    def _validate(self, table: Table, data: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name == table.key:
                continue
            if name.endswith("@odata.bind"):
                nav = table.navigation(name[: -len("@odata.bind")])
                if nav is None:
                    raise Fault(
                        400,
                        ERR_SYNTAX,
                        f"An undeclared property '{name[:-11]}' which only has "
                        "property annotations in the payload but no property value was found.",
                    )
                column, target = nav
                ref = re.fullmatch(r"/?([a-z_]+)\(([0-9a-fA-F-]{36})\)", str(value))
                target_table = self.tables[target]
                if ref is None or ref.group(1) != target_table.entity_set:
                    raise Fault(400, ERR_SYNTAX, f"{name}: expected /{target_table.entity_set}(<id>)")
                if ref.group(2).lower() not in target_table.rows:
                    raise self._missing(target_table, ref.group(2).lower())
                values[f"_{column}_value"] = ref.group(2).lower()
                values[f"_{column}_table"] = target
                continue
            column_spec = table.columns.get(name)
            if column_spec is None or column_spec.kind == "lookup":
                raise Fault(
                    400,
                    ERR_SYNTAX,
                    f"Invalid property '{name}' was found in entity "
                    f"'Microsoft.Dynamics.CRM.{table.logical}'.",
                )
            if column_spec.read_only:
                raise Fault(400, ERR_VALIDATION, f"{name} cannot be set")
            values[name] = self._typed(name, column_spec, value)
        return values

    @staticmethod
    def _typed(name: str, column: Column, value: Any) -> Any:
        if value is None:
            return None
        kind = column.kind
        ok = {
            "string": isinstance(value, str),
            "memo": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "decimal": isinstance(value, int | float) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "datetime": isinstance(value, str) and DATETIME.match(value) is not None,
            "choice": isinstance(value, int) and not isinstance(value, bool) and value in column.options,
            "state": isinstance(value, int) and value in column.options,
        }[kind]
        if not ok:
            raise Fault(
                400,
                ERR_SYNTAX,
                f"Cannot convert the literal '{str(value)[:40]}' to the expected type of {name} ({kind}).",
            )
        if kind in ("string", "memo") and len(value) > column.max_length:
            raise Fault(
                400,
                ERR_VALIDATION,
                f"A validation error occurred. The length of the '{name}' "
                f"attribute exceeded the maximum allowed length of '{column.max_length}'.",
            )
        if kind == "datetime":
            return value[:19] + "Z"
        return value

    # -- $batch ---------------------------------------------------------------------------------

    def _batch(self, client: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        match = re.fullmatch(
            r'multipart/mixed;\s*boundary="?(batch_[A-Za-z0-9_.:-]+)"?',
            headers.get("content-type", "").strip(),
        )
        if match is None:
            raise Fault(400, ERR_SYNTAX, "The $batch request must be multipart/mixed with a batch_ boundary.")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise Fault(400, ERR_SYNTAX, "The $batch body is not UTF-8.") from None
        groups = _parse_multipart(text, match.group(1), nested=True)
        count = sum(len(g) for g in groups)
        if count > BATCH_LIMIT:
            raise Fault(
                400,
                ERR_BATCH_TOO_LARGE,
                f"The batch holds {count} requests; at most {BATCH_LIMIT} are allowed.",
            )
        continue_on_error = "odata.continue-on-error" in self._prefer(headers)
        boundary = f"batchresponse_{uuid.uuid4()}"
        lines: list[str] = []
        failed = False
        with self._lock:
            for group in groups:
                answers, group_failed = self._run_group(group)
                failed |= group_failed
                lines.append(f"--{boundary}")
                if len(group) > 1 and not group_failed:
                    inner = f"changesetresponse_{uuid.uuid4()}"
                    lines += [f"Content-Type: multipart/mixed; boundary={inner}", ""]
                    for content_id, status, out_headers, payload in answers:
                        lines += [f"--{inner}", *_http_lines(content_id, status, out_headers, payload)]
                    lines.append(f"--{inner}--")
                else:
                    content_id, status, out_headers, payload = answers[-1]
                    lines += _http_lines(content_id if len(group) > 1 else None, status, out_headers, payload)
                if group_failed and not continue_on_error:
                    break
            self._spend(client, count)
        lines += [f"--{boundary}--", ""]
        status = 400 if failed and not continue_on_error else 200
        return status, {"Content-Type": f"multipart/mixed; boundary={boundary}"}, "\r\n".join(lines).encode()

    def _run_group(
        self, group: list[_Part]
    ) -> tuple[list[tuple[str | None, int, dict[str, str], Any]], bool]:
        """Run one part, or one changeset as a transaction (rolled back when any request fails).

        Only a changeset copies the tables for its rollback: a single request that fails changes nothing,
        and copying every table for each of a $batch's 1000 parts made a large batch take minutes.
        """
        saved = (
            (copy.deepcopy({n: t.rows for n, t in self.tables.items()}), self.version, list(self.deleted))
            if len(group) > 1
            else None
        )
        answers: list[tuple[str | None, int, dict[str, str], Any]] = []
        for part in group:
            try:
                split = urlsplit(part.url)
                path = split.path
                if path.startswith(self.url + API) or path.startswith(API):
                    path = path.split(API, 1)[1]
                elif split.scheme:
                    raise Fault(400, ERR_SYNTAX, f"The URL {part.url[:80]} is not of this service.")
                status, out_headers, payload = self._execute(
                    part.method, path.lstrip("/"), split.query, part.headers, part.body
                )
            except Fault as fault:
                status, out_headers, payload = fault.status, {}, fault.body()
            self._record(
                part.method, "/" + part.url.split("?")[0].split(API)[-1].lstrip("/"), "", status, "batch-part"
            )
            answers.append((part.content_id, status, out_headers, payload))
            if status >= 400:
                if saved is not None:
                    rows, self.version, self.deleted = saved
                    for name, table in self.tables.items():
                        table.rows = rows[name]
                return answers, True
        return answers, False

    # -- webhooks -------------------------------------------------------------------------------

    def execution_context(
        self, message: str, entity: str, record_id: str, attributes: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The ``RemoteExecutionContext`` a service endpoint posts for ``message`` on a record."""
        target = {
            "LogicalName": entity,
            "Id": record_id,
            "Attributes": [{"key": k, "value": v} for k, v in (attributes or {}).items()],
        }
        inputs: list[dict[str, Any]] = [{"key": "Target", "value": target}]
        if message == "CloseIncident":
            inputs = [
                {
                    "key": "IncidentResolution",
                    "value": {
                        "LogicalName": "incidentresolution",
                        "Id": str(uuid.uuid4()),
                        "Attributes": [
                            {"key": "incidentid", "value": {"LogicalName": "incident", "Id": record_id}}
                        ],
                    },
                },
                {"key": "Status", "value": {"Value": 5}},
            ]
        return {
            "BusinessUnitId": str(uuid.uuid5(uuid.NAMESPACE_URL, self.url)),
            "CorrelationId": str(uuid.uuid4()),
            "Depth": 1,
            "InitiatingUserId": self.user_id,
            "InputParameters": inputs,
            "MessageName": message,
            "Mode": 1,
            "OrganizationId": self.organization_id,
            "OrganizationName": "contoso",
            "OutputParameters": [],
            "PostEntityImages": [],
            "PreEntityImages": [],
            "PrimaryEntityId": record_id,
            "PrimaryEntityName": entity,
            "RequestId": str(uuid.uuid4()),
            "Stage": 40,
            "UserId": self.user_id,
        }

    def deliver(
        self,
        url: str,
        message: str,
        entity: str,
        record_id: str,
        *,
        key: str | None = None,
        header: tuple[str, str] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> int:
        """POST the context to a webhook as a service endpoint does: WebhookKey as ``?code=`` or an
        HttpHeader, 60 s timeout, one retry only on 502/503/504, and a context over 256 KB cut (its
        parameters dropped) with ``x-ms-dynamics-msg-size-exceeded``. Returns the last status."""
        import httpx  # the emulator's own dependency

        context = self.execution_context(message, entity, record_id, attributes)
        body = json.dumps(context).encode()
        headers = self.webhook_headers(message, entity)
        if len(body) > 256 * 1024:
            context["InputParameters"], context["PostEntityImages"] = [], []
            body = json.dumps(context).encode()
            headers["x-ms-dynamics-msg-size-exceeded"] = "true"
        if header is not None:
            headers[header[0]] = header[1]
        params = {"code": key} if key is not None else None
        status = 0
        for _ in range(2):
            try:
                status = httpx.post(url, params=params, content=body, headers=headers, timeout=60).status_code
            except httpx.HTTPError:
                status = 0
            if status not in (502, 503, 504):
                break
        return status

    def webhook_headers(self, message: str, entity: str) -> dict[str, str]:
        return {
            "content-type": "application/json",
            "x-ms-dynamics-organization": urlsplit(self.url).netloc,
            "x-ms-dynamics-entity-name": entity,
            "x-ms-dynamics-request-name": message,
        }


@dataclass
class _Part:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None


def _split(text: str, boundary: str) -> list[str]:
    """The parts between the delimiters; a body that does not open and close with them is refused."""
    normal = text.replace("\r\n", "\n")
    opening, closing = f"--{boundary}\n", f"--{boundary}--"
    if not normal.startswith(opening) or closing not in normal:
        raise Fault(
            400, ERR_SYNTAX, f"The multipart body must start with --{boundary} and end with {closing}."
        )
    inner = normal[len(opening) : normal.rindex(closing)]
    return inner.split(f"\n--{boundary}\n")


def _part_headers(block: str) -> tuple[dict[str, str], str]:
    head, sep, rest = block.partition("\n\n")
    if not sep:
        raise Fault(400, ERR_SYNTAX, "A batch part has no blank line after its headers.")
    headers: dict[str, str] = {}
    for line in head.split("\n"):
        name, colon, value = line.partition(":")
        if not colon:
            raise Fault(400, ERR_SYNTAX, f"Malformed batch part header {line[:60]!r}.")
        headers[name.strip().lower()] = value.strip()
    return headers, rest


def _parse_multipart(text: str, boundary: str, nested: bool) -> list[list[_Part]]:
    groups: list[list[_Part]] = []
    for block in _split(text, boundary):
        headers, rest = _part_headers(block)
        content_type = headers.get("content-type", "")
        if content_type.startswith("multipart/mixed"):
            inner = re.search(r'boundary="?(changeset_[A-Za-z0-9_.:-]+)"?', content_type)
            if not nested or inner is None:
                raise Fault(400, ERR_SYNTAX, "A changeset needs a changeset_ boundary and cannot be nested.")
            changeset = [
                part
                for group in _parse_multipart(rest.rstrip("\n"), inner.group(1), nested=False)
                for part in group
            ]
            if any(p.content_id is None for p in changeset):
                raise Fault(400, ERR_SYNTAX, "Content-ID header not present in a changeset request.")
            if any(p.method == "GET" for p in changeset):
                raise Fault(400, ERR_SYNTAX, "A changeset cannot contain a GET request.")
            groups.append(changeset)
            continue
        groups.append([_http_request(headers, rest)])
    return groups


def _http_request(mime: dict[str, str], text: str) -> _Part:
    if mime.get("content-type") != "application/http" or mime.get("content-transfer-encoding") != "binary":
        raise Fault(
            400,
            ERR_SYNTAX,
            "Each batch part needs Content-Type: application/http and Content-Transfer-Encoding: binary.",
        )
    request_line, _, rest = text.partition("\n")
    match = re.fullmatch(r"(GET|POST|PATCH|PUT|DELETE) (\S+) HTTP/1\.1", request_line.strip())
    if match is None:
        raise Fault(400, ERR_SYNTAX, f"Malformed request line {request_line[:80]!r} in a batch part.")
    head, _, body = rest.partition("\n\n")
    headers: dict[str, str] = {}
    for line in head.split("\n") if head.strip() else []:
        name, colon, value = line.partition(":")
        if not colon:
            raise Fault(400, ERR_SYNTAX, f"Malformed header {line[:60]!r} in a batch part.")
        headers[name.strip().lower()] = value.strip()
    return _Part(match.group(1), match.group(2), headers, body.strip("\n").encode(), mime.get("content-id"))


_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    412: "Precondition Failed",
    429: "Too Many Requests",
    500: "Internal Server Error",
}


def _http_lines(content_id: str | None, status: int, headers: dict[str, str], payload: Any) -> list[str]:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if payload is not None:
        lines += ["Content-Type: application/json; odata.metadata=minimal", "", json.dumps(payload)]
    else:
        lines += [""]
    return lines


# --- serving over TLS -------------------------------------------------------------------------------


@contextmanager
def serve(emulator: DataverseEmulator) -> Iterator[TlsServer]:
    """Serve ``emulator`` over TLS while the block runs (its ``url`` set to where it is served)."""
    server = TlsServer(emulator.app)
    emulator.url = server.url
    server.start()
    try:
        yield server
    finally:
        server.stop()


def certificate_pair(client_id: str) -> tuple[str, str]:
    """(PEM of the private key and the certificate, PEM of the certificate) for certificate auth."""
    import trustme

    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    cert = ca.issue_cert(f"{client_id}.cxhub.invalid", key_type=trustme.KeyType.RSA)
    both = cert.private_key_pem.bytes().decode() + cert.cert_chain_pems[0].bytes().decode()
    return both, cert.cert_chain_pems[0].bytes().decode()
