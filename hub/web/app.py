"""The FastAPI application: routers, health, metrics, and (for `cxhub serve`) the hub's lifespan.

Nothing that describes or measures the hub is public: ``/metrics`` needs ``hub.metrics_token`` (off while
unset), and the OpenAPI document needs the admin API's token, like the API it describes. The docs page is a
shell (Swagger UI) that exists while the API is on; it asks for the token and sends it with every request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

import hub as hub_package
from hub import controls
from hub.app import Hub, freeze_start_up_objects
from hub.metrics import connector_health
from hub.metrics import render as render_metrics
from hub.web import admin, api, api_people, conversations, inbound, survey, sync_api
from hub.web.cockpit import audit as cockpit_audit
from hub.web.cockpit import campaigns as cockpit_campaigns
from hub.web.cockpit import dashboard
from hub.web.cockpit import people as cockpit_people
from hub.web.cockpit import sso as cockpit_sso
from hub.web.cockpit import sync as cockpit_sync
from hub.web.cockpit import users as cockpit_users
from hub.web.deps import HubDep
from hub.web.protection import require_bearer
from hub.web.survey_links import SurveyLinks

OPENAPI_URL = "/api/v1/openapi.json"
#: how long a stopping web process lets a sync or poll an admin started finish (see ``hub.controls``)
GRACE_SECONDS = 20.0
#: Swagger UI from the same CDN FastAPI uses; the token typed once is kept for the browser tab only
DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>CX Hub API</title>
<meta name="referrer" content="no-referrer">
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>
const key = "cxhub_api_token";
const token = sessionStorage.getItem(key) || window.prompt("The admin API token (hub.api_token)") || "";
sessionStorage.setItem(key, token);
SwaggerUIBundle({
  url: "/api/v1/openapi.json",
  dom_id: "#swagger-ui",
  requestInterceptor: (request) => { request.headers.Authorization = "Bearer " + token; return request; },
});
</script></body></html>
"""


async def require_metrics_token(running: HubDep, request: Request) -> None:
    require_bearer(request, running.config.hub.metrics_token, "metrics are off: set hub.metrics_token")


def create_app(
    hub: Hub | None = None, *, config_path: str | Path | None = None, scheduler: bool = True
) -> FastAPI:
    """The web app. Give a running ``hub`` (tests, embedding) or a ``config_path`` to open one on start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = hub is None
        running = hub if hub is not None else await Hub.open(config_path or "cxhub.toml")
        app.state.hub = running
        jobs = None
        if scheduler:
            from hub.scheduler import Scheduler

            jobs = Scheduler(running)
            jobs.start()
        app.state.scheduler = jobs  # the cockpit shows its next runs
        if own:  # a server of its own (``cxhub serve``), not one embedded in a test or another program
            freeze_start_up_objects()
        try:
            yield
        finally:
            # the scheduled jobs and the runs admins started get the same grace, side by side
            stopping = [controls.finish_runs(running, GRACE_SECONDS)]
            if jobs is not None:
                stopping.append(jobs.shutdown())
            await asyncio.gather(*stopping)
            if own:
                await running.close()

    app = FastAPI(
        title="CX Hub",
        version=hub_package.__version__,
        lifespan=lifespan,
        docs_url=None,
        openapi_url=None,
        redoc_url=None,
    )
    if hub is not None:
        app.state.hub = hub

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        """FastAPI's 422, written as ASCII JSON: the errors echo the input, and a lone surrogate in it (a JSON
        ``\\ud800`` escape) would make the default UTF-8 rendering fail with a 500."""
        body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
        return Response(body, status_code=422, media_type="application/json")

    app.include_router(survey.router)  # first: the routes every survey link takes are matched first
    app.include_router(inbound.router)
    app.include_router(api.router)
    app.include_router(api_people.router)
    app.include_router(sync_api.router)
    app.include_router(admin.router)
    app.include_router(dashboard.router)
    app.include_router(conversations.router)
    app.include_router(cockpit_audit.router)
    app.include_router(cockpit_users.router)
    app.include_router(cockpit_sso.router)
    app.include_router(cockpit_sync.router)
    app.include_router(cockpit_people.router)
    app.include_router(cockpit_campaigns.router)
    app.add_middleware(cockpit_sso.StateCookie)
    # outermost of the app's own middleware: the survey links' routes skip the framework's layers
    app.add_middleware(SurveyLinks, show=survey.show_survey, answer=survey.answer_survey)
    app.mount("/static", StaticFiles(directory=survey.STATIC_DIR), name="static")

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(running: HubDep) -> Response:
        """The database answers and its schema is current."""
        try:
            async with running.store.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            current = await running.store.is_current()
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "error": type(exc).__name__}, status_code=503)
        if not current:
            return JSONResponse({"status": "migrations pending: run `cxhub db upgrade`"}, status_code=503)
        # a CRM whose login keeps failing needs an admin, but this process still takes webhooks and answers:
        # its name is given here without taking the process out of its load balancer; the details (times,
        # the CRM's error) are for holders of a token: /api/v1/connectors and /metrics
        health = await connector_health(running.store, running.connectors)
        failing = sorted(name for name, found in health.items() if found.login_failing)
        body: dict[str, object] = {"status": "ready"}
        if failing:
            body["degraded"] = failing
        return JSONResponse(body)

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_metrics_token)])
    async def metrics(running: HubDep) -> Response:
        """Prometheus metrics, for a scraper that sends ``Authorization: Bearer <hub.metrics_token>``: this
        process's counters and the whole hub's state read from the database (see ``hub.metrics``)."""
        return Response(
            await render_metrics(running.store, running.connectors), media_type=CONTENT_TYPE_LATEST
        )

    @app.get(OPENAPI_URL, include_in_schema=False, dependencies=[Depends(api.require_token)])
    async def openapi() -> JSONResponse:
        """The OpenAPI document, for holders of the API token."""
        return JSONResponse(app.openapi())

    @app.get("/api/docs", include_in_schema=False)
    async def docs(running: HubDep) -> HTMLResponse:
        """The API's docs page while the API is on; it holds no data, the document it loads needs the token."""
        if running.config.hub.api_token is None:
            raise HTTPException(404, "the admin API is off: set hub.api_token")
        page = HTMLResponse(DOCS_PAGE)
        page.headers["Cache-Control"] = "no-store"
        return page

    return app
