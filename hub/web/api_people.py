"""The JSON API's privacy actions on one person, under ``/api/v1`` with the API's bearer token: export
everything the hub holds about them, erase them (``hub.privacy``), opt them out or back in (the engine's one
opt-out path, which queues the write-back to each CRM). Each is in the audit log with the actor ``api``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field

from hub.privacy import (
    ErasureCounts,
    PersonExport,
    PersonNotFound,
    erase_person,
    erased_person_id,
    export_person,
)
from hub.store.tables import Person
from hub.web.api import MAX_ID, require_token
from hub.web.cockpit.access import audit
from hub.web.deps import HubDep

ACTOR = "api"
router = APIRouter(prefix="/api/v1", tags=["privacy"], dependencies=[Depends(require_token)])
PersonId = Annotated[int, Path(ge=1, le=MAX_ID, description="the hub's id of the person")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no person with that id"}}
#: an action with a JSON body: also a body that cannot be parsed
WITH_BODY: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND,
    400: {"description": "the body cannot be parsed (not UTF-8 JSON)"},
}


class EraseRequest(BaseModel):
    """An erase cannot be undone: the request says so."""

    model_config = ConfigDict(extra="forbid", strict=True)

    confirm: Literal[True] = Field(description="must be true")


class OptOutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    opted_out: bool = Field(description="true: no more surveys; false: surveys again")
    reason: str = Field(
        "changed through the API", min_length=1, max_length=300, description="why, as the CRM sees it"
    )


class OptOutResult(BaseModel):
    #: false when the person already was in that state (nothing is queued for the CRMs then)
    changed: bool


def _missing(person_id: int) -> HTTPException:
    return HTTPException(404, f"no person with id {person_id}")


@contextmanager
def person_or_404(person_id: int) -> Iterator[None]:
    """A ``PersonNotFound`` inside the block is a 404 (the API's and the cockpit's)."""
    try:
        yield
    except PersonNotFound:
        raise _missing(person_id) from None


@router.get("/people/{person_id}/export", response_model=PersonExport, responses=NOT_FOUND)
async def export_one(hub: HubDep, person_id: PersonId) -> PersonExport:
    """Everything the hub holds about one person."""
    with person_or_404(person_id):
        return await export_person(hub.store, person_id, ACTOR)


@router.post("/people/{person_id}/erase", response_model=ErasureCounts, responses=WITH_BODY)
async def erase_one(hub: HubDep, person_id: PersonId, body: EraseRequest) -> ErasureCounts:
    """Erase one person; their answers stay, anonymised. Returns what was removed, in numbers."""
    with person_or_404(person_id):
        return await erase_person(hub.store, person_id, ACTOR)


@router.post("/people/{person_id}/opt-out", response_model=OptOutResult, responses=WITH_BODY)
async def opt_out_one(hub: HubDep, person_id: PersonId, body: OptOutRequest) -> OptOutResult:
    """Opt one person out of surveys, or back in; their CRMs get the change at the next sync."""
    async with hub.store.session() as s:
        person = await s.get(Person, person_id)
        if person is None or person.id == await erased_person_id(s):
            raise _missing(person_id)
    changed = await hub.engine.optouts.by_id(person_id, body.opted_out, None, body.reason)
    action = "person.opt_out" if body.opted_out else "person.opt_in"
    await audit(hub, ACTOR, action, f"person:{person_id}", changed=changed)
    return OptOutResult(changed=changed)
