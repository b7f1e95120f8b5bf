"""The sync cockpit's JSON API under ``/api/v1/connectors/<name>``: each connector's state and run history, and
the admin's actions (run a sync or a poll now, a full re-sync, pause and resume, the schedule), as the
cockpit's pages offer them (``hub.web.cockpit.sync``), behind the API's bearer token, recorded in the audit log
as the actor ``api``. The logic is ``hub.controls``, shared with the pages, the CLI and the scheduler.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from hub import controls
from hub.app import Hub
from hub.web.api import (
    MAX_OFFSET,
    DeadLetterOut,
    RejectedOut,
    SyncRunOut,
    _json_integer,
    rejected_out,
    require_token,
)
from hub.web.cockpit.access import audit
from hub.web.deps import HubDep

ACTOR = "api"

#: what every route of one connector may answer besides its result
UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"description": "no connector of that name, or it is not enabled"}
}
#: ... and a route with a JSON body
WITH_BODY: dict[int | str, dict[str, Any]] = {
    **UNKNOWN,
    400: {"description": "the body cannot be parsed (not UTF-8 JSON)"},
}
DOES_NOT_POLL: dict[int | str, dict[str, Any]] = {
    **UNKNOWN,
    409: {"description": "the connector does not poll"},
}

router = APIRouter(prefix="/api/v1", tags=["sync"], dependencies=[Depends(require_token)])


def _interval(value: Any) -> Any:
    """null, or an integer as JSON Schema means it (``true`` and ``"60"`` are refused, see ``_json_integer``)."""
    return None if value is None else _json_integer(value)


Interval = Annotated[int | None, Field(ge=0, le=controls.MAX_SECONDS), BeforeValidator(_interval)]


def scheduler_next_runs(request: Request) -> controls.NextRuns | None:
    """The next runs as this process's scheduler has them; None when the scheduler runs in another process."""
    jobs = getattr(request.app.state, "scheduler", None)
    return None if jobs is None else jobs.next_runs


def known(hub: Hub, name: str) -> str:
    """A configured connector's name; 404 for any other."""
    if name not in hub.config.connectors:
        raise HTTPException(404, f'no connector named "{name}"')
    return name


def running(hub: Hub, name: str) -> str:
    """A connector this hub runs (configured and enabled); 404 for a disabled or unknown one."""
    if known(hub, name) not in hub.connectors:
        raise HTTPException(404, f'connector "{name}" is not enabled')
    return name


class ScheduleOut(BaseModel):
    config_cron: str = Field(description="the configured safety-net sync (crontab)")
    config_poll_seconds: float = Field(description="the configured poll interval; 0: no polling")
    sync_seconds: int | None = Field(
        description="the admin's sync interval, replacing the cron; None: the cron"
    )
    poll_seconds: float = Field(description="the poll interval in effect; 0: no polling")


class ConnectorStateOut(BaseModel):
    name: str
    plugin: str
    enabled: bool
    paused: bool
    schedule: ScheduleOut
    changed_by: str | None
    changed_at: datetime | None
    last_sync: SyncRunOut | None
    last_poll: SyncRunOut | None
    watermark: str | None
    queued: dict[str, int] = Field(description="queued write-backs by kind")
    dead: int
    next_sync: datetime | None
    next_poll: datetime | None
    next_source: str = Field(
        description="scheduler: from the scheduler of the answering process; estimate: from the schedule "
        "and the last run (the scheduler runs in another process)"
    )


class ConnectorDetailOut(ConnectorStateOut):
    dead_letters: list[DeadLetterOut]
    rejected_webhooks: list[RejectedOut]


class RunOut(BaseModel):
    """What became of "run now": ``done`` with the run's figures; ``running`` (it goes on in the background);
    ``busy`` (another run holds the connector's lock and writes what is due); ``paused`` (nothing ran)."""

    status: str
    written: int | None = None
    retried: int | None = None
    dead: int | None = None
    events: int | None = None
    error: str | None = None


class ResyncPlanOut(BaseModel):
    items: int = Field(description="write-backs a full re-sync queues again")
    by_kind: dict[str, int]
    batch_size: int
    calls: int = Field(description="calls to the CRM it costs at least: one per batch")


class ResyncOut(BaseModel):
    requeued: int
    run: RunOut


class ScheduleRequest(BaseModel):
    """The admin's schedule: a sync interval replacing the configured cron, and a poll interval (0: no polling);
    null for either: as configured."""

    model_config = ConfigDict(extra="forbid")

    sync_seconds: Interval = None
    poll_seconds: Interval = None


def _run_out(outcome: controls.Outcome) -> RunOut:
    stats = outcome.stats
    if stats is None:
        return RunOut(status=outcome.status)
    return RunOut(
        status=outcome.status,
        written=stats.written,
        retried=stats.retried,
        dead=stats.dead,
        events=stats.events,
        error=stats.error,
    )


def _run(run: Any) -> SyncRunOut | None:
    return None if run is None else SyncRunOut.model_validate(run, from_attributes=True)


def state_out(state: controls.ConnectorState) -> dict[str, Any]:
    schedule = state.schedule
    return {
        "name": state.name,
        "plugin": state.plugin,
        "enabled": state.enabled,
        "paused": state.paused,
        "schedule": ScheduleOut(
            config_cron=schedule.config_cron,
            config_poll_seconds=schedule.config_poll_seconds,
            sync_seconds=schedule.sync_seconds,
            poll_seconds=schedule.poll_seconds,
        ),
        "changed_by": state.updated_by,
        "changed_at": state.updated_at,
        "last_sync": _run(state.last_sync),
        "last_poll": _run(state.last_poll),
        "watermark": state.watermark,
        "queued": state.queued,
        "dead": state.dead,
        "next_sync": state.next_sync,
        "next_poll": state.next_poll,
        "next_source": state.next_source,
    }


@router.get("/connectors/{name}", response_model=ConnectorDetailOut, responses=UNKNOWN)
async def connector_state(hub: HubDep, request: Request, name: str) -> ConnectorDetailOut:
    """One connector: enabled or paused, its schedule, last poll and sync, queue, next runs, newest dead letters
    and rejected webhooks."""
    state = await controls.connector_state(hub, known(hub, name), scheduler_next_runs(request), details=100)
    return ConnectorDetailOut(
        **state_out(state),
        dead_letters=[DeadLetterOut.model_validate(r, from_attributes=True) for r in state.dead_letters],
        rejected_webhooks=[rejected_out(r) for r in state.rejected],
    )


@router.get("/connectors/{name}/runs", response_model=list[SyncRunOut], responses=UNKNOWN)
async def connector_runs(
    hub: HubDep,
    name: str,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[SyncRunOut]:
    """The connector's runs (sync, poll, full), newest first."""
    state = await controls.connector_state(hub, known(hub, name), runs=limit, offset=offset)
    return [SyncRunOut.model_validate(r, from_attributes=True) for r in state.runs]


@router.post("/connectors/{name}/sync", response_model=RunOut, responses=UNKNOWN)
async def sync_now(hub: HubDep, name: str) -> RunOut:
    """Write the connector's due items now (under the lock the scheduled syncs take)."""
    outcome = await controls.run_sync(hub, running(hub, name))
    await audit(hub, ACTOR, "sync.run", name, status=outcome.status)
    return _run_out(outcome)


@router.post("/connectors/{name}/poll", response_model=RunOut, responses=DOES_NOT_POLL)
async def poll_now(hub: HubDep, name: str) -> RunOut:
    """Fetch the connector's new events now; 409 when it does not poll."""
    running(hub, name)
    if not await controls.polls(hub, name):
        raise HTTPException(409, f'connector "{name}" does not poll')
    outcome = await controls.run_poll(hub, name)
    await audit(hub, ACTOR, "sync.poll", name, status=outcome.status)
    return _run_out(outcome)


@router.get("/connectors/{name}/full-resync/plan", response_model=ResyncPlanOut, responses=UNKNOWN)
async def full_resync_plan(hub: HubDep, name: str) -> ResyncPlanOut:
    """What a full re-sync would queue and cost, without doing it."""
    plan = await controls.resync_plan(hub, running(hub, name))
    return ResyncPlanOut(items=plan.items, by_kind=plan.by_kind, batch_size=plan.batch_size, calls=plan.calls)


@router.post("/connectors/{name}/full-resync", response_model=ResyncOut, responses=UNKNOWN)
async def full_resync(hub: HubDep, name: str) -> ResyncOut:
    """Queue every write-back of the connector again (the same keys: the CRM upserts) and write them now."""
    requeued, outcome = await controls.full_resync(hub, running(hub, name))
    await audit(hub, ACTOR, "sync.full", name, requeued=requeued, status=outcome.status)
    return ResyncOut(requeued=requeued, run=_run_out(outcome))


@router.post("/connectors/{name}/pause", response_model=ConnectorStateOut, responses=UNKNOWN)
async def pause(hub: HubDep, request: Request, name: str) -> dict[str, Any]:
    """Stop the connector's scheduled sync and poll; webhooks are still stored, answers still queued."""
    await controls.set_paused(hub, known(hub, name), True, ACTOR)
    await audit(hub, ACTOR, "sync.pause", name)
    return state_out(await controls.connector_state(hub, name, scheduler_next_runs(request)))


@router.post("/connectors/{name}/resume", response_model=ConnectorStateOut, responses=UNKNOWN)
async def resume(hub: HubDep, request: Request, name: str) -> dict[str, Any]:
    await controls.set_paused(hub, known(hub, name), False, ACTOR)
    await audit(hub, ACTOR, "sync.resume", name)
    return state_out(await controls.connector_state(hub, name, scheduler_next_runs(request)))


@router.put("/connectors/{name}/schedule", response_model=ConnectorStateOut, responses=WITH_BODY)
async def set_schedule(hub: HubDep, request: Request, name: str, body: ScheduleRequest) -> dict[str, Any]:
    """Set the sync interval (replacing the configured cron) and the poll interval; null: as configured.
    Intervals are 10 seconds to a week; a poll interval of 0 turns polling off (422 otherwise)."""
    try:
        await controls.set_schedule(hub, known(hub, name), body.sync_seconds, body.poll_seconds, ACTOR)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    await audit(
        hub, ACTOR, "sync.schedule", name, sync_seconds=body.sync_seconds, poll_seconds=body.poll_seconds
    )
    return state_out(await controls.connector_state(hub, name, scheduler_next_runs(request)))
