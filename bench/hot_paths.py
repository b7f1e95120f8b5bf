"""The hub's hot paths beside what the same server, driver and database do bare, on SQLite and PostgreSQL.

Three paths, each measured under the same load as its anchor, each server a real uvicorn in a child process on
127.0.0.1 (the anchor's and the hub's run side by side, and are measured one after the other):

- ``POST /hooks/crm``: a signed webhook of the fake CRM (``tests/fakes``), one new case per request, against a
  bare endpoint that stores the body with one raw INSERT per request on the same driver (one aiosqlite
  connection in WAL mode, as the hub's pragmas; an asyncpg pool);
- ``GET /s/<token>``: the survey page of a sent invitation, against a bare GET returning a line of HTML;
- ``POST /s/<token>``: an answer with its CSRF cookie and field (a first answer, then changed ratings once
  every token is answered), against a bare POST that reads the form and redirects.

The hub runs as ``cxhub serve`` does (scheduler included), so events are processed and answers written back
to the fake CRM (a third child) while the load runs, as in production. The load comes from this process: a
bounded pool of ``--concurrency`` workers (one keep-alive connection each, h11) for ``--seconds`` per path, after a one-second warm-up.
Survey requests carry one X-Forwarded-For address per token (the hub trusts 127.0.0.1 as its proxy), as
customers come from their own addresses and the hub's per-client limits would otherwise refuse a benchmark.

Each path is measured on the anchor and right after on the hub, ``--rounds`` times (3): page, answer, then
webhooks, waiting before the webhooks and after each round until the hub has written back every answer and
processed every event (so no path's aftermath runs under another measurement). A shared machine's speed drifts
by a third within minutes; measured back to back, an anchor and the hub meet the same drift, and the table shows
the round of the median ratio with every round's ratio beside it.

Checks: every acknowledged webhook is stored as an event, every acknowledged answer as a response, every
acknowledged anchor insert as a row; a shortfall is printed and makes the exit status 1.

Freshness (answer -> CRM), on the same hub with its default settings before the load runs: ``--fresh-answers``
people (200) each answer their survey as a browser does (the page, a POST of the score with its CSRF cookie and
field, the follow-up page it redirects to), one every ``1 / --fresh-rate`` seconds (5 a second) whatever the
hub's response times. Each gives a score alone, the slow case: the hub waits for a follow-up comment before it
writes (``sync.prompt_seconds``). The fake CRM (``--crm-latency`` per call, as a real one's round trip) stamps
every write as it arrives; the latency of an answer is from its POST to the arrival of the last of its three
write-backs (timeline entry, case feedback, the person's summary), p50 / p95 / max, and each must arrive exactly
once with the posted score (a missing or repeated one is a problem, exit status 1). Target: p95 at most 5 s.

Dispatch (events -> invitations at the mail catcher), last: ``bench/dispatch_rate.py`` runs a hub of its own per
database on a fresh database, with a CRM at 50 ms a call and the email channel to a local SMTP catcher, once
with the default concurrency bounds (``--dispatch-events``, 1,000) and once one at a time as the baseline in
the same run; every invitation must reach the catcher exactly once. Target: at least 50 a second.

    uv run --frozen --all-packages python bench/hot_paths.py                 # 10 s, 32 workers, both databases
    uv run --frozen --all-packages python bench/hot_paths.py --seconds 3 --concurrency 8 --databases sqlite
    uv run --frozen --all-packages python bench/hot_paths.py --sections freshness --fresh-answers 50

PostgreSQL is reached as the tests reach it (``CXHUB_TEST_POSTGRES_URL``, default postgres@127.0.0.1:5432),
in a fresh database dropped afterwards. Timings depend on the machine and on what else runs on it: compare
the ratios of one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the fake CRM and its plugin live in tests/fakes

import aiosqlite  # noqa: E402
import asyncpg  # noqa: E402
import dispatch_rate  # noqa: E402  # bench/ is the script's folder, on the path
import h11  # noqa: E402
import httpx  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from hub.app import Hub  # noqa: E402
from hub.engine import hash_token  # noqa: E402
from hub.models import PersonRecord  # noqa: E402
from hub.people import upsert_person  # noqa: E402
from hub.store.tables import Event, Invitation  # noqa: E402
from hub.testing.databases import fresh_database  # noqa: E402
from hub.web.protection import CSRF_COOKIE, csrf_token  # noqa: E402
from tests.fakes.crm import TOKEN, sign  # noqa: E402

WEBHOOK_SECRET = "bench-webhook-secret"
SECRET_KEY = "bench-csrf-key-0123456789abcdef0123456789"
ENV = {"BENCH_CRM_TOKEN": TOKEN, "BENCH_WEBHOOK_SECRET": WEBHOOK_SECRET, "BENCH_SECRET_KEY": SECRET_KEY}
ANCHOR_TABLE = "bench_anchor_hooks"
CAMPAIGN = "case_closed"


# --- the servers ------------------------------------------------------------------------------------------


def hub_config(database_url: str, crm_url: str) -> str:
    """``cxhub.toml`` of the measured hub: the fake CRM, its channel, one NPS campaign, defaults elsewhere."""
    return f"""
[hub]
public_url = "http://127.0.0.1:8000"
database_url = "{database_url}"
plugins = []
plugin_modules = ["tests.fakes.plugin"]
secret_key = "env:BENCH_SECRET_KEY"
trusted_proxies = ["127.0.0.1"]

[connectors.crm]
plugin = "fakecrm"
base_url = "{crm_url}"
token = "env:BENCH_CRM_TOKEN"
webhook_secret = "env:BENCH_WEBHOOK_SECRET"
poll_interval_seconds = 0

[channels.mail]
plugin = "fakechannel"
base_url = "{crm_url}"

[surveys.nps]
kind = "nps"

[campaigns.{CAMPAIGN}]
trigger = {{ connector = "crm", event = "case.closed" }}
survey = "nps"
channels = ["mail"]
"""


def anchor_app(database_url: str) -> Any:
    """The bare endpoints: one raw INSERT per webhook on the hub's driver, a line of HTML, a form read."""
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if database_url.startswith("sqlite"):
            db = await aiosqlite.connect(database_url.split(":///", 1)[1])
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
                await db.execute(f"PRAGMA {pragma}")
            await db.execute(f"CREATE TABLE IF NOT EXISTS {ANCHOR_TABLE} (id INTEGER PRIMARY KEY, body BLOB)")
            await db.commit()

            async def insert(body: bytes) -> None:
                await db.execute(f"INSERT INTO {ANCHOR_TABLE} (body) VALUES (?)", (body,))
                await db.commit()

            state["insert"] = insert
            yield
            await db.close()
            return
        pool = await asyncpg.create_pool(database_url.replace("postgresql+asyncpg://", "postgresql://"))
        await pool.execute(
            f"CREATE TABLE IF NOT EXISTS {ANCHOR_TABLE} (id BIGSERIAL PRIMARY KEY, body BYTEA)"
        )

        async def insert_pg(body: bytes) -> None:
            await pool.execute(f"INSERT INTO {ANCHOR_TABLE} (body) VALUES ($1)", body)

        state["insert"] = insert_pg
        yield
        await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/hooks/anchor")
    async def hook(request: Request) -> JSONResponse:
        await state["insert"](await request.body())
        return JSONResponse({"ok": True})

    @app.get("/s/{token}")
    async def page(token: str) -> HTMLResponse:
        return HTMLResponse("<!doctype html><title>Survey</title><p>How likely are you to recommend us?</p>")

    @app.post("/s/{token}")
    async def answer(token: str, request: Request) -> RedirectResponse:
        await request.form()
        return RedirectResponse(f"/s/{token}/thanks", status_code=303)

    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: url -> process id of the servers ``child`` started, so their CPU time can be read
SERVERS: dict[str, int] = {}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@contextmanager
def child(args: list[str], port: int, log: Path, root: Path = ROOT) -> Iterator[str]:
    """Start a server in a child process, wait until it answers, stop it with SIGTERM afterwards. ``root`` is
    the checkout whose packages it imports first (``compare_hubs.py`` starts an older one beside this)."""
    env = {**os.environ, **ENV, "PYTHONPATH": str(root)}
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{' '.join(args[:4])} exited with {proc.returncode}; see {log}")
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{' '.join(args[:4])} did not answer in 60 s; see {log}") from None
                time.sleep(0.2)
        SERVERS[url] = proc.pid
        yield url
    finally:
        SERVERS.pop(url, None)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve_child(kind: str, port: int, database_url: str) -> None:
    """Child mode: serve the anchor app or the fake CRM on ``port`` until SIGTERM."""
    import uvicorn

    if kind == "anchor":
        # uvicorn as it runs by default, access log included: the hub writes an access line per request too
        # (``hub.access_log``, on by default), so the anchor pays for the same server's same work
        uvicorn.run(anchor_app(database_url), host="127.0.0.1", port=port)
    else:  # the fake CRM, quiet: it is not measured
        app = timed_crm(float(os.environ.get("BENCH_CRM_LATENCY", "0")))
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class TimedBatches(list[list[dict[str, Any]]]):
    """The fake CRM's record of write batches, each stamped (wall clock) as the CRM stores it."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[float, list[dict[str, Any]]]] = []

    def append(self, items: list[dict[str, Any]]) -> None:
        self.arrivals.append((time.time(), items))
        super().append(items)


def timed_crm(latency: float) -> Any:
    """The fake CRM, each call taking ``latency`` seconds, with ``GET /bench/arrivals``: every write as
    (arrival time, key, person's record, kind, rating)."""
    from tests.fakes.crm import FakeState, create_app

    batches = TimedBatches()
    app = create_app(FakeState(batches=batches, latency=latency))

    @app.get("/bench/arrivals")
    async def arrivals() -> list[tuple[float, str, str, str, int | None]]:
        return [
            (at, item["key"], item["person_record_id"], item["key"].split(":", 1)[0], _rating(item))
            for at, items in batches.arrivals
            for item in items
        ]

    return app


def _rating(item: dict[str, Any]) -> int | None:
    payload = item.get("payload") or {}
    rating = payload.get("rating", payload.get("latest_rating"))
    return int(rating) if rating is not None else None


# --- the load ---------------------------------------------------------------------------------------------


@dataclass
class Load:
    """What one path did under load: answered requests, their latencies, and what went wrong."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failed: Counter[str] = field(default_factory=Counter)
    #: CPU seconds the server process spent (all its threads) while the measured run lasted
    server_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        """The server's CPU milliseconds per answered request: what the path costs, whatever else runs on
        the machine (throughput ratios move with the machine's other load; this moves far less)."""
        return self.server_cpu * 1000 / len(self.latencies) if self.latencies else float("nan")

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


#: one request: method, path, headers, body
Outgoing = tuple[str, str, dict[str, str], bytes | None]


class Connection:
    """One keep-alive HTTP/1.1 connection, parsed with h11 (httpx's parser) without httpx's layers.

    httpx itself tops out near the bare endpoints' rate on a small machine, so it would measure itself; this
    client costs a fraction of that, leaving the server the CPU the measurement is about.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.h11 = h11.Connection(h11.CLIENT)

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> int:
        """Send one request and read its whole answer; returns the status code."""
        if self.streams is None or self.h11.our_state is not h11.IDLE:
            await self.close()
            self.streams = await asyncio.open_connection(self.host, self.port)
            self.h11 = h11.Connection(h11.CLIENT)
        reader, writer = self.streams
        fields = [("host", f"{self.host}:{self.port}"), *headers.items()]
        fields.append(("content-length", str(len(body or b""))))
        data = self.h11.send(h11.Request(method=method, target=path, headers=fields)) or b""
        if body:
            data += self.h11.send(h11.Data(data=body)) or b""
        writer.write(data + (self.h11.send(h11.EndOfMessage()) or b""))
        status = 0
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                chunk = await reader.read(65536)
                self.h11.receive_data(chunk)
                if not chunk and self.h11.their_state is not h11.DONE:
                    raise ConnectionError("the server closed the connection")
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                break
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        return status

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def drive(
    url: str,
    make: Callable[[int], Outgoing],
    ok: Callable[[int, int], bool],
    seconds: float,
    concurrency: int,
    numbers: Iterator[int],
) -> Load:
    """``concurrency`` workers, one connection each, sending ``make(i)`` for ``seconds``; ``ok(i, status)``
    says whether an answer counts."""
    load = Load()
    host, port = url.removeprefix("http://").split(":")
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        connection = Connection(host, int(port))
        try:
            while time.perf_counter() < deadline:
                i = next(numbers)
                method, path, headers, body = make(i)
                sent = time.perf_counter()
                try:
                    status = await connection.request(method, path, headers, body)
                except (OSError, h11.ProtocolError) as exc:
                    load.failed[type(exc).__name__] += 1
                    await connection.close()
                    continue
                if ok(i, status):
                    load.latencies.append(time.perf_counter() - sent)
                else:
                    load.failed[str(status)] += 1
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    load.seconds = time.perf_counter() - start
    return load


async def measure(
    url: str, make: Callable[[int], Outgoing], ok: Callable[[int, int], bool], args: Any
) -> Load:
    """A one-second warm-up (answers checked, not timed), then the measured run."""
    numbers = itertools.count()
    await drive(url, make, ok, 1.0, args.concurrency, numbers)
    pid = SERVERS.get(url)
    before = cpu_seconds(pid) if pid else 0.0
    load = await drive(url, make, ok, args.seconds, args.concurrency, numbers)
    load.server_cpu = cpu_seconds(pid) - before if pid else float("nan")
    return load


def address(k: int) -> str:
    return f"10.{(k >> 16) & 255}.{(k >> 8) & 255}.{k & 255}"


@dataclass
class Paths:
    """The requests of the three paths, and what each acknowledged (for the checks)."""

    hook_path: str
    #: the links answered by the answer path
    tokens: list[str]
    tag: str
    #: the links opened by the page path, never answered: every round measures the page a fresh link shows
    #: (an answered link shows the follow-up question instead, another page); the answers' links if empty
    page_tokens: list[str] = field(default_factory=list)
    acked_events: set[str] = field(default_factory=set)
    acked_tokens: set[int] = field(default_factory=set)

    def webhook(self, i: int) -> Outgoing:
        body = json.dumps({"id": f"{self.tag}-{i}", "person_id": f"nobody-{i}"}).encode()
        headers = {"content-type": "application/json", "x-fake-signature": sign(WEBHOOK_SECRET, body)}
        return "POST", self.hook_path, headers, body

    def webhook_ok(self, i: int, status: int) -> bool:
        if 200 <= status < 300:
            self.acked_events.add(f"case:{self.tag}-{i}:closed")
            return True
        return False

    def page(self, i: int) -> Outgoing:
        tokens = self.page_tokens or self.tokens
        k = i % len(tokens)
        return "GET", f"/s/{tokens[k]}", {"x-forwarded-for": address(k)}, None

    def answer(self, i: int) -> Outgoing:
        k, round_ = i % len(self.tokens), i // len(self.tokens)
        token = self.tokens[k]
        cookie = f"bench-{k}"
        form = f"score={(k + round_) % 11}&csrf={csrf_token(SECRET_KEY, cookie, hash_token(token))}"
        headers = {
            "content-type": "application/x-www-form-urlencoded",
            "cookie": f"{CSRF_COOKIE}={cookie}",
            "x-forwarded-for": address(k),
        }
        return "POST", f"/s/{token}", headers, form.encode()

    def answer_ok(self, i: int, status: int) -> bool:
        if status == 303:
            self.acked_tokens.add(i % len(self.tokens))
            return True
        return False


def page_ok(_i: int, status: int) -> bool:
    return status == 200


# --- the hub's data and the checks ------------------------------------------------------------------------


async def seed_tokens(config_path: Path, count: int, prefix: str = "S") -> list[str]:
    """``count`` sent invitations, one person each (CRM ids ``<prefix><k>``), with the survey tokens their
    messages would carry."""
    hub = await Hub.open(config_path)
    try:
        now = hub.now()
        tokens = []
        async with hub.store.session() as s:
            for k in range(count):
                record = PersonRecord(
                    crm_id=f"{prefix}{k}", email=f"{prefix.lower()}{k}@example.com", first_name=f"Bench {k}"
                )
                person, _identity = await s.run_sync(upsert_person, "crm", record)
                event = Event(
                    connector="crm",
                    event_id=f"case:{prefix}seed-{k}:closed",
                    event_type="case.closed",
                    record_id=f"{prefix}seed-{k}",
                    source="poll",
                    payload={
                        "event_id": f"case:{prefix}seed-{k}:closed",
                        "event_type": "case.closed",
                        "occurred_at": now.isoformat(),
                        "record_type": "case",
                        "record_id": f"{prefix}seed-{k}",
                        "person_id": f"{prefix}{k}",
                    },
                    received_at=now,
                    processed_at=now,
                )
                s.add(event)
                await s.flush()
                inv = Invitation(
                    campaign=CAMPAIGN,
                    event_pk=event.id,
                    person_id=person.id,
                    status="sent",
                    channel="mail",
                    language="en",
                    sent_at=now,
                    expires_at=now + timedelta(days=30),
                    created_at=now,
                    updated_at=now,
                )
                s.add(inv)
                await s.flush()
                tokens.append(hub.engine.issue_token(s, inv.id, "survey", now + timedelta(days=30)))
        return tokens
    finally:
        await hub.close()


async def analyze(database_url: str) -> None:
    """The planner's statistics of the seeded tables, as autovacuum gathers them a minute or so after a bulk
    load. Measured right after the seeding, PostgreSQL would still plan the hub's reads of a few dozen rows
    by key as scans of whole tables (it believed them nearly empty), several times slower than in any
    database that has been running for a while."""
    engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text("ANALYZE"))
    finally:
        await engine.dispose()


async def scalar(database_url: str, sql: str, **params: Any) -> Any:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar()
    finally:
        await engine.dispose()


async def stored_event_ids(database_url: str, tag: str) -> set[str]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT event_id FROM events WHERE connector = 'crm' AND event_id LIKE :p"),
                {"p": f"case:{tag}-%"},
            )
            return {row[0] for row in rows}
    finally:
        await engine.dispose()


async def answered_tokens(database_url: str, tokens: list[str], acked: set[int]) -> int:
    """How many of the acknowledged tokens' invitations have a stored response."""
    hashes = [hash_token(tokens[k]) for k in acked]
    engine = create_async_engine(database_url)
    found = 0
    try:
        async with engine.connect() as conn:
            for start in range(0, len(hashes), 500):
                chunk = hashes[start : start + 500]
                names = ", ".join(f":h{j}" for j in range(len(chunk)))
                sql = (
                    "SELECT count(*) FROM responses r JOIN tokens t ON t.invitation_id = r.invitation_id"
                    f" WHERE t.hash IN ({names})"
                )
                found += (
                    await conn.execute(text(sql), {f"h{j}": h for j, h in enumerate(chunk)})
                ).scalar() or 0
    finally:
        await engine.dispose()
    return int(found)


async def settle(database_url: str, limit: float) -> float:
    """Wait until the hub has no write-back queued, no event left to process and no invitation due but unsent
    (the webhooks' events become invitations, sent at once by default); at most ``limit`` seconds. Returns
    the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        queued = await scalar(database_url, "SELECT count(*) FROM writebacks WHERE state = 'queued'")
        pending = await scalar(database_url, "SELECT count(*) FROM events WHERE processed_at IS NULL")
        unsent = await scalar(database_url, "SELECT count(*) FROM invitations WHERE status = 'scheduled'")
        if not queued and not pending and not unsent:
            break
        await asyncio.sleep(0.5)
    return time.monotonic() - start


# --- freshness: answer -> CRM ------------------------------------------------------------------------------


@dataclass
class Freshness:
    """Answers posted at a steady rate, and when the CRM had each of them."""

    database: str
    rate: float
    #: person's CRM id -> (when the POST was sent, the score)
    posted: dict[str, tuple[float, int]] = field(default_factory=dict)
    failed: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    #: how long each POST of an answer took to be answered (stored)
    acks: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def quantile(self, q: float, of: list[float] | None = None) -> float:
        ordered = sorted(self.latencies if of is None else of)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


#: the survey form's CSRF field, as a browser submits it
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')
#: the write-backs of one answer in the bench's campaign
ANSWER_KINDS = ("timeline", "case", "summary")


async def answer_as_a_browser(
    hub_url: str, token: str, k: int, score: int, acks: list[float]
) -> tuple[float, str]:
    """A browser of its own (its own cookies and address): the survey page, the POST of the score with the
    page's CSRF field, the follow-up page it leads to; returns when the POST was sent, and what went wrong
    ("" for nothing)."""
    forwarded = {"x-forwarded-for": address(100_000 + k)}
    async with httpx.AsyncClient(base_url=hub_url, timeout=60, headers=forwarded) as browser:
        page = await browser.get(f"/s/{token}")
        field = CSRF_FIELD.search(page.text)
        if page.status_code != 200 or field is None:
            return 0.0, f"page {page.status_code}"
        sent = time.time()
        posted = await browser.post(f"/s/{token}", data={"score": str(score), "csrf": field[1]})
        acks.append(time.time() - sent)
        if posted.status_code != 303:
            return sent, f"answer {posted.status_code}"
        followup = await browser.get(posted.headers["location"])
        return sent, "" if followup.status_code == 200 else f"follow-up {followup.status_code}"


async def measure_freshness(
    kind: str, hub_url: str, crm_url: str, tokens: list[str], prefix: str, args: Any
) -> Freshness:
    """Post the answers at ``args.fresh_rate`` a second (each on its schedule, however slow the last one),
    then wait for the CRM to have every one; checks each arrived exactly once with its score."""
    result = Freshness(kind, args.fresh_rate)
    start = time.monotonic()

    async def one(k: int) -> None:
        await asyncio.sleep(max(0.0, start + k / args.fresh_rate - time.monotonic()))
        score = k % 11
        sent, error = await answer_as_a_browser(hub_url, tokens[k], k, score, result.acks)
        if error:
            result.failed[error] += 1
        else:
            result.posted[f"{prefix}{k}"] = (sent, score)

    await asyncio.gather(*(one(k) for k in range(len(tokens))))
    expected = {(person, what) for person in result.posted for what in ANSWER_KINDS}
    deadline = time.monotonic() + args.fresh_wait
    async with httpx.AsyncClient(base_url=crm_url, timeout=30) as crm:
        while True:
            arrivals = (await crm.get("/bench/arrivals")).json()
            mine = [a for a in arrivals if a[2] in result.posted]
            if {(a[2], a[3]) for a in mine} >= expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        # a second write of the same answer would come later (a lost outcome, an expired lease): look again
        await asyncio.sleep(args.fresh_grace)
        mine = [a for a in (await crm.get("/bench/arrivals")).json() if a[2] in result.posted]
    seen: dict[tuple[str, str], list[tuple[float, int | None]]] = {}
    for at, _key, person, what, rating in mine:
        seen.setdefault((person, what), []).append((at, rating))
    missing = expected - set(seen)
    repeated = [k for k, v in seen.items() if len(v) > 1]
    wrong = [k for k, v in seen.items() if any(r != result.posted[k[0]][1] for _, r in v)]
    for person, (sent, _score) in result.posted.items():
        arrived = [seen[(person, what)][0][0] for what in ANSWER_KINDS if (person, what) in seen]
        if len(arrived) == len(ANSWER_KINDS):
            result.latencies.append(max(arrived) - sent)
    if result.failed:
        result.problems.append(f"{kind}: answers refused: {dict(result.failed)}")
    if missing:
        result.problems.append(f"{kind}: {len(missing)} write-backs never reached the CRM")
    if repeated:
        result.problems.append(f"{kind}: {len(repeated)} write-backs reached the CRM more than once")
    if wrong:
        result.problems.append(f"{kind}: {len(wrong)} write-backs carried another score than the answer")
    return result


# --- one database -----------------------------------------------------------------------------------------


@dataclass
class Row:
    """One path on one database: the anchor's and the hub's load in each round, measured back to back."""

    database: str
    path: str
    anchors: list[Load] = field(default_factory=list)
    hubs: list[Load] = field(default_factory=list)

    def ratios(self) -> list[float]:
        return [
            h.rate / a.rate if a.rate else float("nan") for a, h in zip(self.anchors, self.hubs, strict=True)
        ]

    @property
    def median_round(self) -> int:
        """The round whose throughput ratio is the median of the rounds' (the lower middle of an even count)."""
        order = sorted(range(len(self.hubs)), key=lambda i: self.ratios()[i])
        return order[(len(order) - 1) // 2]


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} on {os.cpu_count()} cores"


@contextmanager
def servers(kind: str, folder: Path, database_url: str, crm_latency: float) -> Iterator[tuple[str, str, str]]:
    """The fake CRM and the anchor in child processes: their URLs and the anchor's database (on SQLite a file
    of its own: the hub's WAL, the events it just processed, must not slow the anchor)."""
    me = [sys.executable, str(Path(__file__).resolve())]
    crm_port, anchor_port = free_port(), free_port()
    anchor_database = f"sqlite+aiosqlite:///{folder / 'anchor.db'}" if kind == "sqlite" else database_url
    os.environ["BENCH_CRM_LATENCY"] = str(crm_latency)
    os.environ.update(ENV)
    with (
        child([*me, "--serve", "crm", str(crm_port), ""], crm_port, folder / "crm.log") as crm_url,
        child(
            [*me, "--serve", "anchor", str(anchor_port), anchor_database], anchor_port, folder / "anchor.log"
        ) as anchor_url,
    ):
        yield crm_url, anchor_url, anchor_database


def seed(kind: str, config: Path, database_url: str, counts: list[tuple[str, int]]) -> list[list[str]]:
    """Sent invitations for each (CRM id prefix, count), their survey tokens; on PostgreSQL the planner's
    statistics gathered afterwards (``analyze``)."""
    seeded = [asyncio.run(seed_tokens(config, count, prefix=prefix)) for prefix, count in counts]
    if kind == "postgresql":
        asyncio.run(analyze(database_url))
    return seeded


def serve_command(config: Path, port: int, *options: str) -> list[str]:
    """``cxhub serve`` of ``config`` on ``port``, as a child process runs it."""
    return [sys.executable, "-m", "hub", "serve", "--config", str(config), "--port", str(port), *options]


def run_database(
    kind: str, args: Any, folder: Path, problems: list[str], fresh: list[Freshness]
) -> list[Row]:
    """The anchor's and the hub's servers side by side, each path measured on the anchor and right after on
    the hub, ``--rounds`` times; adds the freshness measurement (made first on the hub, before any load) to
    ``fresh``. Measured back to back, an anchor and the hub share the machine's state of that minute."""
    load = "load" in args.sections
    with fresh_database(kind, folder, prefix="cxhub_bench") as database_url:
        print(f"\n== {kind} ({load_average()})", flush=True)
        with servers(kind, folder, database_url, args.crm_latency) as (crm_url, anchor_url, anchor_database):
            config = folder / "cxhub.toml"
            config.write_text(hub_config(database_url, crm_url))
            count = args.tokens if load else 0
            tokens, page_tokens, fresh_tokens = seed(
                kind, config, database_url, [("S", count), ("V", count), ("F", args.fresh_answers)]
            )
            paths = Paths("/hooks/crm", tokens, f"B{time.time_ns()}", page_tokens)
            anchor_paths = Paths("/hooks/anchor", [f"anchor-{k}" for k in range(args.tokens)], "anchor")
            hub_port = free_port()
            serve = serve_command(config, hub_port)
            with child(serve, hub_port, folder / "hub.log") as url:
                if "freshness" in args.sections:
                    measured = asyncio.run(measure_freshness(kind, url, crm_url, fresh_tokens, "F", args))
                    fresh.append(measured)
                    problems += measured.problems
                    print(
                        f"  hub    answer -> CRM: p95 {measured.quantile(0.95):.2f} s over"
                        f" {len(measured.latencies)} answers; POST answered in p95"
                        f" {measured.quantile(0.95, measured.acks):.2f} s ({load_average()})",
                        flush=True,
                    )
                if not load:
                    return []
                rows = run_load(kind, args, database_url, (anchor_url, anchor_paths), (url, paths))
        check_stored(kind, problems, database_url, paths)
        stored = asyncio.run(scalar(anchor_database, f"SELECT count(*) FROM {ANCHOR_TABLE}"))
        if stored < len(anchor_paths.acked_events):
            problems.append(
                f"{kind}: anchor acknowledged {len(anchor_paths.acked_events)} inserts, stored {stored}"
            )
    return rows


def run_load(
    kind: str, args: Any, database_url: str, anchor: tuple[str, Paths], hub: tuple[str, Paths]
) -> list[Row]:
    """``--rounds`` rounds of the three paths, each on the anchor and then on the hub. Before the webhooks,
    and before the next round, the hub finishes what the last path left it (write-backs, events), so one
    path's aftermath never runs under another's measurement."""
    (anchor_url, anchor_paths), (url, paths) = anchor, hub
    rows = {
        name: Row(kind, name) for name in ("POST /hooks/<connector>", "GET /s/<token>", "POST /s/<token>")
    }
    plan = [
        ("GET /s/<token>", anchor_paths.page, page_ok, paths.page, page_ok),
        (
            "POST /s/<token>",
            anchor_paths.answer,
            lambda _i, status: status == 303,
            paths.answer,
            paths.answer_ok,
        ),
        (
            "POST /hooks/<connector>",
            anchor_paths.webhook,
            anchor_paths.webhook_ok,
            paths.webhook,
            paths.webhook_ok,
        ),
    ]
    for round_ in range(args.rounds):
        for name, anchor_make, anchor_ok, hub_make, hub_ok in plan:
            if name.startswith("POST /hooks"):
                wait_for_queues(database_url, 120)
            row = rows[name]
            row.anchors.append(asyncio.run(measure(anchor_url, anchor_make, anchor_ok, args)))
            row.hubs.append(asyncio.run(measure(url, hub_make, hub_ok, args)))
            print(
                f"  round {round_ + 1} {name}: anchor {row.anchors[-1].rate:,.0f} req/s,"
                f" hub {row.hubs[-1].rate:,.0f} req/s ({row.ratios()[-1]:.1%}; {load_average()})",
                flush=True,
            )
        # a round's webhooks are processed after it (each event's person read from the CRM at
        # ``--crm-latency`` a call): 20,000 of them take minutes, and the next round must not run beside them
        wait_for_queues(database_url, 900)
    return list(rows.values())


def wait_for_queues(database_url: str, limit: float) -> None:
    waited = asyncio.run(settle(database_url, limit))
    if waited >= limit:
        print(
            f"  (hub's queues still not empty after {limit:.0f} s: the next path runs beside them)",
            flush=True,
        )
    else:
        print(f"  (hub's queues empty after {waited:.1f} s)", flush=True)


def check_stored(kind: str, problems: list[str], database_url: str, paths: Paths) -> None:
    """Every acknowledged webhook stored as an event, every acknowledged answer as a response."""
    events = asyncio.run(stored_event_ids(database_url, paths.tag))
    missing = paths.acked_events - events
    print(f"  webhooks acknowledged {len(paths.acked_events):,}, stored {len(events):,}", flush=True)
    if missing:
        problems.append(f"{kind}: {len(missing)} acknowledged webhooks not stored")
    answered = asyncio.run(answered_tokens(database_url, paths.tokens, paths.acked_tokens))
    print(f"  surveys answered (acknowledged) {len(paths.acked_tokens):,}, stored {answered:,}", flush=True)
    if answered < len(paths.acked_tokens):
        problems.append(f"{kind}: {len(paths.acked_tokens) - answered} acknowledged answers not stored")


def ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def print_table(rows: list[Row], args: Any) -> None:
    print(
        f"\n{args.concurrency} concurrent workers, {args.seconds:g} s per path, {args.rounds} rounds;"
        " ratio = hub / anchor of the same round; the row shows the round of the median ratio"
    )
    print(
        "\n| database | path | anchor req/s | anchor p50 / p99 ms | hub req/s | hub p50 / p99 ms "
        "| throughput ratio | p99 ratio | ratios of the rounds | server CPU ms/req anchor / hub | failed (hub) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|")
    for row in rows:
        i = row.median_round
        a, h = row.anchors[i], row.hubs[i]
        failed = Counter[str]()
        for load in row.hubs:
            failed.update(load.failed)
        failures = ", ".join(f"{k}: {v}" for k, v in sorted(failed.items())) or "none"
        rounds = " / ".join(f"{ratio:.0%}" for ratio in row.ratios())
        print(
            f"| {row.database} | `{row.path}` | {a.rate:,.0f} | {ms(a.quantile(0.5))} / {ms(a.quantile(0.99))} "
            f"| {h.rate:,.0f} | {ms(h.quantile(0.5))} / {ms(h.quantile(0.99))} "
            f"| {h.rate / a.rate:.1%} | {h.quantile(0.99) / a.quantile(0.99):.1f}x | {rounds} "
            f"| {a.cpu_ms:.2f} / {h.cpu_ms:.2f} | {failures} |"
        )


def print_freshness(fresh: list[Freshness], args: Any) -> None:
    print(
        f"\n{args.fresh_answers} answers (a score each, from a browser) at {args.fresh_rate:g} a second, each by"
        f" another person; CRM {args.crm_latency * 1000:.0f} ms a call; default settings; target p95 <= 5 s"
    )
    print(
        "\n| database | path | answers written | p50 s | p95 s | max s | POST answered p95 s "
        "| each exactly once | p95 target |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|---|")
    for row in fresh:
        once = "no" if any("more than once" in p or "never" in p for p in row.problems) else "yes"
        target = "met" if row.quantile(0.95) <= 5.0 else "missed"
        print(
            f"| {row.database} | answer -> CRM | {len(row.latencies)} / {len(row.posted)} "
            f"| {row.quantile(0.5):.2f} | {row.quantile(0.95):.2f} | {max(row.latencies, default=float('nan')):.2f} "
            f"| {row.quantile(0.95, row.acks):.2f} | {once} | {target} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per path [10]")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent requests [32]")
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated [sqlite,postgresql]"
    )
    parser.add_argument("--tokens", type=int, default=2000, help="survey invitations seeded [2000]")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the three paths, anchor then hub each [3]"
    )
    parser.add_argument(
        "--sections",
        default="load,freshness,dispatch",
        help="comma-separated: load, freshness, dispatch (events -> invitations at the mail catcher, "
        "bench/dispatch_rate.py) [load,freshness,dispatch]",
    )
    parser.add_argument("--dispatch-events", type=int, default=1000, help="events of the dispatch run [1000]")
    parser.add_argument("--fresh-answers", type=int, default=200, help="answers of the freshness run [200]")
    parser.add_argument("--fresh-rate", type=float, default=5.0, help="answers a second [5]")
    parser.add_argument(
        "--fresh-wait",
        type=float,
        default=120.0,
        help="seconds to wait for the CRM after the last answer [120]",
    )
    parser.add_argument(
        "--fresh-grace",
        type=float,
        default=10.0,
        help="seconds to watch for repeated writes once every answer arrived [10]",
    )
    parser.add_argument("--crm-latency", type=float, default=0.1, help="seconds per fake CRM call [0.1]")
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "PORT", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_child(args.serve[0], int(args.serve[1]), args.serve[2])
        return
    print(f"hot paths: {args.concurrency} workers, {args.seconds:g} s per path ({load_average()})")
    problems: list[str] = []
    rows: list[Row] = []
    fresh: list[Freshness] = []
    args.sections = {section.strip() for section in args.sections.split(",")}
    with tempfile.TemporaryDirectory(prefix="cxhub-hot-paths-") as tmp:
        for kind in args.databases.split(","):
            folder = Path(tmp) / kind
            folder.mkdir()
            rows += run_database(kind.strip(), args, folder, problems, fresh)
    if rows:
        print_table(rows, args)
    if fresh:
        print_freshness(fresh, args)
    if "dispatch" in args.sections:
        # each run starts a hub of its own on a fresh database, a CRM at 50 ms a call and a mail catcher
        print(f"\nevents -> mail catcher: {args.dispatch_events:,} events, CRM at 50 ms a call")
        dispatch, found = dispatch_rate.run_all(
            [k.strip() for k in args.databases.split(",")],
            args.dispatch_events,
            0.05,
            max(100, args.dispatch_events // 5),
        )
        dispatch_rate.print_rates(dispatch)
        problems += found
    for problem in problems:
        print(f"PROBLEM: {problem}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
