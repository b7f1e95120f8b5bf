"""Chaos on PostgreSQL: workers SIGKILLed at random moments, the CRM down for a while, hostile answers.

Real `cxhub worker` processes drain the write-back queue while the test kills and restarts them, shuts the
CRM's server (connections refused) and brings it back on the same port, and keeps recording answers whose
comments are built to break things. At the end the CRM holds every write-back key exactly once, each with
the latest answer's text intact, and the outage (shorter than `sync.max_attempts` with its backoff) made no
dead letter.
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import threading
import time
import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import func, select

from hub.app import Hub
from hub.config import parse_config
from hub.store.tables import Response, WriteBack
from tests.conftest import config_text
from tests.fakes.crm import FakeState, create_app, free_port
from tests.helpers import survey_flow
from tests.test_end_to_end import Process, wait_until

pytestmark = pytest.mark.slow

BATCH_SIZE = 4
#: comments meant to break an encoder, a database, a template or a CRM's parser; each is recorded as given
HOSTILE = [
    # NUL bytes: PostgreSQL text cannot hold them. NOTE: this case needs the core's NUL handling (recording
    # an answer with a NUL in its comment must neither fail nor lose the rest of the text); without that fix
    # record_answer raises "invalid byte sequence for encoding UTF8: 0x00" here, on PostgreSQL.
    "before\x00after \x00\x00 end",
    "Great service 😀🎉👍🏽 — ﷽ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🏳️‍🌈",
    "\u202eRTL override\u202c and \u200fRLM\u200e LRM, עברית, العربية",
    "Robert'); DROP TABLE responses;-- \" OR 1=1 --",
    "<script>alert('x')</script><img src=x onerror=alert(1)> &amp; &lt;b&gt; ]]> <![CDATA[",
    "{{ 7*7 }} ${jndi:ldap://x/a} %s %n {0} \\N \\x00 `rm -rf /`",
    "line\r\nbreaks\ttabs\x0bvertical\x1bescape",
    "long " + "abcdefghij✓" * 930,  # 10 KB and more
]


class RestartableCrm:
    """The fake CRM on a fixed port that can be shut (connections refused) and brought back on that port."""

    def __init__(self, state: FakeState) -> None:
        self.state = state
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        config = uvicorn.Config(
            create_app(self.state),
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        wait_until(lambda: server.started, timeout=10, what="the CRM to start")

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = None

    def refuses(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) != 0


@pytest.fixture
def crm(crm_state: FakeState) -> Iterator[RestartableCrm]:
    server = RestartableCrm(crm_state)
    server.start()
    yield server
    if server._server is not None:
        server.stop()


@pytest.fixture
async def hub(database_url: str, crm: RestartableCrm, tmp_path: Path) -> AsyncIterator[Hub]:
    """The hub of the test process: it sends the invitations and records the answers, as `cxhub serve` does."""
    text = config_text(database_url, crm.url)
    opened = await Hub.open(parse_config(tomllib.loads(text), tmp_path / "cxhub.toml"))
    yield opened
    await opened.close()


@pytest.fixture
def workers() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        if process.handle.poll() is None:
            process.stop(signal.SIGKILL)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    """Poll ``check`` until it is true or ``timeout`` seconds passed; the last answer."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


def _writes_per_key(state: FakeState) -> Counter[str]:
    return Counter(item["key"] for batch in list(state.batches) for item in batch)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_killed_workers_a_crm_outage_and_hostile_answers_leave_each_key_in_the_crm_once(
    database_url, crm, crm_state, hub, tmp_path, workers
) -> None:
    rng = random.Random()
    people = ["P1", "P4", "P5"]
    for person in people[1:]:
        crm_state.people[person] = {"id": person, "email": f"{person.lower()}@example.com"}
    hub.config.policy.min_days_between_surveys = 0
    answers = 24
    invitations = []
    for i in range(answers):
        token = await survey_flow(hub, crm_state, f"C{i}", people[i % len(people)])
        invitations.append((await hub.engine.page_for_token(token))[1].invitation_id)
    pending = list(enumerate(invitations))
    rng.shuffle(pending)
    recorded: list[int] = []

    async def record(count: int) -> None:
        """Answer the next ``count`` invitations, in-process, the way the survey page does."""
        for _ in range(min(count, len(pending))):
            i, invitation = pending.pop()
            comment = HOSTILE[i % len(HOSTILE)]
            await hub.engine.record_answer(invitation, 7 + i % 4, comment=f"#{i} {comment}")
            recorded.append(i)

    config = tmp_path / "worker.toml"
    config.write_text(
        config_text(
            database_url,
            crm.url,
            sync="lease_seconds = 2",
        )
        .replace("max_attempts = 3", "max_attempts = 6")
        .replace("backoff_base_seconds = 0", "backoff_base_seconds = 0.2")
        .replace("backoff_max_seconds = 0", "backoff_max_seconds = 2")
        .replace("prompt_seconds = 0.5", "prompt_seconds = 0.2")
        .replace(
            'webhook_secret = "env:FAKE_WEBHOOK_SECRET"',
            f'webhook_secret = "env:FAKE_WEBHOOK_SECRET"\nbatch_size = {BATCH_SIZE}',
        )
    )
    crm_state.latency = 0.1  # a write takes a moment, so a kill can land in the middle of one
    logs: list[Path] = []

    def start_worker() -> None:
        logs.append(tmp_path / f"worker{len(logs)}.log")
        workers.append(Process(["worker", "-c", str(config)], logs[-1]))

    kills = 0

    def saw_outage(worker: Process) -> bool:
        return "sync.crm_not_reached" in worker.output()

    def kill_one(spare_outage_witness: bool = False) -> None:
        """SIGKILL a random running worker and start another in its place.

        While the CRM is down, the worker that found it down is spared: only it can log the recovery.
        """
        nonlocal kills
        alive = [w for w in workers if w.handle.poll() is None]
        if spare_outage_witness:
            alive = [w for w in alive if not saw_outage(w)]
        if alive:
            rng.choice(alive).stop(signal.SIGKILL)
            kills += 1
        start_worker()

    await record(6)
    start_worker()
    start_worker()
    wait_until(lambda: crm_state.batches, timeout=60, what="the first write")

    # 1. kills at random moments while answers keep arriving
    for _ in range(6):
        await record(2)
        time.sleep(rng.uniform(0.3, 1.5))
        kill_one()

    # 2. the CRM goes away: its port refuses connections while answers arrive and workers try to write
    crm.stop()
    assert crm.refuses()
    await record(4)

    async def refused_writes() -> bool:
        async with hub.store.session() as s:
            found = await s.scalar(select(func.count()).where(WriteBack.last_error.contains("ConnectError")))
        return bool(found)

    assert await eventually(refused_writes, 30), "no worker tried to write while the CRM was down"
    refused_at = time.monotonic()
    time.sleep(2)  # the queue keeps trying, a batch every backoff
    kill_one(spare_outage_witness=True)
    time.sleep(max(0.0, 6 - (time.monotonic() - refused_at)))
    crm.start()  # back, on the same port

    async def recovered() -> bool:
        return any("sync.crm_reached_again" in w.output() for w in workers)

    await eventually(recovered, 20)  # asserted below; first the queue's own state

    # 3. more kills after the outage, then the rest of the answers
    for _ in range(3):
        await record(2)
        time.sleep(rng.uniform(0.3, 1.5))
        kill_one()
    await record(len(pending))
    assert sorted(recorded) == list(range(answers))
    # a timeline entry and case feedback per answer, a summary per person
    expected = answers * 2 + len(people)

    async def states() -> dict[str, int]:
        async with hub.store.session() as s:
            rows = await s.execute(select(WriteBack.state, func.count()).group_by(WriteBack.state))
            return dict(rows.all())

    async def settled() -> bool:
        found = await states()
        assert "dead" not in found, f"the outage made dead letters: {found}"
        return found == {"done": expected}

    await eventually(settled, 60)
    assert await states() == {"done": expected}
    async with hub.store.session() as s:
        charged = await s.scalar(select(func.max(WriteBack.attempts)))
    # a refused connection sent nothing and is no attempt; at most one write cut off as the CRM stopped is
    assert charged is not None and charged <= 1, f"the outage used up {charged} attempts of an item"
    for worker in workers:
        if worker.handle.poll() is None:  # a clean stop, once it got as far as installing its handlers
            wait_until(lambda w=worker: "worker running" in w.output(), what="the last worker to start")
            assert worker.stop() == 0, worker.output()
    worker_logs = "".join(log.read_text(errors="replace") for log in logs)
    assert "sync.connector_failed" not in worker_logs  # the outage was no crash
    assert await recovered(), "the worker that found the CRM down did not log that it was back"

    # the CRM holds every key once: each was created once; a key sent again (a batch whose worker was killed
    # after the CRM took it) was an update by the same key, never a second record
    assert len(crm_state.records) == expected and crm_state.creates == expected
    writes = _writes_per_key(crm_state)
    assert set(writes) == set(crm_state.records)
    resent = sum(n - 1 for key, n in writes.items() if not key.startswith("summary:"))
    assert resent <= (kills + 1) * BATCH_SIZE, f"{resent} answers sent again after {kills} kills"

    # every answer arrived with its text as the hub stored it, hostile or not
    async with hub.store.session() as s:
        stored = {r.id: r for r in await s.scalars(select(Response))}
    assert len(stored) == answers
    for response in stored.values():
        index = int(response.comment.split(" ", 1)[0][1:])
        given = f"#{index} {HOSTILE[index % len(HOSTILE)]}"
        # NUL bytes aside (PostgreSQL text cannot hold them), every character arrives as the customer typed it
        assert response.comment.replace("\x00", "") == given.replace("\x00", ""), f"answer #{index} changed"
        for key in (f"timeline:{response.id}", f"case:{response.id}"):
            assert crm_state.records[key]["payload"]["comment"] == response.comment, key
    for person in crm_state.records.values():
        if person["payload"]["kind"] == "person_summary":
            assert person["payload"]["count"] == answers // len(people)
