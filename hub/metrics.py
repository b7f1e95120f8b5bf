"""Prometheus metrics of the whole hub, read from the database at scrape time.

Counters kept in a process's memory only tell what that process did since it started: with two `serve` and
two `worker` processes, or after a restart, they say little about the hub. What an operator alerts on (the
queue, dead letters, the last poll and sync of each connector, answers received, a CRM login that keeps
failing) is therefore computed from the store when `/metrics` is scraped, so every process reports the same
truth. The few in-process counters (webhook requests, hook errors) are exported beside them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.store import Store, utcnow
from hub.store.tables import Invitation, RejectedWebhook, Response, SyncRun, Usage, WriteBack

#: a connector whose last this many runs (polls and syncs) all failed to log in is reported as failing
AUTH_FAILURES_IN_A_ROW = 3
#: error prefixes (``SyncRun.error`` starts with the exception's class name) that need an admin
ADMIN_ERRORS = ("AuthError", "ConfigError")


@dataclass
class ConnectorHealth:
    """What the store says about one connector's link to its CRM."""

    name: str
    last_poll_ok: datetime | None = None
    last_sync_ok: datetime | None = None
    login_failing: bool = False
    last_error: str | None = None

    def as_dict(self) -> dict[str, str | bool | None]:
        return {
            "last_poll_ok": self.last_poll_ok.isoformat() if self.last_poll_ok else None,
            "last_sync_ok": self.last_sync_ok.isoformat() if self.last_sync_ok else None,
            "login_failing": self.login_failing,
            "last_error": self.last_error if self.login_failing else None,
        }


async def connector_health(store: Store, connectors: Iterable[str]) -> dict[str, ConnectorHealth]:
    """Per connector: the newest poll and sync that got through, and whether its login keeps failing."""
    found: dict[str, ConnectorHealth] = {}
    async with store.session() as s:
        for name in connectors:
            health = ConnectorHealth(name)
            for kind in ("poll", "sync"):
                kinds = ("sync", "full") if kind == "sync" else ("poll",)
                when = await s.scalar(
                    select(func.max(SyncRun.finished_at)).where(
                        SyncRun.connector == name, SyncRun.kind.in_(kinds), SyncRun.error.is_(None)
                    )
                )
                setattr(health, f"last_{kind}_ok", when)
            recent = list(
                await s.scalars(
                    select(SyncRun.error)
                    .where(SyncRun.connector == name, SyncRun.finished_at.is_not(None))
                    .order_by(SyncRun.id.desc())
                    .limit(AUTH_FAILURES_IN_A_ROW)
                )
            )
            health.login_failing = len(recent) == AUTH_FAILURES_IN_A_ROW and all(
                error is not None and error.startswith(ADMIN_ERRORS) for error in recent
            )
            health.last_error = recent[0] if recent else None
            found[name] = health
    return found


class _Snapshot(Collector):
    """The families read from the store for one scrape, handed to prometheus_client's text format."""

    def __init__(self, families: list[GaugeMetricFamily | CounterMetricFamily]) -> None:
        self.families = families

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        return iter(self.families)


async def _grouped(s: AsyncSession, *columns: Any, where: Any = None) -> list[tuple[Any, ...]]:
    """``SELECT columns..., count(*) [WHERE where] GROUP BY columns``."""
    statement = select(*columns, func.count()).group_by(*columns)
    if where is not None:
        statement = statement.where(where)
    return [tuple(row) for row in (await s.execute(statement)).all()]


async def store_families(
    store: Store, connectors: Iterable[str]
) -> list[GaugeMetricFamily | CounterMetricFamily]:
    names = list(connectors)
    queue = GaugeMetricFamily(
        "cxhub_writeback_items",
        "Write-back items in the queue by state (queued, done, dead)",
        labels=["connector", "kind", "state"],
    )
    answers = CounterMetricFamily(
        "cxhub_answers",
        "Answers received, by campaign, survey kind and NPS category",
        labels=["campaign", "survey_kind", "category"],
    )
    invitations = GaugeMetricFamily(
        "cxhub_invitations", "Invitations by status and channel", labels=["status", "channel"]
    )
    rejected = GaugeMetricFamily(
        "cxhub_rejected_webhooks", "Rejected webhook requests kept for inspection", labels=["target"]
    )
    api_calls = GaugeMetricFamily(
        "cxhub_api_calls_last_hour",
        "CRM API calls in the last hour, every process together",
        labels=["connector", "meter"],
    )
    last_ok = GaugeMetricFamily(
        "cxhub_last_success_timestamp_seconds",
        "When the newest poll or sync of a connector finished without error (Unix time; absent: never)",
        labels=["connector", "kind"],
    )
    runs = GaugeMetricFamily(
        "cxhub_runs_last_hour",
        "Polls and write-back runs of every process that finished in the last hour, by outcome (ok, failed)",
        labels=["connector", "kind", "outcome"],
    )
    failing = GaugeMetricFamily(
        "cxhub_connector_login_failing",
        f"1 when the last {AUTH_FAILURES_IN_A_ROW} runs of a connector all failed on credentials or config",
        labels=["connector"],
    )
    async with store.session() as s:
        for connector, kind, state, count in await _grouped(
            s, WriteBack.connector, WriteBack.kind, WriteBack.state
        ):
            queue.add_metric([str(connector), str(kind), str(state)], float(count))
        for campaign, kind, category, count in await _grouped(
            s, Response.campaign, Response.survey_kind, Response.category
        ):
            answers.add_metric([str(campaign), str(kind), str(category or "")], float(count))
        for status, channel, count in await _grouped(s, Invitation.status, Invitation.channel):
            invitations.add_metric([str(status), str(channel or "")], float(count))
        for target, count in await _grouped(s, RejectedWebhook.target):
            rejected.add_metric([str(target)], float(count))
        hour_ago = int((utcnow() - timedelta(hours=1)).timestamp() // 60)
        usage = await s.execute(
            select(Usage.connector, Usage.meter, func.sum(Usage.count))
            .where(Usage.minute >= hour_ago)
            .group_by(Usage.connector, Usage.meter)
        )
        for connector, meter, total in usage.all():
            api_calls.add_metric([connector, meter], float(total or 0))
        outcome = case((SyncRun.error.is_(None), "ok"), else_="failed")
        finished = await s.execute(
            select(SyncRun.connector, SyncRun.kind, outcome, func.count())
            .where(SyncRun.finished_at >= utcnow() - timedelta(hours=1))
            .group_by(SyncRun.connector, SyncRun.kind, outcome)
        )
        for connector, kind, result, count in finished.all():
            runs.add_metric([connector, kind, result], float(count))
    for name, health in (await connector_health(store, names)).items():
        for kind, when in (("poll", health.last_poll_ok), ("sync", health.last_sync_ok)):
            if when is not None:
                last_ok.add_metric([name, kind], when.timestamp())
        failing.add_metric([name], 1.0 if health.login_failing else 0.0)
    return [queue, answers, invitations, rejected, api_calls, runs, last_ok, failing]


async def render(store: Store, connectors: Iterable[str]) -> bytes:
    """The text exposition of this process's own counters followed by the hub's state from the store."""
    from prometheus_client import REGISTRY

    snapshot = CollectorRegistry(auto_describe=False)
    snapshot.register(_Snapshot(await store_families(store, connectors)))
    return generate_latest(REGISTRY) + generate_latest(snapshot)


async def recorded_state(
    store: Store, connectors: Iterable[str], channels: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """What the running processes recorded, for `cxhub diagnostics`: a fresh CLI process has empty in-memory
    counters, so the numbers that matter in a support ticket come from the store."""
    day_ago = utcnow() - timedelta(days=1)
    minute_day_ago = int(day_ago.timestamp() // 60)
    names = list(connectors)
    health = await connector_health(store, names)
    state: dict[str, dict[str, Any]] = {"connectors": {}, "channels": {}}
    async with store.session() as s:
        for name in names:
            queue = {
                f"{kind}/{status}": count
                for kind, status, count in await _grouped(
                    s, WriteBack.kind, WriteBack.state, where=WriteBack.connector == name
                )
            }
            calls = await s.execute(
                select(Usage.meter, func.sum(Usage.count))
                .where(Usage.connector == name, Usage.minute >= minute_day_ago)
                .group_by(Usage.meter)
            )
            state["connectors"][name] = {
                **health[name].as_dict(),
                "last_error": health[name].last_error,
                "writeback_items": queue,
                "api_calls_last_24h": {meter: int(total or 0) for meter, total in calls.all()},
            }
        for name in channels:
            sent = await s.scalar(
                select(func.count()).where(Invitation.channel == name, Invitation.sent_at >= day_ago)
            )
            by_status = {
                str(status): count
                for status, count in await _grouped(s, Invitation.status, where=Invitation.channel == name)
            }
            state["channels"][name] = {"sent_last_24h": sent or 0, "invitations_by_status": by_status}
    return state
