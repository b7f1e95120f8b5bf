"""Scale-out: two `cxhub serve` and two `cxhub worker` processes on one PostgreSQL database, under fire.

2,000 answers: most are given to the engine in bulk (the surveys they answer were sent before the test), the
rest go the whole way (signed webhooks into either server, invitations, survey pages answered on either
server). Meanwhile workers are killed with SIGKILL at random moments and restarted, and PostgreSQL is
restarted once. At the end:

* every answer is in the CRM once (one record per idempotency key; a key written again after a kill carries
  the same content), and every person's summary holds all of that person's answers;
* every webhook the hub answered 2xx is in the events table;
* no scheduled job ran in two processes at the same time (from the processes' own job logs).

PostgreSQL runs as a private cluster of the test's own, on a free port, so restarting it disturbs nothing else.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from hub.app import Hub
from hub.config import parse_config
from hub.models import PersonRecord
from hub.people import upsert_person
from hub.store.tables import Event, Invitation, Response, WriteBack
from tests.conftest import config_text
from tests.fakes.crm import free_port
from tests.helpers import case_event, csrf_of, webhook
from tests.test_end_to_end import Process, wait_until

pytestmark = pytest.mark.slow

ANSWERS = 2000
THROUGH_HTTP = 100  # of the answers, the ones that go the whole way: webhook, invitation, survey page
PEOPLE = 40
BATCH_SIZE = 50
LEASE_SECONDS = 5  # a killed worker's items and job locks are free again after this long

JOB_LINE = re.compile(
    r"^(\S+) \[debug\s*\] job\.(started|finished)\s.*?job=(\S+).*?owner=(\S+)", re.MULTILINE
)


# --- a private PostgreSQL cluster -------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """The newest server installed from Debian's packages (``/usr/lib/postgresql/<major>/bin``)."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")]
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, default=None)


class PrivatePostgres:
    """``initdb`` + ``pg_ctl`` in a temporary folder, on a free port, as the ``postgres`` user when run as root
    (initdb refuses root). Trust authentication on 127.0.0.1 only; fsync off, as nothing here must survive."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="cxhub-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, tool: str, *args: str) -> None:
        command = [*self.as_user, str(self.bindir / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}"

    def _pg_ctl(self, action: str, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "server.log")
        self._run("pg_ctl", action, "-D", str(self.data), "-l", log, "-w", "-t", "60", "-o", options, *args)

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        self._pg_ctl("start")

    def restart(self) -> None:
        """A fast restart: every open connection of every process is cut, as an admin's restart does."""
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [*self.as_user, str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate"],
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    bindir = postgres_bin()
    problem = None
    if bindir is None:
        problem = "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (apt install postgresql)"
    elif os.geteuid() == 0 and shutil.which("runuser") is None:
        problem = "running as root, and runuser (util-linux) is missing to run initdb as postgres"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(f"{problem}; CI is not set")
    assert bindir is not None
    server = PrivatePostgres(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# --- the hub's processes ------------------------------------------------------------------------------------------


class Fleet:
    """Two servers and two workers; workers are killed and replaced, their logs kept for the job check."""

    def __init__(self, config: Path, logs: Path) -> None:
        self.config = config
        self.logs = logs
        self.ports = [free_port(), free_port()]
        self.servers = [self._start("serve", "--port", str(port)) for port in self.ports]
        self.workers = [self._start("worker"), self._start("worker")]
        self.all = [*self.servers, *self.workers]
        self.killed: dict[str, datetime] = {}  # owner -> when it was killed
        self.kills = 0

    def _start(self, *args: str) -> Process:
        index = len(list(self.logs.glob("*.log")))
        return Process([args[0], "-c", str(self.config), *args[1:]], self.logs / f"{index:02d}-{args[0]}.log")

    def base(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i % 2]}"

    def ready(self) -> None:
        for i, server in enumerate(self.servers):

            def up(i: int = i, server: Process = server) -> bool:
                assert server.handle.poll() is None, server.output()
                try:
                    return httpx.get(f"{self.base(i)}/readyz", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(up, timeout=60, what="a server")

    def kill_a_worker(self, rng: random.Random) -> None:
        i = rng.randrange(len(self.workers))
        victim = self.workers[i]
        victim.handle.send_signal(signal.SIGKILL)
        victim.handle.wait(timeout=20)
        self.killed[f"{os.uname().nodename}:{victim.handle.pid}"] = datetime.now(UTC)
        self.kills += 1
        self.workers[i] = self._start("worker")
        self.all.append(self.workers[i])

    def stop(self) -> list[int | None]:
        """SIGTERM to every live process, as a deploy would; their exit codes."""
        live = [p for p in self.all if p.handle.poll() is None]
        for process in live:
            process.handle.send_signal(signal.SIGTERM)
        return [p.handle.wait(timeout=60) for p in live]

    def kill_all(self) -> None:
        for process in self.all:
            if process.handle.poll() is None:
                process.handle.kill()
                process.handle.wait(timeout=20)

    def job_runs(self) -> dict[str, list[tuple[datetime, datetime, str]]]:
        """Per job (lock name): (start, end, process) from the logs; a run cut by SIGKILL ends at the kill."""
        runs: dict[str, list[tuple[datetime, datetime, str]]] = defaultdict(list)
        for process in self.all:
            open_runs: dict[str, datetime] = {}
            for stamp, what, job, owner in JOB_LINE.findall(process.output()):
                when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
                if what == "started":
                    assert job not in open_runs, f"{job} started twice in {owner} without finishing"
                    open_runs[job] = when
                else:
                    runs[job].append((open_runs.pop(job), when, owner))
            for job, started in open_runs.items():
                owner = f"{os.uname().nodename}:{process.handle.pid}"
                runs[job].append((started, self.killed.get(owner, datetime.now(UTC)), owner))
        return runs


# --- the test -----------------------------------------------------------------------------------------------------


def hub_config(tmp_path: Path, database_url: str, crm_url: str) -> Path:
    text = (
        config_text(database_url, crm_url, sync=f"lease_seconds = {LEASE_SECONDS}")
        .replace("[hub]\n", '[hub]\nlog_level = "debug"\n', 1)
        .replace("min_days_between_surveys = 30", "min_days_between_surveys = 0")
        .replace('alerts = [{ when = "detractor", channel = "mail", to = "owner" }]\n', "")
        .replace(
            'webhook_secret = "env:FAKE_WEBHOOK_SECRET"',
            f'webhook_secret = "env:FAKE_WEBHOOK_SECRET"\nbatch_size = {BATCH_SIZE}',
        )
    )
    path = tmp_path / "cxhub.toml"
    path.write_text(text)
    return path


async def create_database(server: PrivatePostgres) -> str:
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/postgres", timeout=10)
    try:
        await conn.execute("CREATE DATABASE cxhub")
    finally:
        await conn.close()
    return server.url("cxhub")


async def seed_sent_surveys(hub: Hub, count: int) -> list[int]:
    """The state after the hub sent ``count`` surveys: people, processed case events, sent invitations."""
    now = datetime.now(UTC)
    async with hub.store.session() as s:
        people = []
        for i in range(PEOPLE):
            record = PersonRecord(crm_id=f"Q{i}", email=f"q{i}@example.com")
            person, _ = await s.run_sync(upsert_person, "crm", record)
            people.append(person.id)
        events = [
            Event(
                connector="crm",
                event_id=f"case:S{i}:closed",
                event_type="case.closed",
                record_id=f"S{i}",
                source="webhook",
                payload=case_event(f"S{i}", f"Q{i % PEOPLE}").model_dump(mode="json"),
                received_at=now,
                processed_at=now,
            )
            for i in range(count)
        ]
        s.add_all(events)
        await s.flush()
        invitations = [
            Invitation(
                campaign="case_closed",
                event_pk=event.id,
                person_id=people[i % PEOPLE],
                status="sent",
                channel="mail",
                sent_at=now,
                expires_at=now + timedelta(days=30),
            )
            for i, event in enumerate(events)
        ]
        s.add_all(invitations)
        await s.flush()
        return [inv.id for inv in invitations]


async def retrying(what: str, attempt: Any, timeout: float = 90) -> Any:
    """Retry while the database restarts, as a client of a real hub would."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await attempt()
        except (SQLAlchemyError, OSError, httpx.TransportError, AssertionError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} kept failing: {exc!r}") from exc
            await asyncio.sleep(0.2)


async def send_webhooks(fleet: Fleet, count: int, answered: list[str]) -> None:
    """Signed webhooks into either server, one at a time, each resent until the hub answers 2xx."""
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(count):
            body, headers = webhook(f"W{i}", f"Q{i % PEOPLE}")

            async def post(i: int = i, body: bytes = body, headers: dict[str, str] = headers) -> None:
                reply = await client.post(f"{fleet.base(i)}/hooks/crm", content=body, headers=headers)
                assert reply.is_success, reply.text

            await retrying(f"webhook {i}", post)
            answered.append(f"case:W{i}:closed")
            await asyncio.sleep(0.05)


async def answer_on_page(fleet: Fleet, i: int, survey_url: str, score: int) -> None:
    """A customer's browser: open the link on either server, POST the score with the page's CSRF token."""
    path = survey_url.split("/s/", 1)[1]
    url = f"{fleet.base(i)}/s/{path}"

    async def once() -> None:
        # a fresh browser per attempt; behind a proxy each customer has an address of their own
        headers = {"x-forwarded-for": f"10.0.{i // 250}.{i % 250 + 1}"}
        async with httpx.AsyncClient(timeout=30, headers=headers) as browser:
            page = await browser.get(url)
            assert page.status_code == 200, page.text
            done = await browser.post(url, data={"csrf": csrf_of(page.text), "score": str(score)})
            assert done.status_code == 303, done.text

    await retrying(f"survey {i}", once)


async def chaos(fleet: Fleet, rng: random.Random, stop: asyncio.Event, crm_state: Any) -> None:
    """Kill a worker with SIGKILL soon after the CRM sees its first batch, then every few seconds, starting a
    new one each time, until told to stop.

    The first kill waits for the write-back to be under way (a kill before it tests only a restart) and no
    longer (the whole run takes about ten seconds: a fixed first delay may come after the queue drained).
    Later kills not more often: a new process spends seconds of CPU importing, on a machine of two cores."""
    while not crm_state.batches and not stop.is_set():
        await asyncio.sleep(0.05)
    delay = rng.uniform(0, 1)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            await asyncio.to_thread(fleet.kill_a_worker, rng)
        delay = rng.uniform(4, 10)


@pytest.fixture
async def opened_hub(private_postgres: PrivatePostgres, fake_crm: Any, tmp_path: Path) -> AsyncIterator[Hub]:
    url = await create_database(private_postgres)
    path = hub_config(tmp_path, url, fake_crm.url)
    hub = await Hub.open(parse_config(tomllib.loads(path.read_text()), path))
    try:
        yield hub
    finally:
        await hub.close()


async def test_two_servers_and_two_workers_survive_kills_and_a_database_restart(
    opened_hub: Hub, private_postgres: PrivatePostgres, crm_state: Any, tmp_path: Path
) -> None:
    hub = opened_hub
    for i in range(PEOPLE):
        crm_state.people[f"Q{i}"] = {"id": f"Q{i}", "email": f"q{i}@example.com"}
    seeded = await seed_sent_surveys(hub, ANSWERS - THROUGH_HTTP)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(tmp_path / "cxhub.toml", logs)
    stop_chaos = asyncio.Event()
    try:
        await asyncio.to_thread(fleet.ready)
        killer = asyncio.create_task(chaos(fleet, rng, stop_chaos, crm_state))
        answered_2xx: list[str] = []
        hooks = asyncio.create_task(send_webhooks(fleet, THROUGH_HTTP, answered_2xx))

        # answers given to the engine while workers sync, die and come back
        gate = asyncio.Semaphore(4)

        async def record(inv_id: int) -> None:
            async with gate:
                await retrying(f"answer {inv_id}", lambda: hub.engine.record_answer(inv_id, inv_id % 11))

        half = len(seeded) // 2
        await asyncio.gather(*(record(i) for i in seeded[:half]))
        restart = asyncio.create_task(asyncio.to_thread(private_postgres.restart))
        await asyncio.gather(*(record(i) for i in seeded[half:]))
        await restart
        await hooks

        # the webhooks' surveys, sent by whichever process ran the jobs, answered on either server
        def surveys() -> dict[int, str]:
            sent = {
                m["invitation_id"]: m["survey_url"] for m in crm_state.outbox if m.get("kind") == "survey"
            }
            return sent if len(sent) >= THROUGH_HTTP else {}

        sent = await asyncio.to_thread(wait_until, surveys, 120, "the webhooks' surveys")
        gate = asyncio.Semaphore(4)

        async def answer(i: int, url: str) -> None:
            async with gate:
                await answer_on_page(fleet, i, url, i % 11)

        await asyncio.gather(*(answer(i, url) for i, url in enumerate(sent.values())))

        async def drained() -> bool:
            async with hub.store.session() as s:
                states = dict(
                    (await s.execute(select(WriteBack.state, func.count()).group_by(WriteBack.state))).all()
                )
            return set(states) == {"done"}

        deadline = time.monotonic() + 120
        while not await retrying("the queue", drained):
            assert time.monotonic() < deadline, f"the queue did not drain (seed {seed})"
            await asyncio.sleep(0.5)
        stop_chaos.set()
        await killer
        codes = await asyncio.to_thread(fleet.stop)
    except BaseException:
        stop_chaos.set()
        fleet.kill_all()
        raise
    assert fleet.kills > 0
    assert all(code in (0, -signal.SIGTERM) for code in codes), codes  # uvicorn re-raises SIGTERM

    async with hub.store.session() as s:
        responses = (await s.execute(select(Response.id, Response.person_id))).all()
        stored_events = set(await s.scalars(select(Event.event_id).where(Event.event_id.like("case:W%"))))
    assert len(responses) == ANSWERS

    # every webhook answered 2xx is stored
    assert set(answered_2xx) <= stored_events

    # every answer is in the CRM once, and nothing else is
    per_person = Counter(person for _, person in responses)
    expected = {f"{kind}:{rid}" for rid, _ in responses for kind in ("timeline", "case")}
    expected |= {f"summary:{person}" for person in per_person}
    assert set(crm_state.records) == expected
    assert crm_state.creates == len(expected)
    writes = [item for batch in crm_state.batches for item in batch]
    again = Counter(item["key"] for item in writes if not item["key"].startswith("summary:"))
    for item in writes:  # a key written again after a kill or a restart is the same record, unchanged
        if not item["key"].startswith("summary:"):
            assert item["payload"] == crm_state.records[item["key"]]["payload"]
    # at-least-once, not at-least-twice: only batches cut by a kill or the restart are written again
    rewritten = sum(n - 1 for n in again.values())
    assert rewritten <= (fleet.kills + len(fleet.all)) * BATCH_SIZE, rewritten
    # every person's summary, written last, holds all of that person's answers
    for person, count in per_person.items():
        assert crm_state.records[f"summary:{person}"]["payload"]["count"] == count

    # no job ran in two processes at once
    runs = fleet.job_runs()
    assert "job:sync:crm" in runs and "job:events" in runs, "the processes log their jobs"
    for job, intervals in runs.items():
        intervals.sort()
        latest_end, holder = intervals[0][1], intervals[0][2]
        for start, end, owner in intervals[1:]:
            assert start >= latest_end, f"{job} ran in {holder} and {owner} at once"
            if end > latest_end:
                latest_end, holder = end, owner


# --- the job lock, on its own ------------------------------------------------------------------------------------


async def test_a_job_already_running_in_this_process_is_not_started_again(make_hub: Any) -> None:
    """The cron sync and the prompt sync share one lock; a second start in the same process must wait its
    turn, or the first one's end would release the lock while the second still runs."""
    hub = await make_hub()
    running = asyncio.Event()
    finish = asyncio.Event()
    runs: list[str] = []

    async def job(name: str) -> str:
        runs.append(name)
        running.set()
        await finish.wait()
        return name

    first = asyncio.create_task(hub.singleton("job:sync:crm", lambda: job("first")))
    await running.wait()
    assert await hub.singleton("job:sync:crm", lambda: job("second")) is None
    finish.set()
    assert await first == "first"
    assert runs == ["first"]
    assert await hub.singleton("job:sync:crm", lambda: job("third")) == "third"  # free again once done


async def test_a_job_keeps_its_lock_through_a_database_hiccup(make_hub: Any) -> None:
    """A renewal that fails (the database restarting) must not end the renewals: the lock would run out while
    the job still runs, and another process would start the same job."""
    hub = await make_hub(sync="lease_seconds = 0.6")
    store = hub.store
    renew = store.acquire_lock
    calls = 0

    async def flaky(name: str, owner: str, ttl: float) -> bool:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first renewal
            raise OSError("connection refused")
        return await renew(name, owner, ttl)

    store.acquire_lock = flaky  # type: ignore[method-assign]
    taken_by_other: list[bool] = []

    async def job() -> None:
        await asyncio.sleep(1.5)  # more than two leases
        taken_by_other.append(await renew("job:sync:crm", "another-process", 0.6))

    await hub.singleton("job:sync:crm", job)
    assert calls > 2, "the renewals stopped after the failed one"
    assert taken_by_other == [False]
