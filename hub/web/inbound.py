"""``POST /hooks/{connector}`` and ``POST /inbound/{channel}``: what CRMs and channel providers send us.

The order matters: verify, store, *then* answer 2xx. A sender that gets no 2xx retries, so an event is never
acknowledged before it is safe. A rejected request gets a 4xx with the reason and is kept for inspection.

Anyone can post here, so what is kept of rejected requests is a bounded sample: the beginning of each body
(with its whole size), and per target and client address only the first few each minute; every rejection is
still counted in ``cxhub_webhooks_total``. Retention deletes kept requests like raw event bodies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter
from pydantic import BaseModel
from sqlalchemy.exc import InterfaceError, OperationalError

from hub.app import Hub
from hub.errors import AuthError, BadInput, TransientError
from hub.models import CaseEvent
from hub.store.tables import RejectedWebhook, clean_text
from hub.web.deps import DirectRoute, client_address, hub_of, read_body, webhook_request
from hub.web.protection import RateLimiter

log = structlog.get_logger("hub.web")
router = APIRouter(route_class=DirectRoute)  # every CRM event and texted reply comes this way

WEBHOOKS = Counter("cxhub_webhooks_total", "Inbound webhook requests by outcome", ["target", "outcome"])
UNKEPT = Counter(
    "cxhub_rejected_webhooks_unkept_total",
    "Rejected inbound requests counted but not kept (over the per-minute sample)",
    ["target"],
)

#: of a rejected request's body, the first this many bytes are kept: enough to see what was sent
KEPT_BODY_BYTES = 16 * 1024
#: of a rejected request's header values, the first this many characters are kept
KEPT_HEADER_CHARS = 1024
#: rejected requests kept per target and client address per minute; the others are only counted
KEPT_PER_MINUTE = 10
#: rejected requests kept per target per minute from all addresses together
KEPT_PER_TARGET_MINUTE = 60
#: the longest reason kept and answered
REASON_CHARS = 2000

#: what a plugin's parser raises on a body it cannot read when it does not say BadInput itself
#: (json.loads on 5,000 nested brackets raises RecursionError, a missing key KeyError, ...)
UNREADABLE = (ValueError, TypeError, LookupError, AttributeError, RecursionError)

T = TypeVar("T")


@dataclass
class Sample:
    """Which rejected requests are kept: per target and client address, and per target from all addresses."""

    per_client: RateLimiter = field(default_factory=lambda: RateLimiter(KEPT_PER_MINUTE, 60))
    per_target: RateLimiter = field(default_factory=lambda: RateLimiter(KEPT_PER_TARGET_MINUTE, 60))

    def keep(self, target: str, client: str) -> bool:
        return self.per_client.allow(f"{target}\n{client}") and self.per_target.allow(target)


def _keep(request: Request, target: str) -> bool:
    """Whether this rejected request is in the kept sample (one per app, in memory, so tests stay apart)."""
    state = request.app.state
    sample = getattr(state, "rejected_sample", None)
    if not isinstance(sample, Sample):
        sample = state.rejected_sample = Sample()
    return sample.keep(target, client_address(request))


async def _reject(hub: Hub, target: str, request: Request, body: bytes, status: int, reason: str) -> Response:
    """Answer ``status`` with the reason; keep the request (a bounded sample of it) for inspection."""
    reason = clean_text(reason, REASON_CHARS)  # it is answered as JSON too: no lone surrogate in it
    WEBHOOKS.labels(target, "rejected").inc()
    if not _keep(request, target):
        UNKEPT.labels(target).inc()
        return JSONResponse({"error": reason}, status_code=status)
    headers = {
        k: v[:KEPT_HEADER_CHARS]
        for k, v in request.headers.items()
        if k.lower() not in ("authorization", "cookie")
    }
    try:
        async with hub.store.session() as s:
            s.add(
                RejectedWebhook(
                    target=target,
                    status_code=status,
                    reason=reason,
                    headers=headers,
                    body=body[:KEPT_BODY_BYTES],
                    body_size=len(body),
                )
            )
    except Exception:  # keeping is for inspection only: the sender still gets its answer
        log.exception("webhook.not_kept", target=target)
    log.warning("webhook.rejected", target=target, status=status, reason=reason)
    return JSONResponse({"error": reason}, status_code=status)


async def _call_plugin(
    hub: Hub, target: str, request: Request, body: bytes, call: Callable[[], Awaitable[T]]
) -> T | Response:
    """A plugin's parser, its failures answered: a 4xx when the request is at fault, kept in both cases.

    An exception that names no fault of the request is the plugin's (or the hub's) bug: logged, the body
    kept so it can be replayed once fixed, answered 500 so the sender retries.
    """
    try:
        return await call()
    except BadInput as exc:
        return await _reject(hub, target, request, body, exc.status_code, str(exc))
    except AuthError as exc:
        return await _reject(hub, target, request, body, 401, str(exc))
    except TransientError as exc:
        # the plugin could not read the record behind the request: let the sender retry
        WEBHOOKS.labels(target, "retry").inc()
        headers = {"Retry-After": str(int(exc.retry_after or 30))}
        return JSONResponse({"error": str(exc)}, status_code=503, headers=headers)
    except UNREADABLE as exc:
        log.warning("webhook.unreadable", target=target, error=f"{type(exc).__name__}: {exc}"[:500])
        reason = f"{target} could not read the request ({type(exc).__name__})"
        return await _reject(hub, target, request, body, 400, reason)
    except Exception as exc:
        log.exception("webhook.plugin_failed", target=target)
        return await _reject(hub, target, request, body, 500, f"{target} failed: {type(exc).__name__}")


async def _store_failed(hub: Hub, target: str, request: Request, body: bytes, exc: Exception) -> Response:
    """The hub could not store what a valid request brought: the sender must retry, so never a 2xx."""
    if isinstance(exc, OperationalError | InterfaceError):  # the database is unreachable: try again later
        log.warning("webhook.store_unavailable", target=target, error=str(exc)[:500])
        WEBHOOKS.labels(target, "retry").inc()
        return JSONResponse({"error": "storage unavailable"}, status_code=503, headers={"Retry-After": "30"})
    log.exception("webhook.store_failed", target=target)
    return await _reject(hub, target, request, body, 500, f"the hub could not store it: {type(exc).__name__}")


class Refusal(BaseModel):
    """Why a request was refused; the request is kept for inspection (a bounded sample)."""

    error: str


#: what a sender may get besides the plugin's own 2xx reply
REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"model": Refusal, "description": "the body cannot be read or its events cannot be stored"},
    401: {"model": Refusal, "description": "the signature or credentials are wrong"},
    403: {"model": Refusal, "description": "the sender is not allowed"},
    404: {"model": Refusal, "description": "no connector or channel of that name"},
    413: {"model": Refusal, "description": "the body is larger than hub.webhook_max_bytes"},
    503: {"model": Refusal, "description": "the hub cannot store it now: retry after Retry-After seconds"},
}


@router.post("/hooks/{connector}", tags=["inbound"], summary="Receive a CRM webhook", responses=REFUSALS)
async def receive_webhook(connector: str, request: Request) -> Response:
    hub = hub_of(request)
    instance = hub.connectors.get(connector)
    if instance is None:
        return JSONResponse({"error": f"no connector named {connector}"}, status_code=404)
    try:
        body = await read_body(request, hub.config.hub.webhook_max_bytes)
    except BadInput as exc:
        return await _reject(hub, connector, request, b"", exc.status_code, str(exc))
    parsed = webhook_request(request, body, hub.config.hub.public_url)
    reply = await _call_plugin(hub, connector, request, body, lambda: instance.parse_webhook(parsed))
    if isinstance(reply, Response):
        return reply
    # events that cannot be stored are refused (kept); the others beside them are stored first
    refused: list[tuple[CaseEvent, str]] = []
    try:
        if reply.events:
            await hub.engine.receive(connector, reply.events, source="webhook", raw=body, refused=refused)
    except Exception as exc:
        return await _store_failed(hub, connector, request, body, exc)
    problems = [f"{event.event_id[:80]!r}: {problem}" for event, problem in refused]
    if problems:
        return await _reject(hub, connector, request, body, 400, "; ".join(problems))
    WEBHOOKS.labels(connector, "accepted").inc()
    return Response(reply.body, status_code=reply.status_code, media_type=reply.media_type)


@router.post(
    "/inbound/{channel}", tags=["inbound"], summary="Receive a reply through a channel", responses=REFUSALS
)
async def receive_inbound(channel: str, request: Request) -> Response:
    hub = hub_of(request)
    instance = hub.channels.get(channel)
    if instance is None:
        return JSONResponse({"error": f"no channel named {channel}"}, status_code=404)
    try:
        body = await read_body(request, hub.config.hub.webhook_max_bytes)
    except BadInput as exc:
        return await _reject(hub, channel, request, b"", exc.status_code, str(exc))
    parsed = webhook_request(request, body, hub.config.hub.public_url)
    reply = await _call_plugin(hub, channel, request, body, lambda: instance.parse_inbound(parsed))
    if isinstance(reply, Response):
        return reply
    try:
        await hub.engine.receive_inbound(channel, reply)
    except Exception as exc:
        return await _store_failed(hub, channel, request, body, exc)
    WEBHOOKS.labels(channel, "accepted").inc()
    return Response(reply.body, status_code=reply.status_code, media_type=reply.media_type)
