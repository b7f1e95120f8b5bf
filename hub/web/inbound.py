"""``POST /hooks/{connector}`` and ``POST /inbound/{channel}``: what CRMs and channel providers send us.

The order matters: verify, store, *then* answer 2xx. A sender that gets no 2xx retries, so an event is never
acknowledged before it is safe. A rejected request gets a 4xx with the reason and is kept for inspection.
"""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter

from hub.app import Hub
from hub.errors import AuthError, BadInput, TransientError
from hub.store.tables import RejectedWebhook
from hub.web.deps import HubDep, read_body, webhook_request

log = structlog.get_logger("hub.web")
router = APIRouter()

WEBHOOKS = Counter("cxhub_webhooks_total", "Inbound webhook requests by outcome", ["target", "outcome"])


async def _reject(hub: Hub, target: str, request: Request, body: bytes, status: int, reason: str) -> Response:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in ("authorization", "cookie")}
    async with hub.store.session() as s:
        s.add(RejectedWebhook(target=target, status_code=status, reason=reason, headers=headers, body=body))
    WEBHOOKS.labels(target, "rejected").inc()
    log.warning("webhook.rejected", target=target, status=status, reason=reason)
    return JSONResponse({"error": reason}, status_code=status)


@router.post("/hooks/{connector}", tags=["inbound"], summary="Receive a CRM webhook")
async def receive_webhook(connector: str, request: Request, hub: HubDep) -> Response:
    instance = hub.connectors.get(connector)
    if instance is None:
        return JSONResponse({"error": f"no connector named {connector}"}, status_code=404)
    try:
        body = await read_body(request, hub.config.hub.webhook_max_bytes)
    except BadInput as exc:
        return await _reject(hub, connector, request, b"", exc.status_code, str(exc))
    try:
        reply = await instance.parse_webhook(webhook_request(request, body, hub.config.hub.public_url))
    except BadInput as exc:
        return await _reject(hub, connector, request, body, exc.status_code, str(exc))
    except AuthError as exc:
        return await _reject(hub, connector, request, body, 401, str(exc))
    except TransientError as exc:
        # the connector could not read the record behind the event: let the CRM retry
        WEBHOOKS.labels(connector, "retry").inc()
        headers = {"Retry-After": str(int(exc.retry_after or 30))}
        return JSONResponse({"error": str(exc)}, status_code=503, headers=headers)
    if reply.events:
        await hub.engine.receive(connector, reply.events, source="webhook", raw=body)
    WEBHOOKS.labels(connector, "accepted").inc()
    return Response(reply.body, status_code=reply.status_code, media_type=reply.media_type)


@router.post("/inbound/{channel}", tags=["inbound"], summary="Receive a reply through a channel")
async def receive_inbound(channel: str, request: Request, hub: HubDep) -> Response:
    instance = hub.channels.get(channel)
    if instance is None:
        return JSONResponse({"error": f"no channel named {channel}"}, status_code=404)
    try:
        body = await read_body(request, hub.config.hub.webhook_max_bytes)
        reply = await instance.parse_inbound(webhook_request(request, body, hub.config.hub.public_url))
    except BadInput as exc:
        return await _reject(hub, channel, request, b"", exc.status_code, str(exc))
    for answer in reply.answers:
        await hub.engine.record_inbound(channel, answer)
    WEBHOOKS.labels(channel, "accepted").inc()
    return Response(reply.body, status_code=reply.status_code, media_type=reply.media_type)
