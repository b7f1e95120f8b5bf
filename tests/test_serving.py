"""`cxhub serve` as it really runs: uvicorn with the hub's logging and proxy settings, over real HTTP.

Survey links are secrets, so no log line may carry one; and a client address comes from X-Forwarded-For only
when the request came from a configured proxy, else anyone could dodge the survey rate limits.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import uvicorn

from hub import logging as hub_logging
from hub.app import YOUNG_COLLECTION_THRESHOLD
from hub.cli import server_config
from hub.config import parse_config
from hub.web import create_app
from tests.conftest import config_text
from tests.helpers import survey_flow


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: these tests are about the server in front of the store, not the store."""
    return f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def served(hub: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The hub's app under uvicorn configured exactly as `cxhub serve` configures it."""
    port = _free_port()
    server = uvicorn.Server(server_config(hub.config, create_app(hub, scheduler=False), port=port))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        await task


async def test_survey_and_unsubscribe_tokens_never_reach_a_log(make_hub, crm_state, capsys) -> None:
    hub = await make_hub()
    hub_logging.configure("debug")
    token = await survey_flow(hub, crm_state)
    unsubscribe = crm_state.outbox[-1]["unsubscribe_url"].split("/u/", 1)[1]
    async with served(hub) as client:
        assert (await client.get(f"/s/{token}?score=9")).status_code == 200
        assert (await client.post(f"/s/{token}", data={"score": "9"})).status_code == 403  # no CSRF
        assert (await client.get(f"/s/{token}/thanks")).status_code in (200, 303)
        assert (await client.get(f"/u/{unsubscribe}")).status_code == 200
    structlog.get_logger("test").info("link sent", url=f"https://hub.example.com/s/{token}")
    logging.getLogger("third.party").warning(
        "fetching %s", httpx.URL(f"https://hub.example.com/u/{unsubscribe}")
    )
    try:
        raise RuntimeError(f"cannot open /s/{token}")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    logged = capsys.readouterr().err
    assert '"GET /s/**********?score=9 HTTP/1.1" 200' in logged  # uvicorn's access log, the token gone
    assert '"GET /u/********** HTTP/1.1" 200' in logged
    assert "link sent" in logged and "fetching https://hub.example.com/u/**********" in logged
    assert "RuntimeError: cannot open /s/**********" in logged
    assert token not in logged and unsubscribe not in logged


async def test_the_access_log_can_be_left_to_a_proxy_in_front(make_hub, crm_state, capsys) -> None:
    """``hub.access_log = false``: no line per request (a reverse proxy logs them), the hub's own lines stay."""
    hub = await make_hub()
    hub_logging.configure("info")
    hub.config.hub.access_log = False
    token = await survey_flow(hub, crm_state)
    capsys.readouterr()  # the fake CRM's own server logs its requests
    async with served(hub) as client:
        assert (await client.get(f"/s/{token}")).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
    structlog.get_logger("test").info("still logging")
    logged = capsys.readouterr().err
    assert "still logging" in logged
    assert "HTTP/1.1" not in logged and "/healthz" not in logged, logged


async def _rotated_guesses(client: httpx.AsyncClient, method: str, count: int) -> list[int]:
    codes = []
    for i in range(count):
        headers = {"X-Forwarded-For": f"203.0.113.{i % 250}", "X-Real-IP": f"198.51.100.{i % 250}"}
        reply = await client.request(method, f"/s/guess-{i}", headers=headers, data={"score": "9"})
        codes.append(reply.status_code)
    return codes


async def test_a_forwarded_address_from_an_untrusted_client_does_not_dodge_the_limits(make_hub) -> None:
    hub = await make_hub()
    async with served(hub) as client:
        posts = await _rotated_guesses(client, "POST", 125)
        views = await _rotated_guesses(client, "GET", 125)
    assert posts[:120] == [404] * 120 and posts[120:] == [429] * 5
    assert views[:120] == [404] * 120 and views[120:] == [429] * 5


async def test_a_trusted_proxy_forwards_the_client_address(make_hub) -> None:
    hub = await make_hub()
    hub.config.hub.trusted_proxies = ["127.0.0.1"]
    async with served(hub) as client:
        views = await _rotated_guesses(client, "GET", 125)
        same_client = [
            (await client.get(f"/s/guess-{i}", headers={"X-Forwarded-For": "192.0.2.7"})).status_code
            for i in range(121)
        ]
    assert views == [404] * 125  # 125 clients behind the proxy, one look each
    assert same_client[:120] == [404] * 120 and same_client[120] == 429


async def test_a_server_of_its_own_takes_its_start_up_objects_out_of_the_collectors_sight(
    database_url: str, fake_crm: Any, tmp_path: Path
) -> None:
    """`cxhub serve` freezes what start-up left alive, so a full collection under load walks only what came
    after (a walk of everything stopped the event loop for about 100 ms every few seconds). A hub embedded in
    another program (here, the tests' own) is left alone: that program owns its heap."""
    config = tmp_path / "cxhub.toml"
    config.write_text(config_text(database_url, fake_crm.url))
    gc.unfreeze()
    threshold = gc.get_threshold()
    port = _free_port()
    server = uvicorn.Server(
        server_config(
            parse_config(tomllib.loads(config.read_text()), config),
            create_app(config_path=config, scheduler=False),
            port=port,
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.02)
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD  # a request's objects are not promoted
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).status_code == 200
    finally:
        server.should_exit = True
        await task
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def test_an_embedded_hub_leaves_the_heap_to_its_program(make_hub: Any) -> None:
    gc.unfreeze()
    threshold = gc.get_threshold()
    async with served(await make_hub()) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == threshold
