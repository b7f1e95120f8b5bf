"""The two routes every survey link takes, ``GET``/``HEAD``/``POST /s/{token}``, dispatched before the
framework's stack of middleware and routers.

Between the server and an endpoint FastAPI passes a request through about ten layers (its telemetry, body
limit, exception and exit-stack middleware, two levels of routers, the route's exception wrapper), each an
``await`` and a wrapper around ``send``. For a survey page that is a large part of its cost: the page itself
is one indexed read and a cached render. Here those routes are matched by their path alone and their
endpoints called directly, inside the app's ``ServerErrorMiddleware`` (an exception still gives the 500 page
and its log line), with an ``HTTPException`` (a malformed form) answered as the route would answer it.
The routes stay registered on the router too: the app's route list, ``url_path_for`` and any request that
reaches the router (an app mounted elsewhere) find them there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]

PREFIX = "/s/"


class SurveyLinks:
    """ASGI middleware: ``/s/<token>`` (one path segment after ``/s/``) straight to its endpoint."""

    def __init__(self, app: ASGIApp, show: Endpoint, answer: Endpoint) -> None:
        self.app = app
        self._endpoints = {"GET": show, "HEAD": show, "POST": answer}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            token = path[len(PREFIX) :] if path.startswith(PREFIX) and not scope.get("root_path") else ""
            endpoint = self._endpoints.get(scope["method"]) if token and "/" not in token else None
            if endpoint is not None:
                scope["path_params"] = {"token": token}
                request = Request(scope, receive, send)
                try:
                    try:
                        response = await endpoint(request)
                    except HTTPException as exc:
                        response = await http_exception_handler(request, exc)
                    await response(scope, receive, send)
                finally:  # a file part a hostile form carried is spooled to a temporary file: closed now
                    await request.close()
                return
        await self.app(scope, receive, send)
