"""Every Dataverse Web API call of the connector, on the hub's shared httpx client.

Each call carries a bearer token from ``auth.TokenSource`` and the OData headers, and its answer is
classified once, here:

- a request that never left (refused, DNS, connect or pool timeout) -> ``TransientError(sent=False)``;
- 401 -> one new token and one retry, then ``AuthError``; 403 -> ``AuthError``;
- 429 (service protection) -> ``TransientError`` with Retry-After and ``sent=False``: Dataverse applied
  nothing, and the hub's sync holds every worker of the connector for Retry-After; the execution-time kind
  (0x80072321) also halves the $batch size, as Microsoft advises;
- 502/503/504/500 -> ``TransientError``; other 4xx -> ``DataverseError`` (one bad record: skippable).
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import structlog

from hub import AuthError, PluginContext, SkippableError, TransientError
from hub.http import retry_after_seconds
from hub_dynamics import batch
from hub_dynamics.auth import TokenSource
from hub_dynamics.budget import WindowBudget
from hub_dynamics.config import DynamicsSettings

log = structlog.get_logger("hub_dynamics.client")

EXECUTION_TIME_LIMIT = "0x80072321"
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class DataverseError(SkippableError):
    """Dataverse refused a request about a record (4xx other than auth and throttling)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code


def error_of(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of a Dataverse error body; empty code when the body is not one."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        return str(error.get("code", "")), str(error.get("message", ""))[:500]
    return "", response.text[:200]


class DataverseClient:
    """The Web API of one environment. ``batch_requests`` shrinks after an execution-time 429."""

    def __init__(self, settings: DynamicsSettings, ctx: PluginContext) -> None:
        self.settings = settings
        self.http = ctx.http_client(
            timeout=settings.timeout_seconds,
            verify=ssl.create_default_context(cafile=settings.ca_bundle) if settings.ca_bundle else True,
            trust_env=False,
            **({"proxy": settings.proxy} if settings.proxy else {}),
        )
        self.tokens = TokenSource(settings, self.http)
        self.budget = WindowBudget(share=settings.window_request_share)
        self.ledger = ctx.usage
        self.batch_requests = settings.max_batch_requests
        self.calls = 0

    def url(self, path: str) -> str:
        """A path under the API root; an absolute link (nextLink, deltaLink) only if it is under it too,
        so a stored or returned link can never send the bearer token to another host."""
        if "://" not in path:
            return f"{self.settings.api_url}/{path}"
        if not path.startswith(f"{self.settings.api_url}/"):
            raise DataverseError(400, "", f"refusing a link outside {self.settings.api_url}")
        return path

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One classified call; returns 2xx and 404 replies (the caller decides what a 404 means)."""
        self.budget.acquire()
        response = await self._send(method, path, params, json, content, headers, fresh=False)
        if response.status_code == 401:
            log.info("dynamics.token_refused_renewing")
            response = await self._send(method, path, params, json, content, headers, fresh=True)
            if response.status_code == 401:
                raise AuthError(f"Dataverse refused a new token: {error_of(response)[1]}")
        self._classify(response)
        return response

    async def _send(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None,
        json: Any,
        content: bytes | None,
        headers: dict[str, str] | None,
        *,
        fresh: bool,
    ) -> httpx.Response:
        token = await self.tokens.token(fresh=fresh)
        all_headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
            **(headers or {}),
        }
        self.calls += 1
        try:
            return await self.http.request(
                method, self.url(path), params=params, json=json, content=content, headers=all_headers
            )
        except _NEVER_SENT as exc:
            raise TransientError(f"Dataverse unreachable: {type(exc).__name__}", sent=False) from None
        except httpx.TransportError as exc:
            raise TransientError(f"Dataverse did not answer: {type(exc).__name__}") from None

    def _classify(self, response: httpx.Response) -> None:
        status = response.status_code
        if status < 300 or status == 404:
            return
        code, message = error_of(response)
        if status == 429:
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            if code == EXECUTION_TIME_LIMIT:
                self.batch_requests = max(1, self.batch_requests // 2)
            raise TransientError(f"Dataverse service protection limit {code}: {message}", wait, sent=False)
        if status == 403:
            raise AuthError(f"Dataverse refused the application user: {code} {message}")
        if status >= 500:
            raise TransientError(
                f"Dataverse answered HTTP {status} {code}",
                retry_after_seconds(response.headers.get("Retry-After")),
            )
        raise DataverseError(status, code, message)

    # -- reads ----------------------------------------------------------------------------------

    async def get_json(
        self, path: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | None:
        """The JSON object at ``path``; None on 404."""
        response = await self.request("GET", path, params=params, headers=headers)
        if response.status_code == 404:
            return None
        data = response.json()
        return data if isinstance(data, dict) else None

    async def get_record(
        self, entity_set: str, record_id: str, columns: list[str], annotations: bool = False
    ) -> dict[str, Any] | None:
        headers = {"Prefer": 'odata.include-annotations="*"'} if annotations else None
        return await self.get_json(f"{entity_set}({record_id})", {"$select": ",".join(columns)}, headers)

    async def query(
        self, entity_set: str, columns: list[str], filter_: str, top: int | None = None
    ) -> list[dict[str, Any]]:
        params = {"$select": ",".join(columns), "$filter": filter_}
        if top is not None:
            params["$top"] = str(top)
        data = await self.get_json(entity_set, params)
        rows = data.get("value") if data else None
        return [row for row in rows or [] if isinstance(row, dict)]

    async def page(self, link: str, params: dict[str, str] | None, prefer: list[str]) -> dict[str, Any]:
        """One page of a collection (``link`` an entity set or a nextLink/deltaLink followed verbatim)."""
        data = await self.get_json(link, params, {"Prefer": ",".join(prefer)})
        if data is None:
            raise DataverseError(404, "", f"{link.split('?')[0]} not found")
        return data

    # -- writes ---------------------------------------------------------------------------------

    async def execute_batch(self, groups: list[list[batch.Operation]]) -> list[batch.PartReply]:
        """One ``$batch`` with continue-on-error; the replies in request order."""
        content_type, body = batch.encode(groups, self.settings.api_url)
        response = await self.request(
            "POST",
            "$batch",
            content=body,
            headers={"Content-Type": content_type, "Prefer": "odata.continue-on-error"},
        )
        if response.status_code == 404:
            raise TransientError("Dataverse answered 404 to $batch")
        try:
            return batch.decode(response.headers.get("content-type", ""), response.content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise TransientError(f"unreadable $batch reply: {exc}") from None

    async def share_usage(self) -> None:
        await self.budget.share_usage(self.ledger)

    async def aclose(self) -> None:
        await self.http.aclose()
