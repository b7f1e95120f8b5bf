"""Request helpers shared by the routers: the hub of this app, bounded body reading, the client address."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Coroutine
from ipaddress import IPv6Address, ip_address, ip_network
from typing import Annotated, Any, cast

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from hub.app import Hub
from hub.errors import BadInput
from hub.models import WebhookRequest


def hub_of(request: Request) -> Hub:
    """The hub of this app, for routes that solve no dependencies (plain routes, ``DirectRoute``)."""
    return cast(Hub, request.app.state.hub)


async def get_hub(request: Request) -> Hub:
    """The hub of this app as a dependency. A coroutine on purpose: FastAPI runs a plain function dependency
    in its thread pool, a thread hand-off on every request for a lookup."""
    return hub_of(request)


HubDep = Annotated[Hub, Depends(get_hub)]


class DirectRoute(APIRoute):
    """An API route documented from its endpoint's signature like any other, but called directly: the
    endpoint gets the request and its path parameters as text, with no parameter validation and no
    dependency solving, which cost more than the rest of a webhook's handling in the web layer.

    For endpoints whose only inputs are text path parameters and the request (the webhook and inbound
    routes, which every CRM event and every texted reply takes); they take the hub with ``hub_of``.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[..., Awaitable[Response]] = self.endpoint

        async def handle(request: Request) -> Response:
            params: dict[str, Any] = request.path_params
            return await endpoint(request=request, **params)

        return handle


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes without reading them all (413)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadInput(f"body larger than {limit} bytes", 413)
    chunks: list[bytes] = []
    size = 0
    # the ASGI messages as they come, as ``Request.stream`` reads them: that one is an async generator, which
    # the event loop registers and finalises on every request (every webhook comes this way)
    more = True
    while more:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            raise BadInput(f"body larger than {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def webhook_request(request: Request, body: bytes, public_url: str) -> WebhookRequest:
    """The request as a plugin sees it; the URL is the public one the sender signed (behind a proxy too)."""
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return WebhookRequest(
        method=request.method,
        url=public_url.rstrip("/") + path,
        headers={k.lower(): v for k, v in request.headers.items()},
        query=dict(request.query_params),
        body=body,
    )


#: an IPv4 address as ``str(ip_address(...))`` writes it (no leading zeros, each part at most 255)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def client_address(request: Request) -> str:
    """The address rate limits count by: an IPv4 address, or the /64 network of an IPv6 one (one subscriber
    usually holds a whole /64, and could otherwise rotate through its addresses to dodge every limit)."""
    host = request.client.host if request.client else "unknown"
    if _IPV4.fullmatch(host):  # as ``ip_address`` would write it: every survey page and answer asks
        return host
    try:
        address = ip_address(host)
    except ValueError:
        return host
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ip_network(f"{address}/64", strict=False))
    return str(address)
