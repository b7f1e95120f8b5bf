"""The one httpx configuration every plugin uses: timeouts, user agent, logging without secrets, retry policy.

Connectors call ``PluginContext.http_client(...)`` (which is ``make_client``) rather than building their own
client, so an admin sets proxies and timeouts once and a secret never reaches a log line.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import structlog

from hub.errors import AuthError, TransientError

log = structlog.get_logger("hub.http")

USER_AGENT = "cxhub/0.1 (+https://github.com/cxhub/cxhub)"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_SENSITIVE_HEADERS = {"authorization", "proxy-authorization", "cookie", "so-apptoken", "x-api-key"}
#: failures that happen before a request leaves: no connection (refused, timed out, no such host) or none free
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    ConnectionRefusedError,
    socket.gaierror,
)
#: the same for urllib3 (under requests, which some connectors use); named, as the core does not depend on it
_NOT_SENT_NAMES = frozenset({"NewConnectionError", "ConnectTimeoutError", "NameResolutionError"})

T = TypeVar("T")


def redacted_headers(headers: httpx.Headers) -> dict[str, str]:
    """Headers fit for a log line: credentials replaced."""
    return {k: ("**********" if k.lower() in _SENSITIVE_HEADERS else v) for k, v in headers.items()}


async def _log_request(request: httpx.Request) -> None:
    log.debug("http.request", method=request.method, url=str(request.url.copy_with(query=None)))


async def _log_response(response: httpx.Response) -> None:
    log.debug(
        "http.response",
        method=response.request.method,
        url=str(response.request.url.copy_with(query=None)),
        status=response.status_code,
    )


def make_client(
    base_url: str = "",
    *,
    timeout: float | httpx.Timeout | None = None,
    verify: Any = True,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` with the hub's defaults. Query strings are left out of logs (they carry keys)."""
    all_headers = {"User-Agent": USER_AGENT, **(headers or {})}
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
        verify=verify,
        headers=all_headers,
        event_hooks={"request": [_log_request], "response": [_log_response]},
        **kwargs,
    )


#: the longest wait a Retry-After may impose: a service that asks for days (or a broken proxy's header) would
#: otherwise park the queue silently; after an hour the hub asks again and is told again
MAX_RETRY_AFTER_SECONDS = 3600.0


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Read a Retry-After header: delta seconds or an HTTP date, at most ``MAX_RETRY_AFTER_SECONDS``. None when
    absent or unreadable (a NaN or infinite number too)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(MAX_RETRY_AFTER_SECONDS, max(0.0, seconds))


def raise_for_status(response: httpx.Response, what: str) -> None:
    """Classify a failed reply: 429/502/503/504 -> TransientError (with Retry-After), 401/403 -> AuthError.

    Other 4xx/5xx are left to the caller (they usually mean one bad record: ``SkippableError``).
    """
    status = response.status_code
    if status in (429, 502, 503, 504):
        raise TransientError(
            f"{what}: HTTP {status}", retry_after=retry_after_seconds(response.headers.get("Retry-After"))
        )
    if status in (401, 403):
        raise AuthError(f"{what}: HTTP {status} {response.text[:200]}")


def never_sent(exc: BaseException) -> bool:
    """True when ``exc``, or an error it was raised from, shows the request never reached the remote side.

    A refused or timed-out connection sends nothing, so it must not count as a try of what was to be sent.
    Follows the chain the way a traceback does (``raise ... from``, or the error being handled), so a raw
    ``httpx.ConnectError``, a ``requests.ConnectionError`` around urllib3's ``NewConnectionError`` and a
    ``TransientError`` raised while handling either are all recognised. A read timeout or a dropped
    connection is not: the request may have arrived.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _NOT_SENT):
            return True
        if any(cls.__name__ in _NOT_SENT_NAMES for cls in type(current).__mro__):
            return True
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return False


def backoff_delay(attempt: int, *, base: float, cap: float, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, never shorter than what the remote side asked for."""
    delay = random.uniform(0, min(cap, base * (2 ** max(0, attempt - 1))))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


async def with_retries(
    call: Callable[[], Awaitable[T]], *, attempts: int = 3, base: float = 0.5, cap: float = 10.0
) -> T:
    """Run ``call`` again on TransientError, honouring retry_after, up to ``attempts`` times in all.

    For short in-call retries (a 429 during a check); the write-back queue has its own, longer, backoff.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except TransientError as exc:
            if attempt == attempts:
                raise
            await asyncio.sleep(backoff_delay(attempt, base=base, cap=cap, retry_after=exc.retry_after))
    raise AssertionError("unreachable")
