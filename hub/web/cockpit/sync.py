"""The sync cockpit: each connector's state (``/admin/sync``, ``/admin/sync/<name>``) and the admin's actions on
it: run the sync or a poll now, a full re-sync (after a page that says what it queues and costs), the
schedule, pause and resume, replay dead letters.

Every action is a CSRF-checked POST for admins, recorded in the audit log, answered by a redirect to the
connector's page with what became of it (``done``), so a reload repeats nothing. The work is
``hub.controls``: it goes through the store and the job locks, so the page acts the same whether this process
runs the scheduler or a ``cxhub worker`` does (then the next runs shown are estimated, and the page says so).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response

from hub import controls
from hub.web.cockpit.access import Admin, CheckedForm, Viewer, audit
from hub.web.cockpit.render import render
from hub.web.deps import HubDep
from hub.web.sync_api import known, running, scheduler_next_runs

router = APIRouter(prefix="/admin", include_in_schema=False)

#: runs shown per page of a connector's history, and the newest dead letters and rejected webhooks shown
RUNS_PER_PAGE = 20
DETAILS = 50


def _back(name: str, done: str, **figures: int | str | None) -> Response:
    """To the connector's page, saying what the action did (the page words it in the reader's language)."""
    query = {"done": done, **{k: v for k, v in figures.items() if v is not None}}
    return RedirectResponse(f"/admin/sync/{name}?{urlencode(query)}", status_code=303)


def _outcome(name: str, action: str, outcome: controls.Outcome, **extra: int) -> Response:
    stats = outcome.stats
    if stats is None:
        return _back(name, f"{action}-{outcome.status}", **extra)
    return _back(
        name,
        f"{action}-{outcome.status}",
        written=stats.written,
        retried=stats.retried,
        dead=stats.dead,
        events=stats.events,
        error="1" if stats.error else None,
        **extra,
    )


@router.get("/sync")
async def overview(request: Request, hub: HubDep, user: Viewer) -> Response:
    next_runs = scheduler_next_runs(request)
    states = [await controls.connector_state(hub, name, next_runs) for name in hub.config.connectors]
    return render(request, hub, "admin/sync.html", user, states=states)


@router.get("/sync/{name}")
async def connector(
    request: Request,
    hub: HubDep,
    user: Viewer,
    name: str,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    state = await controls.connector_state(
        hub,
        known(hub, name),
        scheduler_next_runs(request),
        runs=RUNS_PER_PAGE,
        offset=(page - 1) * RUNS_PER_PAGE,
        details=DETAILS,
    )
    pages = max(1, -(-state.runs_total // RUNS_PER_PAGE))
    figures = {
        key: int(value)
        for key in ("written", "retried", "dead", "events", "count")
        if (value := request.query_params.get(key, "")).isdigit()
    }
    return render(
        request,
        hub,
        "admin/sync_connector.html",
        user,
        state=state,
        page=page,
        pages=pages,
        done=request.query_params.get("done"),
        figures=figures,
        failed_run=request.query_params.get("error") == "1",
        min_seconds=controls.MIN_SECONDS,
        max_seconds=controls.MAX_SECONDS,
    )


@router.post("/sync/{name}/run")
async def run_now(hub: HubDep, user: Admin, form: CheckedForm, name: str) -> Response:
    outcome = await controls.run_sync(hub, running(hub, name))
    await audit(hub, user.name, "sync.run", name, status=outcome.status)
    return _outcome(name, "sync", outcome)


@router.post("/sync/{name}/poll")
async def poll_now(hub: HubDep, user: Admin, form: CheckedForm, name: str) -> Response:
    running(hub, name)
    if not await controls.polls(hub, name):
        raise HTTPException(409, "this connector does not poll")
    outcome = await controls.run_poll(hub, name)
    await audit(hub, user.name, "sync.poll", name, status=outcome.status)
    return _outcome(name, "poll", outcome)


@router.get("/sync/{name}/full")
async def full_confirm(request: Request, hub: HubDep, user: Admin, name: str) -> Response:
    """The confirmation page: how many items a full re-sync queues and what it costs in calls to the CRM."""
    plan = await controls.resync_plan(hub, running(hub, name))
    return render(request, hub, "admin/sync_full.html", user, connector=name, plan=plan)


@router.post("/sync/{name}/full")
async def full_resync(hub: HubDep, user: Admin, form: CheckedForm, name: str) -> Response:
    requeued, outcome = await controls.full_resync(hub, running(hub, name))
    await audit(hub, user.name, "sync.full", name, requeued=requeued, status=outcome.status)
    return _outcome(name, "full", outcome, count=requeued)


@router.post("/sync/{name}/pause")
async def pause(hub: HubDep, user: Admin, form: CheckedForm, name: str) -> Response:
    await controls.set_paused(hub, known(hub, name), True, user.name)
    await audit(hub, user.name, "sync.pause", name)
    return _back(name, "paused")


@router.post("/sync/{name}/resume")
async def resume(hub: HubDep, user: Admin, form: CheckedForm, name: str) -> Response:
    await controls.set_paused(hub, known(hub, name), False, user.name)
    await audit(hub, user.name, "sync.resume", name)
    return _back(name, "resumed")


def _seconds(value: object) -> int | None:
    """A form's interval: blank is "as configured"; anything but a whole number is refused."""
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        return None
    if not text.isdigit() or len(text) > 9:
        raise ValueError("not a whole number of seconds")
    return int(text)


@router.post("/sync/{name}/schedule")
async def schedule(hub: HubDep, user: Admin, form: CheckedForm, name: str) -> Response:
    known(hub, name)
    try:
        sync_seconds = _seconds(form.get("sync_seconds"))
        poll_seconds = _seconds(form.get("poll_seconds"))
        await controls.set_schedule(hub, name, sync_seconds, poll_seconds, user.name)
    except ValueError:
        return _back(name, "schedule-invalid")
    await audit(hub, user.name, "sync.schedule", name, sync_seconds=sync_seconds, poll_seconds=poll_seconds)
    return _back(name, "schedule")


@router.post("/sync/{name}/replay")
async def replay(hub: HubDep, user: Admin, form: CheckedForm, name: str) -> Response:
    """Replay one dead letter (the form's ``id``) or, without one, every dead letter of the connector."""
    known(hub, name)
    raw = form.get("id")
    item = int(raw) if isinstance(raw, str) and raw.isdigit() and len(raw) < 10 else None
    if raw not in (None, "") and item is None:
        raise HTTPException(422, "id must be a dead letter's number")
    requeued = await hub.sync.replay(name, [item] if item is not None else None)
    await audit(hub, user.name, "sync.replay", name, id=item, requeued=requeued)
    return _back(name, "replay", count=requeued)
