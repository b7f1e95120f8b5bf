"""The whole hub as an admin runs it: `cxhub serve` and `cxhub worker` processes, real HTTP, real database.

* webhook in -> invitation -> sent -> answer POSTed in the survey page -> write-backs -> the CRM got exactly
  the expected batch, driven only by the scheduler;
* a worker SIGKILLed in the middle of a sync loses nothing and, after a restart, the CRM holds every
  response exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from hub.store import Store
from hub.store.tables import WriteBack
from tests.conftest import config_text
from tests.fakes.crm import free_port
from tests.helpers import csrf_of, survey_flow, webhook

ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.slow


def wait_until(condition: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Process:
    """A `cxhub` subprocess with the test's environment; its output is kept for failure messages."""

    def __init__(self, args: list[str], log: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.log = log
        self.handle = subprocess.Popen(
            [sys.executable, "-m", "hub", *args], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.handle.poll() is None:
            self.handle.send_signal(sig)
        return self.handle.wait(timeout=20)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        if process.handle.poll() is None:
            process.stop(signal.SIGKILL)


def test_webhook_to_crm_through_http_and_the_scheduler(
    database_url, fake_crm, crm_state, tmp_path, processes
) -> None:
    port = free_port()
    config = tmp_path / "cxhub.toml"
    config.write_text(
        config_text(database_url, fake_crm.url)
        .replace(
            'public_url = "http://127.0.0.1:8000"', f'public_url = "http://127.0.0.1:{port}"\nport = {port}'
        )
        # a debounce that a loaded CI machine cannot outrun between the score and the comment
        .replace("prompt_seconds = 0.5", "prompt_seconds = 2")
    )
    server = Process(["serve", "-c", str(config)], tmp_path / "serve.log")
    processes.append(server)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            assert server.handle.poll() is None, server.output()
            return False

    wait_until(ready, what="the server")
    body, headers = webhook("C42", "P1")
    assert httpx.post(f"{base}/hooks/crm", content=body, headers=headers).status_code == 200

    survey = wait_until(
        lambda: [m for m in crm_state.outbox if m["kind"] == "survey"], what="the invitation"
    )[0]
    assert survey["recipient"]["email"] == "ada@example.com"
    with httpx.Client(base_url=base) as browser:
        page = browser.get(survey["options"][6]["url"])  # the "6" button of the email
        assert 'value="6" checked' in page.text
        browser.post(survey["survey_url"], data={"csrf": csrf_of(page.text), "score": "6"})
        followup = browser.get(survey["survey_url"])
        browser.post(survey["survey_url"], data={"csrf": csrf_of(followup.text), "comment": "Too slow 🐢"})

    wait_until(lambda: len(crm_state.batches) == 3, what="the write-back")
    time.sleep(2.5)  # a second sync would show up here
    # one batch per kind of item (batch limits are per object in a CRM), each item once
    assert [len({i["payload"]["kind"] for i in batch}) for batch in crm_state.batches] == [1, 1, 1]
    items = [i for batch in crm_state.batches for i in batch]
    by_kind = {item["payload"]["kind"]: item for item in items}
    response_id = by_kind["timeline_entry"]["payload"]["response_id"]
    assert sorted((i["payload"]["kind"], i["key"], i["record_id"]) for i in items) == [
        ("case_feedback", f"case:{response_id}", "C42"),
        ("person_summary", "summary:1", "P1"),
        ("timeline_entry", f"timeline:{response_id}", "P1"),
    ]
    summary = by_kind["person_summary"]["payload"]
    assert (
        summary["latest_rating"],
        summary["latest_category"],
        summary["latest_comment"],
        summary["count"],
    ) == (
        6,
        "detractor",
        "Too slow 🐢",
        1,
    )
    feedback = by_kind["case_feedback"]["payload"]
    assert (feedback["rating"], feedback["category"], feedback["comment"]) == (6, "detractor", "Too slow 🐢")
    alert = wait_until(lambda: [m for m in crm_state.outbox if m["kind"] == "alert"], what="the alert")[0]
    assert alert["recipient"]["email"] == "owner@example.com"
    assert server.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown
    assert "Traceback" not in server.output()


async def test_a_worker_killed_mid_sync_writes_everything_exactly_once(
    make_hub, database_url, fake_crm, crm_state, tmp_path, processes
) -> None:
    crm_state.people["P4"] = {"id": "P4", "email": "dee@example.com"}
    hub = await make_hub()
    hub.config.policy.min_days_between_surveys = 0
    for i in range(20):
        token = await survey_flow(hub, crm_state, f"C{i}", "P1" if i % 2 else "P4")
        _, page = await hub.engine.page_for_token(token)
        await hub.engine.record_answer(page.invitation_id, i % 11)
    await hub.close()
    expected = 20 * 2 + 2  # a timeline entry and case feedback per answer, one summary per person

    config = tmp_path / "worker.toml"
    config.write_text(
        config_text(database_url, fake_crm.url, sync="lease_seconds = 2")
        .replace("prompt_seconds = 0.5", "prompt_seconds = 0.2")
        .replace(
            'webhook_secret = "env:FAKE_WEBHOOK_SECRET"',
            'webhook_secret = "env:FAKE_WEBHOOK_SECRET"\nbatch_size = 4',
        )
    )
    crm_state.latency = 0.3
    first = Process(["worker", "-c", str(config)], tmp_path / "worker1.log")
    processes.append(first)
    wait_until(lambda: len(crm_state.batches) >= 3, what="the first batches")
    first.stop(signal.SIGKILL)
    written_before_kill = len(crm_state.records)
    assert 0 < written_before_kill < expected, "the kill must land in the middle of the sync"

    second = Process(["worker", "-c", str(config)], tmp_path / "worker2.log")
    processes.append(second)
    wait_until(lambda: len(crm_state.records) == expected, timeout=60, what="every item")
    store = Store(database_url)

    async def states() -> dict[str, int]:
        async with store.session() as s:
            return dict(
                (await s.execute(select(WriteBack.state, func.count()).group_by(WriteBack.state))).all()
            )

    deadline = time.monotonic() + 30
    while (found := await states()) != {"done": expected} and time.monotonic() < deadline:
        time.sleep(0.2)
    await store.dispose()
    assert second.stop() == 0, second.output()
    assert found == {"done": expected}
    # exactly once in the CRM: every record created once; anything sent twice was an update by its key
    assert crm_state.creates == expected
    assert len(crm_state.records) == expected
