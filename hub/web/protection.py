"""Bearer tokens of the API and metrics, CSRF tokens and rate limits for the survey pages.

CSRF: a random cookie plus a form field that is the HMAC of that cookie and the survey token, keyed with the
hub's secret. A forged cross-site POST has neither the cookie value nor the key, and a token for one survey
is useless for another.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable

from fastapi import HTTPException, Request
from pydantic import SecretStr
from starlette.datastructures import FormData

CSRF_COOKIE = "cxhub_csrf"


def require_bearer(request: Request, configured: SecretStr | None, off: str) -> None:
    """Let the request through only with ``Authorization: Bearer <configured>`` (compared in constant time).

    Unset ``configured`` means the feature is off: 404 with ``off`` as the detail. A missing or wrong token is
    a 401 that names the scheme.
    """
    if configured is None:
        raise HTTPException(404, off)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), configured.get_secret_value().encode()
    ):
        raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})


def new_csrf_cookie() -> str:
    return secrets.token_urlsafe(24)


def csrf_token(secret_key: str, cookie: str, token_hash: str) -> str:
    return hmac.new(secret_key.encode(), f"{cookie}:{token_hash}".encode(), hashlib.sha256).hexdigest()


def csrf_valid(secret_key: str, cookie: str | None, token_hash: str, submitted: str | None) -> bool:
    if not cookie or not submitted:
        return False
    return hmac.compare_digest(csrf_token(secret_key, cookie, token_hash), submitted)


def form_csrf_valid(secret_key: str, request: Request, form: FormData, scope: str) -> bool:
    """Whether a posted form's ``csrf`` field matches the request's CSRF cookie for ``scope`` (a survey
    link's hash, or the cockpit's scope)."""
    submitted = form.get("csrf")
    return csrf_valid(
        secret_key,
        request.cookies.get(CSRF_COOKIE),
        scope,
        submitted if isinstance(submitted, str) else None,
    )


class RateLimiter:
    """A sliding-window limit per key (a survey token, a client address), in memory, per process.

    At most ``max_keys`` keys are remembered. When a new key would pass that, the keys whose window is over are
    forgotten first, then the ones seen least recently: a flood of new addresses cannot wipe the count of a
    client that is being limited right now, as clearing the whole table would.

    The table is a dict (its order is the keys' recency: a key seen again moves to its end) of arrays of
    floats, which the garbage collector walks as one object each: their times are C doubles, not objects.
    With a deque of floats per key every full collection visited every remembered hit (up to ``max_keys``
    times ``limit`` of them): with 12,000 clients near their limit that was a 10 ms pause of the whole process
    every half second of a steady stream of answers, and a flood of new addresses made it longer.
    """

    def __init__(
        self,
        limit: int,
        window_seconds: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window_seconds
        self.max_keys = max_keys
        self.clock = clock
        #: key -> when it was let through within its window, oldest first; least recently seen key first
        self.hits: dict[str, array[float]] = {}

    def allow(self, key: str) -> bool:
        now = self.clock()
        hits = self.hits.pop(key, None)
        if hits is None:
            if len(self.hits) >= self.max_keys:
                self._make_room(now)
            hits = array("d")
        self.hits[key] = hits  # the most recently seen
        expired = bisect_right(hits, now - self.window)
        if expired:
            del hits[:expired]
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True

    def _make_room(self, now: float) -> None:
        """Forget keys until one more fits: those whose window is over first, then the least recently seen."""
        excess = len(self.hits) - self.max_keys + 1
        stale = [key for key, hits in self.hits.items() if not hits or hits[-1] <= now - self.window]
        for key in stale[:excess]:
            del self.hits[key]
        while len(self.hits) > self.max_keys - 1:
            del self.hits[next(iter(self.hits))]  # the least recently seen
