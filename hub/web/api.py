"""The JSON admin API under ``/api/v1``, behind a bearer token (``hub.api_token``).

Read-only views of responses, people, invitations, sync runs and dead letters, and a replay of dead letters
(recorded in the audit log as the actor ``api``); the sync actions per connector are in ``hub.web.sync_api``.
Every parameter has a type and a range (a page offset fits the database's integers, an id list is short and
holds integers only, not ``true``), so bad input is a 422 that says which parameter, never a 500.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from sqlalchemy import select

from hub.engine import response_record
from hub.engine.conversations import kept_replies
from hub.metrics import connector_health
from hub.models import ResponseRecord
from hub.privacy import erased_person_id
from hub.store.tables import Event, Invitation, Person, RejectedWebhook, Response, SyncRun, WriteBack
from hub.web.cockpit.access import audit
from hub.web.deps import HubDep
from hub.web.protection import require_bearer

#: the largest page offset: far beyond any table, and inside every database's integer range
MAX_OFFSET = 1_000_000_000
#: the largest row id: the id columns are INTEGER, a signed 32-bit integer on PostgreSQL (a bound a JSON
#: client can also hold exactly, unlike 2**63 - 1, which a double rounds up)
MAX_ID = 2**31 - 1
#: ids one replay may name
MAX_REPLAY_IDS = 10_000


async def require_token(hub: HubDep, request: Request) -> None:
    """The API's bearer token (``hub.api_token``); 404 while the API is off."""
    require_bearer(request, hub.config.hub.api_token, "the admin API is off: set hub.api_token to turn it on")


router = APIRouter(prefix="/api/v1", tags=["admin"], dependencies=[Depends(require_token)])
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


class PersonOut(BaseModel):
    id: int
    email: str | None
    phone: str | None
    name: str | None
    language: str | None
    opted_out_at: datetime | None
    #: how the opt-out (or its end) came: the channel (None for the link) and what the person did
    opt_out_channel: str | None = None
    opt_out_reason: str | None = None


class InvitationOut(BaseModel):
    id: int
    campaign: str
    person_id: int | None
    connector: str
    record_id: str
    status: str
    reason: str | None
    channel: str | None
    send_after: datetime | None
    sent_at: datetime | None
    created_at: datetime
    #: the provider's most final report on the message (sent, delivered, undelivered, ...); None: no report
    delivery_status: str | None = None
    delivery_error: str | None = None
    #: where a conversation by reply is (asked_again, awaiting_comment, commented); None: none began
    conversation: str | None = None


class SyncRunOut(BaseModel):
    id: int
    connector: str
    kind: str
    started_at: datetime
    finished_at: datetime | None
    watermark: str | None
    events: int
    written: int
    retried: int
    dead: int
    error: str | None


class DeadLetterOut(BaseModel):
    id: int
    connector: str
    kind: str
    key: str
    record_id: str
    attempts: int
    last_error: str | None
    updated_at: datetime


class RejectedOut(BaseModel):
    """A webhook or inbound request the hub refused, kept so an admin can see what was sent and why."""

    id: int
    target: str
    received_at: datetime
    status_code: int
    reason: str
    headers: dict[str, Any]
    body: str
    #: the size of the whole body in bytes; ``body`` holds its beginning when it was larger
    body_size: int | None = None


def rejected_out(r: RejectedWebhook) -> RejectedOut:
    return RejectedOut(
        id=r.id,
        target=r.target,
        received_at=r.received_at,
        status_code=r.status_code,
        reason=r.reason,
        headers=r.headers,
        body=r.body.decode("utf-8", errors="replace"),
        body_size=r.body_size,
    )


def _json_integer(value: Any) -> Any:
    """An integer as JSON Schema means it: 7 and 7.0 are integers, ``true`` and ``"7"`` are not (a bool is an
    int to Python, and would replay the dead letter with id 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("must be an integer")
    return int(value)


RowId = Annotated[int, Field(ge=1, le=MAX_ID), BeforeValidator(_json_integer)]


class ReplayRequest(BaseModel):
    """Which dead letters to re-queue: all (nothing given), one connector's, and/or the given ids."""

    model_config = ConfigDict(extra="forbid", strict=True)

    connector: str | None = Field(None, min_length=1, max_length=100)
    ids: list[RowId] | None = Field(
        None,
        min_length=1,
        max_length=MAX_REPLAY_IDS,
        description="omit to replay every dead letter (of the connector); an empty list is refused",
    )


class ReplayResult(BaseModel):
    requeued: int


def _rows(rows: Any, model: type[BaseModel]) -> list[Any]:
    return [model.model_validate(r, from_attributes=True) for r in rows]


@router.get("/responses", response_model=list[ResponseRecord])
async def list_responses(hub: HubDep, limit: Limit = 100, offset: Offset = 0) -> list[ResponseRecord]:
    async with hub.store.session() as s:
        rows = await s.scalars(
            select(Response).order_by(Response.answered_at.desc()).limit(limit).offset(offset)
        )
        return [response_record(r) for r in rows]


@router.get("/people", response_model=list[PersonOut])
async def list_people(hub: HubDep, limit: Limit = 100, offset: Offset = 0) -> list[Any]:
    """The people the hub knows; not the row that keeps erased people's answers, which stands for nobody."""
    async with hub.store.session() as s:
        erased = await erased_person_id(s)
        query = select(Person).where(Person.id != erased) if erased is not None else select(Person)
        return _rows(await s.scalars(query.order_by(Person.id).limit(limit).offset(offset)), PersonOut)


@router.get("/invitations", response_model=list[InvitationOut])
async def list_invitations(
    hub: HubDep,
    limit: Limit = 100,
    offset: Offset = 0,
    status: Annotated[str | None, Query(max_length=20)] = None,
) -> list[InvitationOut]:
    q = select(Invitation, Event).join(Event, Event.id == Invitation.event_pk)
    if status:
        q = q.where(Invitation.status == status)
    async with hub.store.session() as s:
        rows = (await s.execute(q.order_by(Invitation.id.desc()).limit(limit).offset(offset))).all()
    return [
        InvitationOut(
            id=i.id,
            campaign=i.campaign,
            person_id=i.person_id,
            connector=e.connector,
            record_id=e.record_id,
            status=i.status,
            reason=i.reason,
            channel=i.channel,
            send_after=i.send_after,
            sent_at=i.sent_at,
            created_at=i.created_at,
            delivery_status=i.delivery_status,
            delivery_error=i.delivery_error,
            conversation=i.conversation,
        )
        for i, e in rows
    ]


@router.get("/sync-runs", response_model=list[SyncRunOut])
async def list_sync_runs(hub: HubDep, limit: Limit = 100, offset: Offset = 0) -> list[Any]:
    async with hub.store.session() as s:
        rows = await s.scalars(select(SyncRun).order_by(SyncRun.id.desc()).limit(limit).offset(offset))
        return _rows(rows, SyncRunOut)


@router.get("/dead-letters", response_model=list[DeadLetterOut])
async def list_dead_letters(hub: HubDep, limit: Limit = 100, offset: Offset = 0) -> list[Any]:
    async with hub.store.session() as s:
        rows = await s.scalars(
            select(WriteBack)
            .where(WriteBack.state == "dead")
            .order_by(WriteBack.id)
            .limit(limit)
            .offset(offset)
        )
        return _rows(rows, DeadLetterOut)


@router.get("/rejected-webhooks", response_model=list[RejectedOut])
async def list_rejected_webhooks(hub: HubDep, limit: Limit = 100, offset: Offset = 0) -> list[RejectedOut]:
    async with hub.store.session() as s:
        rows = await s.scalars(
            select(RejectedWebhook).order_by(RejectedWebhook.id.desc()).limit(limit).offset(offset)
        )
        return [rejected_out(r) for r in rows]


class ReplyOut(BaseModel):
    """A reply through a channel the hub kept instead of using: from nobody it surveyed (unmatched), or no
    score after it asked once (not_a_score). Never guessed: an admin reads them here or at /admin/replies."""

    id: int
    channel: str
    sender: str
    text: str
    received_at: datetime
    outcome: str
    reason: str | None
    invitation_id: int | None


@router.get("/replies", response_model=list[ReplyOut])
async def list_kept_replies(hub: HubDep, limit: Limit = 100, offset: Offset = 0) -> list[Any]:
    async with hub.store.session() as s:
        return _rows(await kept_replies(s, limit, offset), ReplyOut)


class ConnectorOut(BaseModel):
    name: str
    last_poll_ok: datetime | None
    last_sync_ok: datetime | None
    login_failing: bool
    last_error: str | None


@router.get("/connectors", response_model=list[ConnectorOut])
async def list_connectors(hub: HubDep) -> list[ConnectorOut]:
    """Each connector's link to its CRM, from what every process recorded: the last poll and sync that got
    through, and whether its login keeps failing (then with the CRM's last error)."""
    health = await connector_health(hub.store, hub.connectors)
    return [
        ConnectorOut(
            name=name,
            last_poll_ok=found.last_poll_ok,
            last_sync_ok=found.last_sync_ok,
            login_failing=found.login_failing,
            last_error=found.last_error,
        )
        for name, found in health.items()
    ]


@router.post(
    "/dead-letters/replay",
    response_model=ReplayResult,
    responses={400: {"description": "the body cannot be parsed (not UTF-8 JSON)"}},
)
async def replay_dead_letters(hub: HubDep, body: ReplayRequest) -> ReplayResult:
    requeued = await hub.sync.replay(body.connector, body.ids)
    await audit(hub, "api", "sync.replay", body.connector, ids=body.ids, requeued=requeued)
    return ReplayResult(requeued=requeued)
