"""The FastAPI application: routers, health, metrics, and (for `cxhub serve`) the hub's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

import hub as hub_package
from hub.app import Hub
from hub.web import admin, api, inbound, survey
from hub.web.deps import HubDep


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
        try:
            yield
        finally:
            if jobs is not None:
                await jobs.shutdown()
            if own:
                await running.close()

    app = FastAPI(
        title="CX Hub",
        version=hub_package.__version__,
        lifespan=lifespan,
        docs_url="/api/docs",
        openapi_url="/api/v1/openapi.json",
        redoc_url=None,
    )
    if hub is not None:
        app.state.hub = hub
    app.include_router(inbound.router)
    app.include_router(survey.router)
    app.include_router(api.router)
    app.include_router(admin.router)
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
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
