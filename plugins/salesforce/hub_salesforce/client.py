"""Every Salesforce API call of the connector, through simple-salesforce, off the event loop.

simple-salesforce is synchronous, so calls run in a bounded ``ThreadPoolExecutor`` (``max_workers``): the
hub's loop never blocks, and the org never sees more concurrent requests than configured. Each call:

- passes the API budget first (``budget.py``), so the hub never spends more than its share;
- logs in again once on 401 INVALID_SESSION_ID (sessions expire) and retries that call once;
- is classified: REQUEST_LIMIT_EXCEEDED, 429 and 5xx -> ``TransientError``; other 401/403 -> ``AuthError``;
  300/400/404 -> ``RecordError`` for the caller to pin on the record concerned.

Most calls go through simple-salesforce's ``restful`` (JSON in, JSON out). Bulk API 2.0 uploads CSV and
answers with CSV, which ``restful`` cannot carry, so ``request`` sends those on the same session with the
same bearer token: every HTTP call of the connector, JSON or CSV, passes the one budget, renewal and
classification in ``_run``.

Writes that must commit together (a Case's feedback marker and the notes it stands for) go as one Composite
request with allOrNone (``composite``): one API call, and nothing is kept when any part fails. Writes that
need not go up to five sObject Collections calls at once as one Composite request without it
(``save_collections``), and up to five queries likewise (``query_many``): one API call for what would take five.

Trust is explicit: the ``requests.Session`` ignores the environment (``trust_env = False``) and verifies
against ``ca_bundle`` or the system store, whatever REQUESTS_CA_BUNDLE a machine sets.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import requests
import structlog
from requests.adapters import HTTPAdapter
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceError
from simple_salesforce.util import exception_handler
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from hub import AuthError, SkippableError, TransientError
from hub.http import USER_AGENT, retry_after_seconds
from hub_salesforce.auth import Token, login
from hub_salesforce.budget import ApiBudget, parse_limit_info
from hub_salesforce.config import SalesforceSettings

log = structlog.get_logger("hub_salesforce.client")

T = TypeVar("T")

#: sObject Collections take at most this many records a call
COLLECTION_LIMIT = 200
#: Composite: subrequests per call, and how many of them may be queries or sObject Collections
COMPOSITE_LIMIT = 25
COMPOSITE_COLLECTION_LIMIT = 5
#: a transient server-side answer that the same call may survive later
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


class RecordError(SkippableError):
    """Salesforce refused a request about specific records (300/400/404), with its error codes."""

    def __init__(self, message: str, status: int, codes: list[str]) -> None:
        super().__init__(message)
        self.status = status
        self.codes = codes


@dataclass(frozen=True)
class SaveResult:
    """One record's outcome in an sObject Collections reply (in request order)."""

    id: str | None
    success: bool
    created: bool | None
    codes: list[str]
    message: str


@dataclass(frozen=True)
class Collection:
    """One kind of sObject Collections call: its method and path below ``/services/data/vXX.X/``."""

    method: str
    path: str
    what: str


#: what became of one sObject Collections part: its per-record results, or the error that refused it
Saved = list[SaveResult] | RecordError | TransientError


@dataclass(frozen=True)
class SubResult:
    """One subrequest's answer in a Composite reply: its status and body as the resource answered them."""

    reference_id: str
    status: int
    body: Any

    def record_results(self) -> list[SaveResult] | None:
        """The per-record results of an sObject Collections subrequest, None when the body is not that list
        (an error body such as ``[{"errorCode": "PROCESSING_HALTED", ...}]``)."""
        if not isinstance(self.body, list) or not all(
            isinstance(entry, dict) and "success" in entry for entry in self.body
        ):
            return None
        return [save_result(entry) for entry in self.body]

    @property
    def succeeded(self) -> bool:
        """A 2xx answer whose records (when it holds records) were all saved."""
        records = self.record_results()
        return self.status < 300 and (records is None or all(r.success for r in records))

    @property
    def error(self) -> SaveResult:
        """The subrequest's error body as one failed result: codes and messages of every entry."""
        entries = error_entries(self.body)
        return SaveResult(
            id=None,
            success=False,
            created=None,
            codes=[str(e.get("errorCode", e.get("statusCode", ""))) for e in entries],
            message="; ".join(
                f"{e.get('errorCode', e.get('statusCode', ''))}: {e.get('message', '')}" for e in entries
            )
            or f"HTTP {self.status}",
        )


def error_entries(content: Any) -> list[dict[str, Any]]:
    """Salesforce error bodies are JSON arrays of ``{message, errorCode, fields}``."""
    if isinstance(content, list):
        return [entry for entry in content if isinstance(entry, dict)]
    if isinstance(content, dict):
        return [content]
    return []


class _TimeoutAdapter(HTTPAdapter):
    """Every request gets the configured timeout unless the call names its own.

    simple-salesforce passes no timeout, and requests then waits forever: one hung connection would hold a
    worker thread (and the write batch awaiting it) for good. With a timeout it becomes a TransientError
    and the batch is retried later.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().send(request, **kwargs)


def build_session(settings: SalesforceSettings) -> requests.Session:
    """A session whose trust and proxy come from settings only (environment CA and proxy variables are
    ignored), and whose every call gives up after ``timeout_seconds``."""
    session = requests.Session()
    session.trust_env = False
    session.verify = settings.ca_bundle or True
    session.headers["User-Agent"] = USER_AGENT
    if settings.proxy:
        session.proxies = {"https": settings.proxy, "http": settings.proxy}
    adapter = _TimeoutAdapter(settings.timeout_seconds)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class SalesforceClient:
    """One org's API, shared by the connector's methods; ``aclose`` stops the threads."""

    def __init__(self, settings: SalesforceSettings, budget: ApiBudget | None = None) -> None:
        self.settings = settings
        self.budget = budget or ApiBudget(
            settings.api_budget_share, settings.budget_window_seconds, settings.limit_pause_seconds
        )
        self.session = build_session(settings)
        self.session.hooks["response"].append(self._on_response)
        self._executor = ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="salesforce")
        self._login_lock = threading.Lock()
        self._sf: Salesforce | None = None
        self._local = threading.local()
        self.logins = 0
        self.unavailable = False
        #: where the API lives, as the token endpoint said (None before the first login)
        self.instance_url: str | None = None

    # -- plumbing ---------------------------------------------------------------------------------

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Every reply of the REST API updates the budget; Retry-After is kept for this thread's call."""
        limit_info = response.headers.get("Sforce-Limit-Info")
        if "/services/data/" in response.url:
            self.budget.observe(limit_info)
        self._local.retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        self._local.usage = parse_limit_info(limit_info)

    def _connect(self, token: Token) -> Salesforce:
        self.instance_url = token.instance_url
        return Salesforce(
            instance_url=token.instance_url,
            session_id=token.access_token,
            session=self.session,
            version=self.settings.api_version,
        )

    def _current(self) -> Salesforce:
        with self._login_lock:
            if self._sf is None:
                self._sf = self._connect(login(self.settings, self.session))
                self.logins += 1
            return self._sf

    def _renew(self, expired: Salesforce) -> Salesforce:
        """Log in again, unless another thread already replaced the expired session."""
        with self._login_lock:
            if self._sf is expired or self._sf is None:
                self._sf = self._connect(login(self.settings, self.session))
                self.logins += 1
                log.info("salesforce.session_renewed", org=self.settings.login_url)
            return self._sf

    def _run(self, call: Callable[[Salesforce], T], what: str) -> T:
        sf = self._current()
        for attempt in (1, 2):
            self.budget.acquire()
            error: Exception
            try:
                result = call(sf)
            except SalesforceError as exc:
                codes = [str(e.get("errorCode", "")) for e in error_entries(exc.content)]
                if exc.status == 401 and "INVALID_SESSION_ID" in codes and attempt == 1:
                    sf = self._renew(sf)
                    continue
                error = self._classify(exc, codes, what)
            except requests.RequestException as exc:
                self._mark_unavailable(True, what)
                error = TransientError(
                    f"{what}: Salesforce unreachable ({type(exc).__name__})", sent=not never_sent(exc)
                )
            else:
                self._mark_unavailable(False, what)
                return result
            # raised outside the handler, so no __context__ chain keeps the failed reply, and with it its
            # pooled connection, alive for as long as someone holds the error
            raise error
        raise AssertionError("unreachable")

    def _mark_unavailable(self, down: bool, what: str) -> None:
        """Log unavailability once and recovery once."""
        if down and not self.unavailable:
            log.warning("salesforce.unavailable", call=what)
        elif not down and self.unavailable:
            log.info("salesforce.available", call=what)
        self.unavailable = down

    def _classify(self, exc: SalesforceError, codes: list[str], what: str) -> Exception:
        messages = (
            "; ".join(f"{e.get('errorCode', '')}: {e.get('message', '')}" for e in error_entries(exc.content))
            or str(exc.content)[:200]
        )
        status = exc.status
        retry_after: float | None = getattr(self._local, "retry_after", None)
        if "REQUEST_LIMIT_EXCEEDED" in codes:
            pause = self.budget.limit_exceeded(retry_after, spent=self._allowance_spent(messages))
            log.warning("salesforce.request_limit_exceeded", call=what, pause_seconds=pause)
            # the org's limits, not this record: nothing was written, so no attempt is counted
            return TransientError(f"{what}: {messages}", retry_after=pause, sent=False)
        if status in TRANSIENT_STATUSES:
            self._mark_unavailable(True, what)
            # 429: Salesforce turned the request away unread, so it used no attempt either
            return TransientError(
                f"{what}: HTTP {status} {messages}", retry_after=retry_after, sent=status != 429
            )
        if status in (401, 403):
            return AuthError(f"{what}: HTTP {status} {messages}")
        return RecordError(f"{what}: HTTP {status} {messages}", status, codes)

    def _allowance_spent(self, messages: str) -> bool:
        """Whether a REQUEST_LIMIT_EXCEEDED reply is the org's daily allowance, not another limit.

        The reply's own Sforce-Limit-Info says it (usage at its maximum); without the header, its message
        does ("TotalRequests Limit exceeded." where the concurrent request limit says "ConcurrentPer...").
        """
        usage: tuple[int, int] | None = getattr(self._local, "usage", None)
        if usage is not None:
            return usage[0] >= usage[1]
        return "TotalRequests" in messages

    async def call(self, call: Callable[[Salesforce], T], what: str) -> T:
        """Run one API call on the pool, with budget, renewal and classification."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(self._run, call, what))

    # -- the calls --------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Log in now (``check``): credentials are tested before anything else."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._current)

    async def query_page(self, soql_or_next: str) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a SOQL query (or the page a ``nextRecordsUrl`` points at); the next URL, if any."""
        if soql_or_next.startswith("/services/data/"):
            page = await self.call(lambda sf: sf.query_more(soql_or_next, identifier_is_url=True), "query")
        else:
            page = await self.call(lambda sf: sf.query(soql_or_next), "query")
        records = [dict(r) for r in page.get("records", [])]
        next_url = None if page.get("done", True) else page.get("nextRecordsUrl")
        return records, next_url

    async def query_all(self, soql: str) -> list[dict[str, Any]]:
        """Every record of a query, following ``nextRecordsUrl`` page by page (each page one budgeted call)."""
        records, next_url = await self.query_page(soql)
        while next_url:
            more, next_url = await self.query_page(next_url)
            records += more
        return records

    async def query_many(self, soqls: list[str]) -> list[list[dict[str, Any]]]:
        """Every record of up to five queries, for one API call: the queries of one Composite request.

        One query goes as itself (``query_all``). A page of a subrequest that is not the last is followed
        with ``nextRecordsUrl``, one call a page as always; a refused query raises as a refused call does.
        """
        if len(soqls) > COMPOSITE_COLLECTION_LIMIT:
            raise ValueError(
                f"Composite takes at most {COMPOSITE_COLLECTION_LIMIT} queries, not {len(soqls)}"
            )
        if len(soqls) == 1:
            return [await self.query_all(soqls[0])]
        subrequests = [
            {
                "method": "GET",
                "url": self.data_url(f"query?{urlencode({'q': soql})}"),
                "referenceId": f"query{n}",
            }
            for n, soql in enumerate(soqls)
        ]
        answers = await self.composite(subrequests, all_or_none=False)
        found: list[list[dict[str, Any]]] = []
        for answer in answers:
            page = answer.body if isinstance(answer.body, dict) else None
            if answer.status >= 300 or page is None:
                error = answer.error
                message = f"query: HTTP {answer.status} {error.message}"
                if answer.status in TRANSIENT_STATUSES:
                    raise TransientError(message)
                raise RecordError(message, answer.status, error.codes)
            records = [dict(r) for r in page.get("records", [])]
            next_url = None if page.get("done", True) else page.get("nextRecordsUrl")
            while next_url:
                more, next_url = await self.query_page(next_url)
                records += more
            found.append(records)
        return found

    async def describe(self, sobject: str) -> dict[str, Any]:
        reply = await self.call(lambda sf: sf.restful(f"sobjects/{sobject}/describe"), f"describe {sobject}")
        return dict(reply or {})

    async def get(self, sobject: str, record_id: str, fields: Iterable[str]) -> dict[str, Any] | None:
        """One record by id, None when it does not exist (any more)."""
        path = f"sobjects/{sobject}/{quote(record_id, safe='')}"
        params = {"fields": ",".join(fields)}
        try:
            reply = await self.call(lambda sf: sf.restful(path, params=params), f"get {sobject}")
        except RecordError as exc:
            if exc.status == 404:
                return None
            raise
        return dict(reply or {})

    async def _collection(
        self, method: str, path: str, records: list[dict[str, Any]], what: str
    ) -> list[SaveResult]:
        if len(records) > COLLECTION_LIMIT:
            raise ValueError(
                f"sObject Collections take at most {COLLECTION_LIMIT} records, not {len(records)}"
            )
        body = {"allOrNone": False, "records": records}
        reply = await self.call(lambda sf: sf.restful(path, method=method, json=body), what)
        results = [save_result(entry) for entry in (reply or [])]
        if len(results) != len(records):
            raise TransientError(f"{what}: {len(results)} results for {len(records)} records")
        return results

    async def update_records(self, records: list[dict[str, Any]]) -> list[SaveResult]:
        """``PATCH /composite/sobjects``: update records by Id (each has ``attributes.type`` and ``id``)."""
        return await self._collection(UPDATE.method, UPDATE.path, records, UPDATE.what)

    async def create_records(self, records: list[dict[str, Any]]) -> list[SaveResult]:
        """``POST /composite/sobjects``: create records (each has ``attributes.type``)."""
        return await self._collection("POST", "composite/sobjects", records, "create records")

    async def upsert_records(
        self, sobject: str, external_id_field: str, records: list[dict[str, Any]]
    ) -> list[SaveResult]:
        """``PATCH /composite/sobjects/{Object}/{ExtIdField}``: upsert by external id, one object type."""
        upsert = upsert_collection(sobject, external_id_field)
        return await self._collection(upsert.method, upsert.path, records, upsert.what)

    def data_url(self, path: str) -> str:
        """``/services/data/vXX.X/{path}``: the url of a Composite subrequest (a path, no host)."""
        return f"/services/data/v{self.settings.api_version}/{path}"

    def collection_subrequest(
        self,
        method: str,
        records: list[dict[str, Any]],
        reference_id: str,
        path: str = "composite/sobjects",
        all_or_none: bool = True,
    ) -> dict[str, Any]:
        """An sObject Collections call (``POST`` create, ``PATCH`` update, or ``PATCH`` upsert when ``path``
        names the object and its external id field) as a Composite subrequest."""
        if len(records) > COLLECTION_LIMIT:
            raise ValueError(
                f"sObject Collections take at most {COLLECTION_LIMIT} records, not {len(records)}"
            )
        return {
            "method": method,
            "url": self.data_url(path),
            "referenceId": reference_id,
            "body": {"allOrNone": all_or_none, "records": records},
        }

    async def save_collections(
        self, collection: Collection, parts: list[list[dict[str, Any]]]
    ) -> list[Saved]:
        """Up to five sObject Collections calls of one kind (200 records each) for one API call.

        One part goes as a plain sObject Collections call; several go as the Collections subrequests of one
        Composite request without allOrNone, so each record is saved or refused on its own, as in a plain
        call. The answer has one entry per part, in order: the per-record results, or the error that
        refused that part as a whole (a ``RecordError``, or a ``TransientError`` for a part Salesforce could
        not run just now). A refusal of the whole request raises, as every call does.
        """
        if len(parts) > COMPOSITE_COLLECTION_LIMIT:
            raise ValueError(
                f"Composite takes at most {COMPOSITE_COLLECTION_LIMIT} sObject Collections, not {len(parts)}"
            )
        if len(parts) == 1:
            try:
                return [await self._collection(collection.method, collection.path, parts[0], collection.what)]
            except RecordError as exc:
                return [exc]
        subrequests = [
            self.collection_subrequest(collection.method, records, f"part{n}", collection.path, False)
            for n, records in enumerate(parts)
        ]
        answers = await self.composite(subrequests, all_or_none=False)
        saved: list[Saved] = []
        for answer, records in zip(answers, parts, strict=True):
            results = answer.record_results()
            if answer.status < 300 and results is not None and len(results) == len(records):
                saved.append(results)
                continue
            error = answer.error
            message = f"{collection.what}: HTTP {answer.status} {error.message}"
            if answer.status < 300 or answer.status in TRANSIENT_STATUSES:
                # a 2xx without one result per record: what was saved is unknown, so the part is retried
                saved.append(TransientError(message))
            else:
                saved.append(RecordError(message, answer.status, error.codes))
        return saved

    async def composite(self, subrequests: list[dict[str, Any]], all_or_none: bool = True) -> list[SubResult]:
        """``POST /composite``: the subrequests in order, in one API call.

        With allOrNone (the default) they commit together or not at all: when one subrequest fails,
        Salesforce rolls back every other one and answers them with PROCESSING_HALTED; the caller reads the
        failed subrequest's body to learn which record was at fault. Without it, each subrequest stands alone.
        """
        if len(subrequests) > COMPOSITE_LIMIT:
            raise ValueError(f"Composite takes at most {COMPOSITE_LIMIT} subrequests, not {len(subrequests)}")
        body = {"allOrNone": all_or_none, "compositeRequest": subrequests}
        reply = await self.call(
            lambda sf: sf.restful("composite", method="POST", json=body), "composite request"
        )
        answers = reply.get("compositeResponse") if isinstance(reply, dict) else None
        if not isinstance(answers, list) or len(answers) != len(subrequests):
            raise TransientError(
                f"composite request: no answer for each of the {len(subrequests)} subrequests"
            )
        return [
            SubResult(
                reference_id=str(answer.get("referenceId", "")),
                status=int(answer.get("httpStatusCode") or 0),
                body=answer.get("body"),
            )
            for answer in answers
        ]

    async def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        content_type: str | None = None,
        accept: str = "application/json",
    ) -> requests.Response:
        """One raw call below ``/services/data/vXX.X/`` (``path`` without a leading slash): the reply as is.

        For resources that are not JSON both ways (Bulk API 2.0 CSV upload and results). The session's
        token, budget, renewal on INVALID_SESSION_ID and error classification are those of every other
        call; replies of 300 and above raise like simple-salesforce's own calls, so ``_run`` sees them.
        """

        def send(sf: Salesforce) -> requests.Response:
            headers = {"Authorization": f"Bearer {sf.session_id}", "Accept": accept}
            if content_type is not None:
                headers["Content-Type"] = content_type
            reply = self.session.request(
                method,
                sf.base_url + path,
                headers=headers,
                json=json,
                data=data,
                timeout=self.settings.timeout_seconds,
            )
            if reply.status_code >= 300:
                exception_handler(reply, name=path)
            return reply

        return await self.call(send, what)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.session.close()


#: ``PATCH /composite/sobjects``: records updated by Id
UPDATE = Collection("PATCH", "composite/sobjects", "update records")


def upsert_collection(sobject: str, external_id_field: str) -> Collection:
    """``PATCH /composite/sobjects/{Object}/{ExtIdField}``: records of one object upserted by external id."""
    return Collection("PATCH", f"composite/sobjects/{sobject}/{external_id_field}", f"upsert {sobject}")


def never_sent(exc: requests.RequestException) -> bool:
    """Whether a failed call certainly never reached Salesforce, so it cannot have been applied.

    True for a connection that was never made: refused, a name that does not resolve, a connect timeout,
    a proxy that would not tunnel. False for anything that may have happened after the request left (a
    read timeout, a connection reset while waiting for the reply): Salesforce may have applied it.
    """
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.ProxyError):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(
        reason, NewConnectionError | NameResolutionError | ConnectTimeoutError
    )


def save_result(entry: dict[str, Any]) -> SaveResult:
    errors = error_entries(entry.get("errors") or [])
    return SaveResult(
        id=entry.get("id"),
        success=bool(entry.get("success")),
        created=entry.get("created"),
        codes=[str(e.get("statusCode", e.get("errorCode", ""))) for e in errors],
        message="; ".join(f"{e.get('statusCode', '')}: {e.get('message', '')}" for e in errors),
    )
