"""Testing each connector and channel as ``cxhub check`` does, for the CLI and the cockpit alike.

A check calls out: it logs in to the CRM or the mail server, may read the CRM's metadata and spends some of
its API allowance. So the cockpit runs it only when an admin asks (a POST), never on a page view. Each
instance gets ``CHECK_SECONDS``: one that does not answer is reported as such instead of holding the rest.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from hub.controls import last_runs
from hub.errors import HubError
from hub.logging import scrub
from hub.models import CheckResult
from hub.store.tables import utcnow

if TYPE_CHECKING:
    from hub.app import Hub

log = structlog.get_logger("hub.checks")

#: how long one instance's check may take
CHECK_SECONDS = 30.0


@dataclass(frozen=True)
class InstanceCheck:
    """One connector's or channel's check: its lines, and when it ran."""

    instance: str
    kind: str  # connector | channel
    results: list[CheckResult]
    checked_at: datetime

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)


async def check_instance(hub: Hub, name: str) -> InstanceCheck:
    """Run the plugin's ``check`` of connector or channel ``name`` (plus, for a connector, whether its last
    write-back got through). Failures are lines, never exceptions; details are scrubbed of secrets."""
    kind = "connector" if name in hub.connectors else "channel"
    instance: Any = hub.connectors.get(name) or hub.channels[name]
    try:
        results = list(await asyncio.wait_for(instance.check(), CHECK_SECONDS))
    except HubError as exc:
        results = [CheckResult(name="connect", ok=False, detail=f"{type(exc).__name__}: {exc}")]
    except TimeoutError:
        results = [CheckResult(name="connect", ok=False, detail=f"no answer within {CHECK_SECONDS:g} s")]
    except Exception as exc:  # a plugin's bug is a failed check to show, not a crashed page or command
        log.exception("check.crashed", instance=name)  # its traceback, for the plugin's author
        results = [CheckResult(name="connect", ok=False, detail=f"the check itself failed: {exc!r}")]
    if kind == "connector":
        results += await sync_health(hub, name)
    cleaned = [CheckResult(name=r.name, ok=r.ok, detail=scrub(r.detail)) for r in results]
    return InstanceCheck(instance=name, kind=kind, results=cleaned, checked_at=utcnow())


async def check_all(hub: Hub, names: list[str] | None = None) -> list[InstanceCheck]:
    """Every connector and channel (or those in ``names``), checked at once, in the config's order."""
    wanted = [n for n in [*hub.connectors, *hub.channels] if names is None or n in names]
    return list(await asyncio.gather(*(check_instance(hub, name) for name in wanted)))


async def sync_health(hub: Hub, connector: str) -> list[CheckResult]:
    """Whether the last write-back run got through: a spent API budget or a CRM that refuses shows here,
    from the store, even though this process has made no write itself."""
    async with hub.store.session() as s:
        run = (await last_runs(s, connector))["sync"]
    if run is None:
        return [CheckResult(name="last sync", ok=True, detail="nothing written back yet")]
    when = f"{run.started_at:%Y-%m-%d %H:%M:%S}"
    if run.error:
        return [CheckResult(name="last sync", ok=False, detail=f"{when} stopped: {run.error}")]
    detail = f"{when}: {run.written} written, {run.retried} to retry, {run.dead} dead letters"
    return [CheckResult(name="last sync", ok=not run.dead, detail=detail)]
