"""Every call the connector makes to SuperOffice, and the credentials that go with them.

The three ways in (system user ticket, OpenID refresh token, Basic for onsite) share one contract: give me
headers for the next request, and forget the credential when SuperOffice answered 401 with it. A request
that gets 401 is sent once more with fresh credentials; a 401 has no side effect on SuperOffice's side, so
the retry never writes anything twice. Concurrency is capped at ``max_in_flight`` here, in one place,
because SuperOffice has no batch API and every record is its own call; look-ups that writes wait for
get the next free slot first (``Slots``).
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
import ssl
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, date, datetime
from typing import Any

import httpx
import structlog
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from hub import AuthError, ConfigError, SkippableError, TransientError
from hub.http import raise_for_status, retry_after_seconds
from hub_superoffice.config import BasicAuth, RefreshTokenAuth, SuperOfficeSettings, SystemUserAuth

log = structlog.get_logger("hub_superoffice.client")

#: the JWT claim of PartnerSystemUser/Authenticate that carries the ticket
TICKET_CLAIM = "http://schemes.superoffice.net/identity/ticket"

HttpFactory = Callable[..., httpx.AsyncClient]

#: longest query string an archive lookup sends. SuperOffice Online runs on IIS, whose default
#: ``maxQueryString`` is 2048; whether SuperOffice raises it is not documented, so lookups by many keys
#: are split to stay under it.
MAX_QUERY_STRING = 2048
#: archive rows per page when a lookup reads every match
LOOKUP_PAGE_SIZE = 200


#: transport failures before a request left this process (refused, DNS, connect timeout, no free pooled
#: connection): SuperOffice received nothing. Any other transport failure (a read timeout, a dropped
#: connection) may come after SuperOffice applied the request.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def transport_error(what: str, exc: httpx.TransportError) -> TransientError:
    """A transient error for a request that failed in transport, saying whether it may have arrived."""
    if isinstance(exc, NOT_SENT):
        return TransientError(f"{what}: could not reach SuperOffice ({type(exc).__name__})", sent=False)
    return TransientError(f"{what}: {type(exc).__name__}")


class Throttled(TransientError):
    """SuperOffice answered 429: the whole connection must slow down, not just this request.

    A 429 is refused before anything is applied, so like a request held back it counts no attempt.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after, sent=False)


class ThrottleScope:
    """One unit of work (a write-back batch) that stops calling SuperOffice after its first 429.

    Set with ``throttle_scope()``; every request inside it, in any task, fails fast with the same
    ``Throttled`` once one got it, so a rate-limited tenant is not hammered by the rest of the batch.
    """

    def __init__(self) -> None:
        self.throttled: Throttled | None = None


_SCOPE: contextvars.ContextVar[ThrottleScope | None] = contextvars.ContextVar(
    "superoffice_throttle", default=None
)


def current_throttle_scope() -> ThrottleScope | None:
    """The scope of the unit of work this task belongs to (None outside ``throttle_scope()``)."""
    return _SCOPE.get()


@contextmanager
def throttle_scope() -> Iterator[ThrottleScope]:
    scope = ThrottleScope()
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


class Slots:
    """At most ``size`` requests in flight; when one ends, a waiting look-up goes before a waiting write.

    A write-back batch starts all its writes at once, and the writes that depend on a look-up (creating
    what the look-up did not find) cannot start before it. Queued behind the batch's independent writes,
    the look-up would leave the slots half empty while it runs and again at the end of the batch; put
    first, it answers while the other writes keep every slot busy.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._waiting: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (deque(), deque())

    @asynccontextmanager
    async def hold(self, first: bool = False) -> AsyncIterator[None]:
        await self._acquire(first)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, first: bool) -> None:
        if self._free > 0 and not any(self._waiting):
            self._free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting[0 if first else 1]
        queue.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # the slot was handed over just as the caller gave up: pass it on
            else:
                queue.remove(turn)
            raise

    def _release(self) -> None:
        for queue in self._waiting:
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)  # the slot goes straight to the next in line
                    return
        self._free += 1


class RecordError(SkippableError):
    """SuperOffice refused one request for what it contained (4xx): an unknown field, a missing record.

    Retrying the same request cannot help; the write-back item is set aside for an admin.
    """

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def error_text(response: httpx.Response) -> str:
    """The human part of a SuperOffice error body (its exact shape is not documented: take what is there)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if isinstance(body, dict):
        if isinstance(body.get("error"), str):  # OAuth: {"error": code, "error_description": text}
            return f"{body['error']}: {body.get('error_description') or ''}".rstrip(": ")[:300]
        for key in ("Error", "Message", "ErrorMessage", "message"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value[:300]
    return json.dumps(body)[:300]


def odata_quote(value: str) -> str:
    """A string literal for an OData ``$filter``: single quotes doubled, so input never breaks out."""
    return "'" + value.replace("'", "''") + "'"


def any_of_filter(column: str, values: Sequence[str]) -> str:
    """``column eq 'a' or column eq 'b' ...``: one archive restriction matching any of ``values``.

    SuperOffice's archive restrictions combine terms with ``or`` (documented since NetServer 7); its list
    operators (``oneOf``/``in``) are documented for id lists only, not for text columns such as an extra
    field holding the hub's key, hence plain ``eq`` terms.
    """
    return " or ".join(f"{column} eq {odata_quote(value)}" for value in values)


def query_length(params: dict[str, str]) -> int:
    """Length of the query string httpx sends for ``params`` (percent-encoded)."""
    return len(str(httpx.QueryParams(params)))


def sign_system_token(system_user_token: str, key: rsa.RSAPrivateKey, now: datetime | None = None) -> str:
    """``<token>.<yyyyMMddHHmm UTC>.<base64 RSA-SHA256 signature of the first two parts>``."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M")
    data = f"{system_user_token}.{stamp}"
    signature = key.sign(data.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return f"{data}.{base64.b64encode(signature).decode('ascii')}"


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified: it comes straight from the configured login URL over TLS."""
    try:
        payload = token.split(".")[1]
        padded = payload + "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (IndexError, ValueError) as exc:
        raise AuthError("PartnerSystemUser/Authenticate returned a token that is not a JWT") from exc
    if not isinstance(claims, dict):
        raise AuthError("PartnerSystemUser/Authenticate returned a JWT without claims")
    return claims


# --- credentials --------------------------------------------------------------------------------


class _Credentials(ABC):
    """Hands out request headers and renews the credential behind them when it is due or refused."""

    #: whether a fresh credential can fix a 401 (not so for a fixed user name and password)
    renewable = True

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        self._obtained_at: float | None = None
        self.generation = 0
        self.renewals = 0

    async def headers(self, http: httpx.AsyncClient) -> tuple[int, dict[str, str]]:
        """The generation of the credential used and the headers that carry it."""
        async with self._lock:
            if self._token is None or time.monotonic() >= self._renew_at:
                token, lifetime = await self._obtain(http)
                self._token = token
                self._obtained_at = time.monotonic()
                self._renew_at = self._obtained_at + lifetime
                self.generation += 1
                self.renewals += 1
            return self.generation, self._headers(self._token)

    def invalidate(self, generation: int) -> None:
        """SuperOffice refused the credential of ``generation``: renew it next time, once for all callers."""
        if generation == self.generation:
            self._token = None

    def describe(self) -> dict[str, Any]:
        age = None if self._obtained_at is None else round(time.monotonic() - self._obtained_at)
        return {"credential_age_seconds": age, "credentials_obtained": self.renewals}

    @abstractmethod
    async def _obtain(self, http: httpx.AsyncClient) -> tuple[str, float]:
        """A new credential and its lifetime in seconds."""

    @abstractmethod
    def _headers(self, token: str) -> dict[str, str]:
        """The request headers that carry the credential."""


class _SystemUserCredentials(_Credentials):
    def __init__(self, auth: SystemUserAuth, login_url: str) -> None:
        super().__init__()
        self._auth = auth
        self._login_url = login_url
        try:
            key = serialization.load_pem_private_key(
                auth.private_key.get_secret_value().encode("utf-8"), password=None
            )
        except (ValueError, TypeError) as exc:
            raise ConfigError("auth.private_key is not an unencrypted PEM private key") from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError("auth.private_key must be an RSA key")
        self._key = key

    async def _obtain(self, http: httpx.AsyncClient) -> tuple[str, float]:
        body = {
            "SignedSystemToken": sign_system_token(
                self._auth.system_user_token.get_secret_value(), self._key
            ),
            "ApplicationToken": self._auth.application_token.get_secret_value(),
            "ContextIdentifier": self._auth.context_identifier,
            "ReturnTokenType": "JWT",
        }
        response = await _post_auth(http, self._login_url, "system user authentication", json=body)
        reply = _json_object(response, "system user authentication")
        if not reply.get("IsSuccessful"):
            raise AuthError(
                f"system user authentication refused: {reply.get('ErrorMessage') or 'no reason given'}"
            )
        ticket = jwt_claims(str(reply.get("Token", ""))).get(TICKET_CLAIM)
        if not ticket:
            raise AuthError("system user authentication returned no ticket claim")
        log.info("superoffice.authenticated", mode="system_user", tenant=self._auth.context_identifier)
        return str(ticket), self._auth.ticket_renew_seconds

    def _headers(self, token: str) -> dict[str, str]:
        return {
            "Authorization": f"SOTicket {token}",
            "SO-AppToken": self._auth.application_token.get_secret_value(),
        }


class _RefreshTokenCredentials(_Credentials):
    def __init__(self, auth: RefreshTokenAuth, token_url: str) -> None:
        super().__init__()
        self._auth = auth
        self._token_url = token_url
        self._refresh_token = auth.refresh_token.get_secret_value()

    async def _obtain(self, http: httpx.AsyncClient) -> tuple[str, float]:
        form = {
            "grant_type": "refresh_token",
            "client_id": self._auth.client_id,
            "client_secret": self._auth.client_secret.get_secret_value(),
            "refresh_token": self._refresh_token,
        }
        if self._auth.redirect_uri:
            form["redirect_uri"] = self._auth.redirect_uri
        response = await _post_auth(http, self._token_url, "refresh token exchange", data=form)
        reply = _json_object(response, "refresh token exchange")
        access_token = reply.get("access_token")
        if not access_token:
            raise AuthError("refresh token exchange returned no access_token")
        if reply.get("refresh_token"):
            self._refresh_token = str(reply["refresh_token"])
        try:
            lifetime = float(reply.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600.0
        log.info("superoffice.authenticated", mode="refresh_token")
        return str(access_token), max(30.0, lifetime - 60.0)

    def _headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


class _BasicCredentials(_Credentials):
    renewable = False

    def __init__(self, auth: BasicAuth) -> None:
        super().__init__()
        pair = f"{auth.username}:{auth.password.get_secret_value()}".encode()
        self._value = "Basic " + base64.b64encode(pair).decode("ascii")

    async def _obtain(self, http: httpx.AsyncClient) -> tuple[str, float]:
        return self._value, float("inf")

    def _headers(self, token: str) -> dict[str, str]:
        return {"Authorization": token}


async def _post_auth(http: httpx.AsyncClient, url: str, what: str, **kwargs: Any) -> httpx.Response:
    """POST to a login endpoint: outages are transient, every other refusal needs an admin."""
    try:
        response = await http.post(url, headers={"Accept": "application/json"}, **kwargs)
    except httpx.TransportError as exc:
        raise transport_error(what, exc) from exc
    if response.status_code == 429:
        raise Throttled(
            f"{what}: HTTP 429 (rate limited)", retry_after_seconds(response.headers.get("Retry-After"))
        )
    if response.status_code >= 500:
        raise TransientError(
            f"{what}: HTTP {response.status_code}",
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
        )
    if response.status_code != 200:
        raise AuthError(f"{what} refused: HTTP {response.status_code} {error_text(response)}")
    return response


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise AuthError(f"{what}: the reply is not JSON") from exc
    if not isinstance(body, dict):
        raise AuthError(f"{what}: unexpected reply")
    return body


def make_credentials(settings: SuperOfficeSettings) -> _Credentials:
    auth = settings.auth
    if isinstance(auth, SystemUserAuth):
        return _SystemUserCredentials(auth, settings.login_url)
    if isinstance(auth, RefreshTokenAuth):
        return _RefreshTokenCredentials(auth, settings.token_url)
    return _BasicCredentials(auth)


def tls_verify(value: bool | str) -> bool | ssl.SSLContext:
    """httpx takes a bool or an SSL context; a CA bundle path becomes a context."""
    if isinstance(value, str):
        return ssl.create_default_context(cafile=value)
    return value


# --- the API ------------------------------------------------------------------------------------


class SuperOfficeClient:
    """The SuperOffice WebAPI subset CX Hub uses. Paths are relative to ``{base_url}/api/v1``."""

    def __init__(self, settings: SuperOfficeSettings, http_factory: HttpFactory) -> None:
        self._settings = settings
        self._credentials = make_credentials(settings)
        self._http = http_factory(
            base_url=settings.api_url + "/",
            timeout=settings.timeout_seconds,
            verify=tls_verify(settings.verify),
            headers={"Accept": "application/json"},
        )
        self._slots = Slots(settings.max_in_flight)
        self.calls = 0
        #: seconds spent waiting for SuperOffice, summed over requests (over a run's duration: mean in flight)
        self.call_seconds = 0.0

    # -- plumbing

    async def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: dict[str, str] | None = None,
        body: Any = None,
        missing_ok: bool = False,
        lookup: bool = False,
    ) -> httpx.Response:
        """Send one request; 401 -> new credentials and one retry; classify every failure.

        ``lookup``: a read other writes wait for, sent before queued writes (see ``Slots``).
        """
        scope = _SCOPE.get()
        if scope is not None and scope.throttled is not None:
            raise scope.throttled
        async with self._slots.hold(first=lookup):
            if scope is not None and scope.throttled is not None:
                raise scope.throttled
            response = await self._send_with_auth(method, path, params, body, what)
        status = response.status_code
        if status < 300 or (status == 404 and missing_ok):
            return response
        if status == 429:
            throttled = Throttled(
                f"{what}: HTTP 429 (rate limited)", retry_after_seconds(response.headers.get("Retry-After"))
            )
            if scope is not None and scope.throttled is None:
                scope.throttled = throttled
            raise throttled
        raise_for_status(response, what)  # 502/503/504 -> TransientError, 401/403 -> AuthError
        if status >= 500:
            raise TransientError(f"{what}: HTTP {status} {error_text(response)}")
        raise RecordError(f"{what}: HTTP {status} {error_text(response)}", status)

    async def _send_with_auth(
        self, method: str, path: str, params: dict[str, str] | None, body: Any, what: str
    ) -> httpx.Response:
        response: httpx.Response | None = None
        for attempt in (1, 2):
            generation, headers = await self._credentials.headers(self._http)
            started = time.monotonic()
            try:
                self.calls += 1
                response = await self._http.request(method, path, params=params, json=body, headers=headers)
            except httpx.TransportError as exc:
                raise transport_error(what, exc) from exc
            finally:
                self.call_seconds += time.monotonic() - started
            if response.status_code != 401 or attempt == 2 or not self._credentials.renewable:
                return response
            log.info("superoffice.credential_refused", what=what)
            self._credentials.invalidate(generation)
        assert response is not None
        return response

    def describe(self) -> dict[str, Any]:
        return {
            "api_calls": self.calls,
            "api_call_seconds": round(self.call_seconds, 1),
            **self._credentials.describe(),
        }

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _archive(
        self,
        path: str,
        *,
        select: Sequence[str],
        filter_: str | None = None,
        order_by: str | None = None,
        top: int = 50,
        skip: int = 0,
        what: str,
        lookup: bool = False,
    ) -> list[dict[str, Any]]:
        """One page of an OData archive list (``{"value": [rows]}``)."""
        params = {"$select": ",".join(select), "$top": str(top)}
        if skip:
            params["$skip"] = str(skip)
        if filter_:
            params["$filter"] = filter_
        if order_by:
            params["$orderBy"] = order_by
        body = _json(await self.request("GET", path, params=params, what=what, lookup=lookup), what)
        rows = body.get("value", []) if isinstance(body, dict) else []
        return [row for row in rows if isinstance(row, dict)]

    # -- metadata

    async def custom_field_names(self, entity: str) -> set[str]:
        """Names of the published user-defined and extra fields of Person, Ticket, Appointment, ..."""
        what = f"{entity} custom fields"
        fields = _json(await self.request("GET", f"{entity}/CustomField", what=what), what)
        return (
            {str(f.get("FieldName")) for f in fields if isinstance(f, dict)}
            if isinstance(fields, list)
            else set()
        )

    async def missing_table_columns(self, table: str, columns: Sequence[str]) -> set[str]:
        """Which of ``columns`` the dynamic archive refuses on ``table`` (one probe per column)."""
        missing: set[str] = set()
        for column in columns:
            try:
                await self._archive(
                    "archive/dynamic", select=[f"{table}.{column}"], top=1, what=f"probe {table}.{column}"
                )
            except RecordError:
                missing.add(column)
        return missing

    # -- entities

    async def get_entity(self, entity: str, record_id: int) -> dict[str, Any] | None:
        """``GET /{entity}/{id}``; None when SuperOffice has no such record."""
        response = await self.request(
            "GET", f"{entity}/{record_id}", what=f"read {entity} {record_id}", missing_ok=True
        )
        if response.status_code == 404:
            return None
        body = _json(response, f"read {entity} {record_id}")
        return body if isinstance(body, dict) else None

    async def patch_entity(self, entity: str, record_id: int, operations: list[dict[str, Any]]) -> None:
        """``PATCH /{entity}/{id}`` with a JSON Patch document."""
        await self.request(
            "PATCH", f"{entity}/{record_id}", body=operations, what=f"update {entity} {record_id}"
        )

    # -- people

    async def person_ids_by_email(self, email: str) -> list[int]:
        rows = await self._archive(
            "Person",
            select=["personId"],
            filter_=f"email/emailAddress eq {odata_quote(email)}",
            top=20,
            what="find person by email",
        )
        return _ids(rows, "personId")

    async def person_ids_by_mobile(self, digits: str) -> list[int]:
        """Candidates whose mobile number contains ``digits`` (formatting differs; the caller compares)."""
        rows = await self._archive(
            "Person",
            select=["personId"],
            filter_=f"personMobilePhone/formattedNumber contains {odata_quote(digits)}",
            top=20,
            what="find person by mobile",
        )
        return _ids(rows, "personId")

    # -- polling

    async def closed_ticket_rows(self, after: date, *, top: int, skip: int) -> list[dict[str, Any]]:
        """Tickets closed after the day ``after`` (the archive may compare by date), oldest first."""
        return await self._archive(
            "Ticket",
            select=["ticketId", "closedAt"],
            filter_=f"closedAt after {odata_quote(after.isoformat())}",
            order_by="closedAt asc",
            top=top,
            skip=skip,
            what="list closed tickets",
        )

    async def updated_sale_rows(self, after: date, *, top: int, skip: int) -> list[dict[str, Any]]:
        """Sales updated after ``after`` (a sale marked sold is updated), oldest first."""
        return await self._archive(
            "Sale",
            select=["saleId", "updatedDate"],
            filter_=f"updatedDate after {odata_quote(after.isoformat())}",
            order_by="updatedDate asc",
            top=top,
            skip=skip,
            what="list updated sales",
        )

    # -- write-back

    async def ticket_message_ids(self, ticket_id: int, message_id: str) -> list[int]:
        rows = await self._archive(
            f"Ticket/{ticket_id}/Messages",
            select=["ticketMessageId", "messageId"],
            filter_=f"messageId eq {odata_quote(message_id)}",
            top=5,
            what=f"find message on ticket {ticket_id}",
            lookup=True,
        )
        return _ids(rows, "ticketMessageId")

    async def post_ticket_message(self, message: dict[str, Any]) -> int:
        response = await self.request(
            "POST", "TicketMessage", params={"notify": "false"}, body=message, what="add ticket message"
        )
        return _int_member(response, "EjMessageId", "add ticket message")

    async def create_appointment(self, appointment: dict[str, Any]) -> int:
        response = await self.request("POST", "Appointment", body=appointment, what="create activity")
        return _int_member(response, "AppointmentId", "create activity")

    async def insert_table_row(self, table: str, values: dict[str, Any]) -> int:
        what = f"insert {table} row"
        body = _json(await self.request("POST", f"Table/{table}", body=values, what=what), what)
        if not isinstance(body, int):
            raise TransientError(f"{what}: the reply is not a row id")
        return body

    async def update_table_row(self, table: str, row_id: int, values: dict[str, Any]) -> None:
        await self.request("PUT", f"Table/{table}/{row_id}", body=values, what=f"update {table} row {row_id}")

    async def ids_by_key(self, table: str, id_column: str, key_column: str, key: str) -> list[int]:
        """Rows of ``table`` whose ``key_column`` holds ``key``, through the dynamic archive."""
        return (await self.ids_by_keys(table, id_column, key_column, [key])).get(key, [])

    async def ids_by_keys(
        self, table: str, id_column: str, key_column: str, keys: Sequence[str]
    ) -> dict[str, list[int]]:
        """Rows of ``table`` holding each of ``keys`` in ``key_column`` (ids ascending; no rows: no entry).

        One dynamic-archive query for all the keys, ``or``-ed together; more than one only where the query
        string would grow past ``MAX_QUERY_STRING`` (about 20 hub keys fit), and those run concurrently.
        The archive compares text without regard to case, as SQL Server does, so rows are matched back
        to keys the same way.
        """
        id_name, key_name = f"{table}.{id_column}", f"{table}.{key_column}"
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        chunks = self._key_chunks(id_name, key_name, wanted)
        pages = await asyncio.gather(
            *(
                self._archive_all("archive/dynamic", [id_name, key_name], chunk, f"find {table} by key")
                for chunk in chunks
            )
        )
        by_folded = {key.casefold(): key for key in wanted}
        found: dict[str, list[int]] = {}
        for rows in pages:
            for row in rows:
                key = by_folded.get(str(row.get(key_name, "")).casefold())
                ids = _ids([row], id_name)
                if key is not None and ids:
                    found.setdefault(key, []).append(ids[0])
        return {key: sorted(set(ids)) for key, ids in found.items()}

    def _key_chunks(self, id_name: str, key_name: str, keys: list[str]) -> list[str]:
        """``$filter`` texts covering ``keys``, each short enough for one request (a lone key always fits)."""
        fixed = {"$select": f"{id_name},{key_name}", "$top": str(LOOKUP_PAGE_SIZE), "$skip": "1000000"}
        chunks: list[str] = []
        current: list[str] = []
        for key in keys:
            candidate = any_of_filter(key_name, [*current, key])
            if current and query_length({**fixed, "$filter": candidate}) > MAX_QUERY_STRING:
                chunks.append(any_of_filter(key_name, current))
                current = [key]
            else:
                current.append(key)
        chunks.append(any_of_filter(key_name, current))
        return chunks

    async def _archive_all(
        self, path: str, select: Sequence[str], filter_: str, what: str
    ) -> list[dict[str, Any]]:
        """Every row of an archive query, page after page (a lookup normally fits one page)."""
        rows: list[dict[str, Any]] = []
        while True:
            page = await self._archive(
                path,
                select=select,
                filter_=filter_,
                top=LOOKUP_PAGE_SIZE,
                skip=len(rows),
                what=what,
                lookup=True,
            )
            rows += page
            if len(page) < LOOKUP_PAGE_SIZE:
                return rows

    # -- webhooks

    async def list_webhooks(self) -> list[dict[str, Any]]:
        body = _json(await self.request("GET", "Webhook", what="list webhooks"), "list webhooks")
        rows = body.get("value", body) if isinstance(body, dict) else body
        return [row for row in rows if isinstance(row, dict)]

    async def create_webhook(self, webhook: dict[str, Any]) -> dict[str, Any]:
        body = _json(
            await self.request("POST", "Webhook", body=webhook, what="register webhook"), "register webhook"
        )
        return body if isinstance(body, dict) else {}


def _json(response: httpx.Response, what: str) -> Any:
    """The JSON of a successful reply; anything else (a proxy's HTML page) is worth a later retry."""
    try:
        return response.json()
    except ValueError:
        raise TransientError(f"{what}: HTTP {response.status_code} reply is not JSON") from None


def _int_member(response: httpx.Response, member: str, what: str) -> int:
    body = _json(response, what)
    value = body.get(member) if isinstance(body, dict) else None
    if not isinstance(value, int):
        raise TransientError(f"{what}: the reply has no {member}")
    return value


def _ids(rows: list[dict[str, Any]], column: str) -> list[int]:
    """Primary keys of archive rows; slim rows may carry numbers as strings."""
    ids: list[int] = []
    for row in rows:
        value = row.get(column, row.get("PrimaryKey"))
        try:
            ids.append(int(str(value)))
        except ValueError:
            continue
    return ids
