"""Small helpers the tests share: events, signed webhooks, reading a survey page's form."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi.routing import APIRoute
from sqlalchemy import event
from starlette.routing import Route

from hub import CaseEvent
from tests.conftest import WEBHOOK_SECRET
from tests.fakes.crm import sign


def case_event(case_id: str = "C1", person: str | None = "P1", **fields: Any) -> CaseEvent:
    return CaseEvent(
        event_id=f"case:{case_id}:closed",
        event_type="case.closed",
        occurred_at=datetime.now(UTC),
        record_type="case",
        record_id=case_id,
        person_id=person,
        owner_email="owner@example.com",
        record_url=f"https://crm.example.com/case/{case_id}",
        fields=fields,
    )


def webhook(
    case_id: str = "C1", person: str = "P1", secret: str = WEBHOOK_SECRET
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"id": case_id, "person_id": person, "owner_email": "owner@example.com"}).encode()
    return body, {"content-type": "application/json", "x-fake-signature": sign(secret, body)}


def token_of(url: str) -> str:
    return url.split("/s/", 1)[1].split("?", 1)[0]


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert match, "the page has no CSRF field"
    return match.group(1)


async def survey_flow(hub: Any, crm_state: Any, case_id: str = "C1", person: str = "P1") -> str:
    """Event -> invitation -> sent; returns the survey token from the message."""
    await hub.engine.receive("crm", [case_event(case_id, person)], source="webhook")
    await hub.engine.process_pending()
    await hub.engine.dispatch_due()
    message = [m for m in crm_state.outbox if m.get("kind") in ("survey", "reminder")][-1]
    return token_of(message["survey_url"])


def asgi_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000")


def app_routes(app: Any) -> list[tuple[str, set[str]]]:
    """(path, methods) of every route of an app, inside the routers it includes too: tests that must cover
    every page or action read them from here, so a new one is covered without being listed."""

    def walk(found: list[Any]) -> list[tuple[str, set[str]]]:
        out: list[tuple[str, set[str]]] = []
        for route in found:
            included = getattr(route, "original_router", None)
            if included is not None:
                out += walk(included.routes)
            elif isinstance(route, APIRoute | Route):
                out.append((route.path, set(route.methods or ())))
        return out

    return walk(app.routes)


@contextmanager
def statements_run(hub: Any) -> Iterator[list[str]]:
    """The SQL of every statement the hub sends while the block runs, in order: through SQLAlchemy's engines,
    and on PostgreSQL those it runs straight through asyncpg (``Store.driver``); the reads a SQLite file's
    writer makes straight through the driver are not among them."""
    statements: list[str] = []

    def remember(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engines = list(hub.store.engines())
    for engine in engines:
        event.listen(engine, "before_cursor_execute", remember)
    driver = hub.store.driver
    if driver is not None:
        run = driver._run

        async def run_remembered(compiled: Any, call: Any, params: Any) -> Any:
            statements.append(compiled.statement.sql)
            return await run(compiled, call, params)

        driver._run = run_remembered
    try:
        yield statements
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", remember)
        if driver is not None:
            del driver._run
