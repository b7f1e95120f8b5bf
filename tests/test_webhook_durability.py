"""An acknowledged webhook survives the hub being killed right after its answer.

Webhooks are stored by group commit (``hub.store.group_commit``): the requests of one moment share one
transaction and each is answered only once that transaction has committed. Here a real `cxhub serve` takes a
stream of webhooks from many senders at once, is SIGKILLed the moment the first answers arrive, and is started
again: every webhook that got a 2xx is stored, on SQLite (WAL, ``synchronous=NORMAL``: durable against a killed
process) and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from hub.store import Store
from hub.store.tables import Event
from tests.conftest import config_text
from tests.fakes.crm import free_port
from tests.helpers import webhook
from tests.test_end_to_end import Process, wait_until

pytestmark = pytest.mark.slow

SENDERS = 24
#: answers to wait for before the kill: enough that several batches committed and others are in flight
KILL_AFTER = 40


def serve(config: Path, log: Path, base: str) -> Process:
    """`cxhub serve` started and answering /readyz (its database open and current)."""
    server = Process(["serve", "-c", str(config)], log)

    def answering() -> bool:
        assert server.handle.poll() is None, server.output()
        try:
            return httpx.get(f"{base}/readyz", timeout=1).is_success
        except httpx.TransportError:
            return False

    wait_until(answering, timeout=60, what="the server")
    return server


async def send_until_killed(base: str, server: Process) -> tuple[set[str], int]:
    """``SENDERS`` senders post new cases until the server is gone; the server is SIGKILLed as soon as
    ``KILL_AFTER`` answers arrived, in the same step that reads the answer. Returns the event ids answered 2xx
    and the number of requests that got no answer."""
    acknowledged: set[str] = set()
    unanswered = 0
    numbers = iter(range(1_000_000))

    async def sender(client: httpx.AsyncClient) -> None:
        nonlocal unanswered
        while server.handle.poll() is None:
            case = f"K{next(numbers)}"
            body, headers = webhook(case, "P1")
            try:
                reply = await client.post(f"{base}/hooks/crm", content=body, headers=headers)
            except httpx.TransportError:
                unanswered += 1
                continue
            if reply.is_success:
                acknowledged.add(f"case:{case}:closed")
                if len(acknowledged) >= KILL_AFTER and server.handle.poll() is None:
                    server.handle.send_signal(signal.SIGKILL)
                    server.handle.wait()
            else:
                assert reply.status_code == 503, reply.text  # the only refusal a valid webhook may get

    limits = httpx.Limits(max_connections=SENDERS)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await asyncio.gather(*(sender(client) for _ in range(SENDERS)))
    return acknowledged, unanswered


async def stored_events(database_url: str) -> set[str]:
    store = Store(database_url)
    try:
        async with store.session() as s:
            return set(await s.scalars(select(Event.event_id).where(Event.event_id.like("case:K%"))))
    finally:
        await store.dispose()


async def test_a_webhook_answered_2xx_survives_a_sigkill_right_after_the_answer(
    database_url: str, fake_crm, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "cxhub.toml"
    config.write_text(
        config_text(database_url, fake_crm.url).replace(
            'public_url = "http://127.0.0.1:8000"', f'public_url = "http://127.0.0.1:{port}"\nport = {port}'
        )
    )
    base = f"http://127.0.0.1:{port}"
    server = await asyncio.to_thread(serve, config, tmp_path / "serve.log", base)
    try:
        acknowledged, unanswered = await send_until_killed(base, server)
    finally:
        if server.handle.poll() is None:
            server.stop(signal.SIGKILL)
    assert server.handle.returncode == -signal.SIGKILL
    assert len(acknowledged) >= KILL_AFTER
    assert unanswered > 0, "the kill must land while webhooks are in flight"

    # started again on the same database (SQLite recovers its WAL on open): every answered webhook is there
    again = await asyncio.to_thread(serve, config, tmp_path / "serve2.log", base)
    try:
        stored = await stored_events(database_url)
        missing = acknowledged - stored
        assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged webhooks were lost"
    finally:
        again.stop(signal.SIGKILL)
