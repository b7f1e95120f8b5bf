"""Stopping `cxhub worker` and `cxhub serve` with SIGTERM (what systemd, Docker and Kubernetes send).

A running job gets a grace period to finish; what it has not finished by then is cancelled and the
write-backs it had claimed are handed back at once, so another process writes them without waiting for their
lease to run out. Nothing is lost either way, and the process exits cleanly.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from hub.store import Store
from hub.store.tables import WriteBack
from tests.conftest import config_text
from tests.fakes.crm import free_port
from tests.helpers import survey_flow
from tests.test_end_to_end import Process, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """The `cxhub` processes a test starts; any still running at the end is killed."""
    started: list[Process] = []
    yield started
    for process in started:
        if process.handle.poll() is None:
            process.stop(signal.SIGKILL)


ANSWERS = 12
EXPECTED = ANSWERS * 2 + 2  # a timeline entry and case feedback per answer, one summary per person


async def answered_hub(make_hub: Any, crm_state: Any) -> None:
    """Twelve answers of two people, queued for write-back and not yet written."""
    crm_state.people["P4"] = {"id": "P4", "email": "dee@example.com"}
    hub = await make_hub()
    hub.config.policy.min_days_between_surveys = 0
    for i in range(ANSWERS):
        token = await survey_flow(hub, crm_state, f"C{i}", "P1" if i % 2 else "P4")
        _, page = await hub.engine.page_for_token(token)
        await hub.engine.record_answer(page.invitation_id, i % 11)
    await hub.close()


def write_config(path: Path, database_url: str, crm_url: str, port: int | None = None) -> Path:
    """Leases of a minute (the default), so one left behind would hold its item for the whole test."""
    text = (
        config_text(database_url, crm_url, sync="lease_seconds = 60")
        .replace("prompt_seconds = 0.5", "prompt_seconds = 0.2")
        .replace(
            'webhook_secret = "env:FAKE_WEBHOOK_SECRET"',
            'webhook_secret = "env:FAKE_WEBHOOK_SECRET"\nbatch_size = 4',
        )
    )
    if port is not None:
        text = text.replace(
            'public_url = "http://127.0.0.1:8000"', f'public_url = "http://127.0.0.1:{port}"\nport = {port}'
        )
    path.write_text(text)
    return path


async def queue_rows(database_url: str) -> list[tuple[str, str | None]]:
    store = Store(database_url)
    try:
        async with store.session() as s:
            return [tuple(r) for r in (await s.execute(select(WriteBack.state, WriteBack.lease_owner))).all()]
    finally:
        await store.dispose()


async def wait_for_rows(
    database_url: str, condition: Any, what: str, process: Process, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while not condition(await queue_rows(database_url)):
        assert process.handle.poll() is None, process.output()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


async def test_sigterm_hands_back_the_claims_of_a_sync_that_outlasts_the_grace_period(
    make_hub, database_url, fake_crm, crm_state, tmp_path, processes
) -> None:
    await answered_hub(make_hub, crm_state)
    config = write_config(tmp_path / "cxhub.toml", database_url, fake_crm.url)
    crm_state.latency = 4  # every write takes longer than the grace period
    first = Process(["worker", "-c", str(config), "--grace-seconds", "0.5"], tmp_path / "worker1.log")
    processes.append(first)
    await wait_for_rows(database_url, lambda rows: any(owner for _, owner in rows), "a claimed batch", first)

    assert first.stop(signal.SIGTERM) == 0, first.output()
    assert "Traceback" not in first.output()
    rows = await queue_rows(database_url)
    assert len(rows) == EXPECTED
    assert {state for state, _ in rows} <= {"queued", "done"}
    assert [owner for _, owner in rows if owner] == [], "a stopped worker still holds leases"

    # another worker takes the items over at once, not after the minute the leases would have lasted
    crm_state.latency = 0
    second = Process(["worker", "-c", str(config)], tmp_path / "worker2.log")
    processes.append(second)
    await wait_for_rows(
        database_url, lambda rows: {s for s, _ in rows} == {"done"}, "every item written", second
    )
    assert second.stop(signal.SIGTERM) == 0, second.output()
    assert len(crm_state.records) == EXPECTED
    assert crm_state.creates == EXPECTED


async def test_sigterm_lets_a_running_sync_finish_within_the_grace_period(
    make_hub, database_url, fake_crm, crm_state, tmp_path, processes
) -> None:
    await answered_hub(make_hub, crm_state)
    config = write_config(tmp_path / "cxhub.toml", database_url, fake_crm.url)
    crm_state.latency = 0.3
    worker = Process(["worker", "-c", str(config)], tmp_path / "worker.log")
    processes.append(worker)
    wait_until(lambda: len(crm_state.batches) >= 1, what="the first batch")
    assert len(crm_state.records) < EXPECTED, "the signal must land in the middle of the sync"

    assert worker.stop(signal.SIGTERM) == 0, worker.output()
    assert "Traceback" not in worker.output()
    rows = await queue_rows(database_url)
    assert rows == [("done", None)] * EXPECTED
    assert len(crm_state.records) == EXPECTED


async def test_sigterm_stops_serve_after_its_running_sync(
    make_hub, database_url, fake_crm, crm_state, tmp_path, processes
) -> None:
    await answered_hub(make_hub, crm_state)
    port = free_port()
    config = write_config(tmp_path / "cxhub.toml", database_url, fake_crm.url, port)
    crm_state.latency = 0.3
    server = Process(["serve", "-c", str(config)], tmp_path / "serve.log")
    processes.append(server)
    wait_until(lambda: len(crm_state.batches) >= 1, what="the first batch")
    assert len(crm_state.records) < EXPECTED, "the signal must land in the middle of the sync"
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200

    assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM), server.output()  # uvicorn re-raises it
    assert "Traceback" not in server.output()
    rows = await queue_rows(database_url)
    assert rows == [("done", None)] * EXPECTED
    assert len(crm_state.records) == EXPECTED
