"""``/admin/campaigns``: what each campaign does and how its last week went, and each connector's and
channel's check.

Viewers see every campaign's trigger, survey, channels and contact policy, with last week's numbers
(``hub.campaign_numbers``, counted in SQL). Running the checks is an admin's POST, not a page view: a check
logs in to the CRMs and providers, spends CRM API allowance and may trip their rate limits or lock-outs
(``hub.checks``), so no crawler, prefetch or reload may start one and every run is in the audit log. The
result is shown with the moment it was taken; nothing is kept between requests.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from hub.app import Hub
from hub.campaign_numbers import WEEK, last_week
from hub.checks import InstanceCheck, check_all
from hub.web.cockpit.access import Admin, CheckedForm, User, Viewer, audit
from hub.web.cockpit.render import render
from hub.web.deps import HubDep

router = APIRouter(prefix="/admin", include_in_schema=False)


def _instances(hub: Hub) -> list[dict[str, Any]]:
    """Every configured connector and channel: its kind, plugin and whether it runs."""
    found: list[dict[str, Any]] = []
    for kind, configured, running in (
        ("connector", hub.config.connectors, hub.connectors),
        ("channel", hub.config.channels, hub.channels),
    ):
        for name, instance in configured.items():
            found.append({"name": name, "kind": kind, "plugin": instance.plugin, "running": name in running})
    return found


async def _page(
    request: Request, hub: Hub, user: User, checks: dict[str, InstanceCheck] | None = None
) -> Response:
    now = hub.now()
    async with hub.store.session() as s:
        numbers = await last_week(s, hub.config, now)
    return render(
        request,
        hub,
        "admin/campaigns.html",
        user,
        campaigns=hub.config.campaigns,
        surveys=hub.config.surveys,
        policy=hub.config.policy,
        numbers=numbers,
        since=now - WEEK,
        instances=_instances(hub),
        checks=checks or {},
    )


@router.get("/campaigns", response_class=HTMLResponse)
async def campaigns(request: Request, hub: HubDep, user: Viewer) -> Response:
    return await _page(request, hub, user)


@router.post("/campaigns/check", response_class=HTMLResponse)
async def run_checks(request: Request, hub: HubDep, user: Admin, form: CheckedForm) -> Response:
    """Check one instance (``instance`` in the form) or all of them, and show the page with the results."""
    wanted = form.get("instance")
    running = [*hub.connectors, *hub.channels]
    names = [wanted] if isinstance(wanted, str) and wanted in running else None
    results = await check_all(hub, names)
    await audit(
        hub,
        user.name,
        "instance.check",
        names[0] if names else "all",
        results={checked.instance: checked.ok for checked in results},
    )
    return await _page(request, hub, user, {checked.instance: checked for checked in results})
