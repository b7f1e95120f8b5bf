"""Events -> invitations in the mailbox: how fast the hub turns stored events into sent surveys.

``--events`` closed cases (one person each) are stored as a webhook would store them; then the hub's own
scheduler jobs (the events job reads each person from the CRM and decides, the dispatch job sends) run in
this process until every invitation has reached the mail catcher. The CRM is the fake CRM of the tests
(``tests/fakes``) answering each call after ``--crm-latency`` seconds (50 ms: a CRM's API across the
internet); the channel is the email channel sending over SMTP to the local mail catcher (aiosmtpd), its
pacing (``max_per_second``, there for real providers' quotas) raised out of the way. Both run in child
processes, so their work does not share this process's interpreter with the hub's.

Each database runs twice in the same run: the hub as configured by default (each connector's and channel's
``concurrency``), and a baseline with both set to 1, which handles events and invitations one at a time as
the hub did before. The rate is invitations delivered per second, from the start of the jobs to the last
message caught. Checks: every invitation was delivered exactly once (one message per person, none twice)
and no event was left unprocessed; a shortfall is printed and makes the exit status 1.

    uv run --frozen --all-packages python bench/dispatch_rate.py --databases sqlite,postgresql
    uv run --frozen --all-packages python bench/dispatch_rate.py --events 300 --databases sqlite   # quick

``measure(kind, events=..., crm_latency=..., concurrency=...)`` runs one measurement and returns a
``DispatchRate``, for other scripts (it must be called outside a running event loop).

PostgreSQL is reached as the tests reach it (``CXHUB_TEST_POSTGRES_URL``, default postgres@127.0.0.1:5432),
in a fresh database dropped afterwards. Timings depend on the machine and on what else runs on it: compare
the ratio of one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the fake CRM and its plugin live in tests/fakes

from hub_email.catcher import load_messages  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from hub.app import Hub  # noqa: E402
from hub.config import parse_config  # noqa: E402
from hub.logging import configure  # noqa: E402
from hub.models import CaseEvent  # noqa: E402
from hub.scheduler import Scheduler  # noqa: E402
from hub.store.tables import Event, Invitation  # noqa: E402
from hub.testing.databases import fresh_database  # noqa: E402
from tests.fakes.crm import TOKEN  # noqa: E402

ENV = {"BENCH_CRM_TOKEN": TOKEN, "BENCH_WEBHOOK_SECRET": "bench-webhook-secret"}
SENDER = "feedback@example.com"
#: the email channel's pacing (``max_per_second``, default 5 for real providers) set out of the way: the local
#: catcher has no quota, and what is measured is the hub
SEND_RATE = 1000


def person_id(k: int) -> str:
    return f"B{k}"


def address(k: int) -> str:
    return f"bench{k}@example.com"


def hub_config(database_url: str, crm_url: str, smtp_port: int, concurrency: int | None) -> str:
    """``cxhub.toml`` of the measured hub; ``concurrency`` None keeps the defaults."""
    bound = "" if concurrency is None else f"concurrency = {concurrency}"
    return f"""
[hub]
public_url = "http://127.0.0.1:8000"
database_url = "{database_url}"
plugins = ["email"]
plugin_modules = ["tests.fakes.plugin"]
log_level = "warning"

[connectors.crm]
plugin = "fakecrm"
base_url = "{crm_url}"
token = "env:BENCH_CRM_TOKEN"
webhook_secret = "env:BENCH_WEBHOOK_SECRET"
poll_interval_seconds = 0
{bound}

[channels.mail]
plugin = "email"
host = "127.0.0.1"
port = {smtp_port}
security = "none"
from_address = "{SENDER}"
max_per_second = {SEND_RATE}
{bound}

[surveys.nps]
kind = "nps"

[campaigns.case_closed]
trigger = {{ connector = "crm", event = "case.closed" }}
survey = "nps"
channels = ["mail"]
"""


# --- the children: the CRM and the mail catcher ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_crm(port: int, people: int, latency: float) -> None:
    """Child mode: the fake CRM with ``people`` people, answering each call after ``latency`` seconds."""
    import uvicorn

    from tests.fakes.crm import FakeState, create_app

    state = FakeState(latency=latency)
    for k in range(people):
        state.people[person_id(k)] = {"id": person_id(k), "email": address(k), "first_name": f"Bench {k}"}
    uvicorn.run(create_app(state), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def child(args: list[str], port: int, log: Path) -> Iterator[None]:
    """Start a server in a child process, wait until its port answers, stop it with SIGTERM afterwards."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
    try:
        deadline = time.monotonic() + 60
        while not _listening(port):
            if proc.poll() is not None:
                raise SystemExit(f"{' '.join(args[:4])} exited with {proc.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{' '.join(args[:4])} did not listen in 60 s; see {log}")
            time.sleep(0.1)
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # the catcher stops on Ctrl-C, uvicorn too
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- one measurement --------------------------------------------------------------------------------------


@dataclass
class DispatchRate:
    """One run: ``events`` events in, what reached the mailbox, in how long."""

    database: str
    concurrency: int | None
    events: int
    seconds: float = 0.0
    delivered: int = 0
    #: recipients that got more than one message, and people who got none
    twice: list[str] = field(default_factory=list)
    missing: int = 0
    unprocessed: int = 0
    #: invitations the hub marked sent
    marked_sent: int = 0

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0

    @property
    def problems(self) -> list[str]:
        label = f"{self.database}, concurrency {self.concurrency or 'default'}"
        found = []
        if self.twice:
            found.append(f"{label}: {len(self.twice)} people got more than one invitation")
        if self.missing:
            found.append(f"{label}: {self.missing} invitations never reached the mailbox")
        if self.unprocessed:
            found.append(f"{label}: {self.unprocessed} events left unprocessed")
        if self.marked_sent != self.delivered:
            found.append(f"{label}: {self.marked_sent} invitations marked sent, {self.delivered} delivered")
        return found


def _maildir_count(directory: Path) -> int:
    new = directory / "new"
    return len(os.listdir(new)) if new.is_dir() else 0


async def _store_events(hub: Hub, count: int) -> None:
    now = datetime.now(UTC)
    events = [
        CaseEvent(
            event_id=f"case:bench-{k}:closed",
            event_type="case.closed",
            occurred_at=now,
            record_type="case",
            record_id=f"bench-{k}",
            person_id=person_id(k),
            owner_email="owner@example.com",
        )
        for k in range(count)
    ]
    for start in range(0, count, 200):
        await hub.engine.receive("crm", events[start : start + 200], source="webhook")


async def _run_jobs(hub: Hub, maildir: Path, result: DispatchRate, limit_seconds: float) -> None:
    """Start the hub's scheduler on the stored events; stop once every invitation is in the mailbox."""
    scheduler = Scheduler(hub)
    start = time.perf_counter()
    scheduler.start()
    try:
        while time.perf_counter() - start < limit_seconds:
            if _maildir_count(maildir) >= result.events:  # the catcher is another process: poll its folder
                break
            await asyncio.sleep(0.02)
        result.seconds = time.perf_counter() - start
    finally:
        await scheduler.shutdown(grace_seconds=10)


async def _measure(
    database_url: str,
    crm_url: str,
    smtp_port: int,
    maildir: Path,
    result: DispatchRate,
    folder: Path,
    limit_seconds: float,
) -> None:
    text = hub_config(database_url, crm_url, smtp_port, result.concurrency)
    config = parse_config(tomllib.loads(text), folder / "cxhub.toml")
    hub = await Hub.open(config)
    try:
        await _store_events(hub, result.events)
        await _run_jobs(hub, maildir, result, limit_seconds)
        async with hub.store.session() as s:
            unprocessed = select(func.count()).select_from(Event).where(Event.processed_at.is_(None))
            sent = select(func.count()).select_from(Invitation).where(Invitation.status == "sent")
            result.unprocessed = await s.scalar(unprocessed) or 0
            result.marked_sent = await s.scalar(sent) or 0
    finally:
        await hub.close()
    received = Counter(rcpt.lower() for mail in load_messages(maildir) for rcpt in mail.rcpt_tos)
    expected = {address(k) for k in range(result.events)}
    result.delivered = len(set(received) & expected)
    result.twice = sorted(rcpt for rcpt, n in received.items() if n > 1)
    result.missing = len(expected - set(received))


def measure(
    kind: str,
    *,
    events: int = 1000,
    crm_latency: float = 0.05,
    concurrency: int | None = None,
    limit_seconds: float = 600.0,
) -> DispatchRate:
    """Events -> mailbox on one database (``"sqlite"`` or ``"postgresql"``), with a fresh database, CRM and
    mail catcher. ``concurrency`` sets every connector's and channel's bound (None: the defaults)."""
    configure("warning")
    result = DispatchRate(kind, concurrency, events)
    with tempfile.TemporaryDirectory(prefix="cxhub-dispatch-") as tmp:
        work = Path(tmp)
        maildir = work / "mail"
        me = [sys.executable, str(Path(__file__).resolve())]
        crm_port, smtp_port = free_port(), free_port()
        crm = [*me, "--serve-crm", str(crm_port), str(events), str(crm_latency)]
        catcher = [
            sys.executable,
            "-m",
            "hub_email.catcher",
            "--port",
            str(smtp_port),
            "--maildir",
            str(maildir),
        ]
        os.environ.update(ENV)
        with (
            fresh_database(kind, work, prefix="cxhub_bench") as database_url,
            child(crm, crm_port, work / "crm.log"),
            child(catcher, smtp_port, work / "catcher.log"),
        ):
            crm_url = f"http://127.0.0.1:{crm_port}"
            asyncio.run(_measure(database_url, crm_url, smtp_port, maildir, result, work, limit_seconds))
    return result


# --- the report -------------------------------------------------------------------------------------------


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} on {os.cpu_count()} cores"


def run_all(
    databases: list[str], events: int, crm_latency: float, baseline_events: int
) -> tuple[list[tuple[DispatchRate, DispatchRate]], list[str]]:
    """Each database with the default bounds, then one at a time as the baseline; the runs and their problems."""
    rows: list[tuple[DispatchRate, DispatchRate]] = []
    problems: list[str] = []
    for kind in databases:
        hub = measure(kind, events=events, crm_latency=crm_latency)
        print(f"  {kind}: default bounds, {hub.rate:,.1f} invitations/s ({load_average()})", flush=True)
        baseline = measure(kind, events=baseline_events, crm_latency=crm_latency, concurrency=1)
        print(f"  {kind}: one at a time, {baseline.rate:,.1f} invitations/s ({load_average()})", flush=True)
        rows.append((hub, baseline))
        problems += hub.problems + baseline.problems
    return rows, problems


def print_rates(rows: list[tuple[DispatchRate, DispatchRate]]) -> None:
    print("\n| database | events | default bounds: invitations/s | one at a time: invitations/s | ratio |")
    print("|---|---:|---:|---:|---:|")
    for hub, baseline in rows:
        print(
            f"| {hub.database} | {hub.events:,} | {hub.rate:,.1f} ({hub.delivered:,} in {hub.seconds:.1f} s) "
            f"| {baseline.rate:,.1f} ({baseline.delivered:,} in {baseline.seconds:.1f} s) "
            f"| {hub.rate / baseline.rate if baseline.rate else float('nan'):.1f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1000, help="events stored, one person each [1000]")
    parser.add_argument("--crm-latency", type=float, default=0.05, help="seconds per CRM call [0.05]")
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated [sqlite,postgresql]"
    )
    parser.add_argument(
        "--baseline-events",
        type=int,
        default=None,
        help="events of the one-at-a-time baseline [--events / 5, at least 100]: it is slow",
    )
    parser.add_argument("--serve-crm", nargs=3, metavar=("PORT", "PEOPLE", "LATENCY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_crm:
        serve_crm(int(args.serve_crm[0]), int(args.serve_crm[1]), float(args.serve_crm[2]))
        return
    baseline_events = args.baseline_events or max(100, args.events // 5)
    print(
        f"events -> mailbox: {args.events:,} events, CRM at {args.crm_latency * 1000:g} ms per call, "
        f"baseline on {baseline_events:,} events ({load_average()})",
        flush=True,
    )
    rows, problems = run_all(
        [k.strip() for k in args.databases.split(",")], args.events, args.crm_latency, baseline_events
    )
    print_rates(rows)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
