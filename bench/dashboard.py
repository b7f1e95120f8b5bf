"""The cockpit's dashboard (``GET /admin``) over 100,000 answers, on SQLite and PostgreSQL, beside a bare page.

For each database: a fresh database is migrated and seeded in bulk (SQLAlchemy Core, ``hub.testing.answers``)
with ``--answers`` answers over the last year (three in four NPS, the rest CSAT; two campaigns, connectors,
channels, three languages, a comment on one in three) plus a fifth as many invitations sent and never answered,
with their people and events. Then the real app (``hub.web.create_app``, scheduler off) is asked, through
httpx's ASGI transport in this process, for the dashboard signed in as the admin: unfiltered (the whole year,
every answer) and with a few filters, ``--requests`` times each after a warm-up, one request at a time. The
baseline, measured in the same run on the same app and client: a page added for the bench that runs
``SELECT count(*) FROM responses`` and returns a line of HTML, so the ratio is the dashboard's own cost over a
page's round trip and one query. The CSV export of every answer is timed once, as a reference.

    uv run --frozen --all-packages python bench/dashboard.py                      # 100,000 answers, both databases
    uv run --frozen --all-packages python bench/dashboard.py --answers 20000 --databases sqlite

Target: p95 under 300 ms on both databases. PostgreSQL is reached as the tests reach it
(``CXHUB_TEST_POSTGRES_URL``) in a fresh database dropped afterwards; it is vacuumed and analysed after the seeding, as
its autovacuum would have done by then (SQLite is left as the hub leaves it, without statistics). Timings depend on
the machine and on what else runs on it: compare the ratios of one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the fake CRM's plugin lives in tests/fakes

import httpx  # noqa: E402
from fastapi.responses import HTMLResponse  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from hub.app import Hub  # noqa: E402
from hub.config import parse_config  # noqa: E402
from hub.models import SurveyKind  # noqa: E402
from hub.store.tables import Response  # noqa: E402
from hub.testing.answers import Seeded, seed  # noqa: E402
from hub.testing.databases import fresh_database  # noqa: E402
from hub.web import create_app  # noqa: E402
from tests.fakes.crm import TOKEN  # noqa: E402

PASSWORD = "bench-admin-password"
TARGET_MS = 300.0
CHUNK = 10_000  # answers per seeding transaction


def pages(now: datetime) -> dict[str, str]:
    """The dashboards measured: the whole year unfiltered, the default page, and a few filters."""
    first, last = (now - timedelta(days=200)).date(), (now - timedelta(days=20)).date()
    return {
        "unfiltered (365 days, every answer)": "/admin?period=365",
        "default (30 days)": "/admin",
        "campaign + 90 days": "/admin?period=90&campaign=case_closed",
        "connector + channel, 365 days by month": "/admin?period=365&connector=crm&channel=sms&bucket=month",
        "survey + language + dates": f"/admin?from={first}&to={last}&survey=csat&language=da",
    }


BASELINE = "/bench/count"
COMMENTS = (
    "Quick and friendly help",
    "Took three days to get an answer",
    "=1+1",
    "The invoice is still wrong",
)


def config_data(database_url: str) -> dict[str, Any]:
    """Two campaigns (NPS and CSAT) of the fake CRM; nothing is sent, the scheduler is off."""
    return {
        "hub": {
            "database_url": database_url,
            "public_url": "http://127.0.0.1:9",
            "plugins": [],
            "plugin_modules": ["tests.fakes.plugin"],
            "log_level": "warning",
        },
        "connectors": {
            "crm": {
                "plugin": "fakecrm",
                "base_url": "http://127.0.0.1:9",
                "token": "env:BENCH_TOKEN",
                "webhook_secret": "env:BENCH_TOKEN",
            }
        },
        "channels": {
            "mail": {"plugin": "fakechannel", "base_url": "http://127.0.0.1:9"},
            "sms": {"plugin": "fakechannel", "base_url": "http://127.0.0.1:9"},
        },
        "surveys": {"nps": {"kind": "nps"}, "csat": {"kind": "csat"}},
        "campaigns": {
            "case_closed": {
                "trigger": {"connector": "crm", "event": "case.closed"},
                "survey": "nps",
                "channels": ["mail"],
            },
            "deal_won": {
                "trigger": {"connector": "crm", "event": "deal.won"},
                "survey": "csat",
                "channels": ["sms"],
            },
        },
    }


def items(count: int, unanswered: int, hub: Hub, rng: random.Random) -> list[Seeded]:
    """``count`` answers and ``unanswered`` invitations spread over the last 365 days."""
    now = hub.now()
    made = []
    for index in range(count + unanswered):
        nps = rng.random() < 0.75
        kind = SurveyKind.NPS if nps else SurveyKind.CSAT
        rating = (
            rng.choices(range(11), weights=(2, 1, 1, 1, 2, 3, 4, 6, 9, 12, 10))[0]
            if nps
            else rng.randint(1, 5)
        )
        made.append(
            Seeded(
                sent_at=now - timedelta(days=rng.uniform(1.5, 364.5)),
                rating=rating if index < count else None,
                kind=kind,
                campaign="case_closed" if nps else "deal_won",
                connector=rng.choice(("crm", "crm", "other")),
                channel=rng.choice(("mail", "mail", "sms")),
                language=rng.choice(("en", "da", "sv")),
                comment=rng.choice(COMMENTS) if rng.random() < 0.33 else None,
                person=index % 2000,
                answered_after=timedelta(hours=rng.uniform(0.1, 30)),
                record_url=f"https://crm.example.com/case/{index}",
            )
        )
    rng.shuffle(made)
    return made


async def seed_all(hub: Hub, answers: int, seed_value: int) -> float:
    """Seed the database; returns the seconds it took."""
    rng = random.Random(seed_value)
    everything = items(answers, answers // 5, hub, rng)
    started = time.perf_counter()
    for offset in range(0, len(everything), CHUNK):
        async with hub.store.engine.begin() as conn:
            await seed(conn, everything[offset : offset + CHUNK])
    if not hub.store.is_sqlite:  # as autovacuum does after such a change: statistics, the visibility map
        async with hub.store.engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("VACUUM ANALYZE"))
    return time.perf_counter() - started


def add_baseline(app: Any, hub: Hub) -> None:
    """The bare page: one ``SELECT count(*)`` on the same engine, a line of HTML."""

    @app.get(BASELINE)
    async def count_page() -> HTMLResponse:
        async with hub.store.engine.connect() as conn:
            count = await conn.scalar(select(func.count()).select_from(Response))
        return HTMLResponse(f"<!doctype html><p>{count} answers</p>")


async def sign_in(client: httpx.AsyncClient) -> None:
    form = await client.get("/admin/login")
    csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    reply = await client.post(
        "/admin/login", data={"csrf": csrf, "username": "admin", "password": PASSWORD, "next": "/admin"}
    )
    if reply.status_code != 303:
        raise SystemExit(f"could not sign in: {reply.status_code}")


async def timings(client: httpx.AsyncClient, path: str, requests: int, warm_up: int = 3) -> list[float]:
    """Milliseconds per request, one at a time, after ``warm_up`` requests."""
    for _ in range(warm_up):
        (await client.get(path)).raise_for_status()
    taken = []
    for _ in range(requests):
        started = time.perf_counter()
        reply = await client.get(path)
        taken.append((time.perf_counter() - started) * 1000)
        reply.raise_for_status()
    return taken


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


async def measure(kind: str, database_url: str, args: argparse.Namespace) -> list[tuple[str, ...]]:
    config = parse_config(config_data(database_url), Path(tempfile.gettempdir()) / "cxhub-bench.toml")
    config.hub.admin_password = SecretStr(PASSWORD)
    hub = await Hub.open(config)
    rows = []
    try:
        seconds = await seed_all(hub, args.answers, args.seed)
        print(
            f"  seeded {args.answers:,} answers and {args.answers // 5:,} unanswered invitations in {seconds:.1f} s",
            flush=True,
        )
        app = create_app(hub, scheduler=False)
        add_baseline(app, hub)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            await sign_in(client)
            base = await timings(client, BASELINE, args.requests)
            base_p50, base_p95 = quantile(base, 0.5), quantile(base, 0.95)
            rows.append(
                (kind, "baseline: SELECT count(*) page", f"{base_p50:.1f}", f"{base_p95:.1f}", "1.0", "")
            )
            print(f"  {'baseline':<40} p50 {base_p50:7.1f} ms  p95 {base_p95:7.1f} ms", flush=True)
            for name, path in pages(hub.now()).items():
                taken = await timings(client, path, args.requests)
                p50, p95 = quantile(taken, 0.5), quantile(taken, 0.95)
                verdict = "met" if p95 < TARGET_MS else "NOT met"
                rows.append((kind, name, f"{p50:.1f}", f"{p95:.1f}", f"{p50 / base_p50:.1f}", verdict))
                print(
                    f"  {name:<40} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  {p50 / base_p50:5.1f}x  {verdict}",
                    flush=True,
                )
            started = time.perf_counter()
            export = await client.get("/admin/answers.csv?period=365")
            export.raise_for_status()
            lines = export.content.count(b"\n") - 1
            print(
                f"  CSV export of every answer: {lines:,} rows, {len(export.content) / 1e6:.1f} MB in {time.perf_counter() - started:.2f} s",
                flush=True,
            )
    finally:
        await hub.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--answers", type=int, default=100_000, help="answers seeded [100000]")
    parser.add_argument("--requests", type=int, default=30, help="measured requests per page [30]")
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated [sqlite,postgresql]"
    )
    parser.add_argument("--seed", type=int, default=11, help="random seed of the answers [11]")
    args = parser.parse_args()
    os.environ.setdefault("BENCH_TOKEN", TOKEN)
    one, five, _ = os.getloadavg()
    print(
        f"dashboard: {args.answers:,} answers, {args.requests} requests per page (load {one:.2f}/{five:.2f} on {os.cpu_count()} cores)"
    )
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory(prefix="cxhub-bench-dashboard-") as tmp:
        for kind in (k.strip() for k in args.databases.split(",")):
            folder = Path(tmp) / kind
            folder.mkdir()
            print(f"\n== {kind}", flush=True)
            with fresh_database(kind, folder, prefix="cxhub_bench") as url:
                rows += asyncio.run(measure(kind, url, args))
    print(f"\n| database | page | p50 ms | p95 ms | p50 / baseline | p95 < {TARGET_MS:.0f} ms |")
    print("|---|---|---:|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if any(row[-1] == "NOT met" for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
