"""``/admin/people``: find a person, read their story, and act on a privacy request.

Viewers search (name, email or phone) and open a person: their contact data, identities per CRM, every
invitation with why it was sent or suppressed (``hub.explain``, what ``cxhub explain`` prints), their
answers, the write-backs to each CRM and their opt-out. Admins may opt them out or in (through the engine's
one opt-out path, so each CRM gets a write-back), download everything the hub holds about them, and erase
them after a confirmation step (``hub.privacy``, shared with ``cxhub person`` and the API).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from hub.explain import invitation_lines, notes
from hub.people import search_people
from hub.privacy import erase_person, erased_person_id, export_person
from hub.store.tables import Identity, Person, WriteBack
from hub.store.tables import Response as Answer
from hub.web.api_people import person_or_404
from hub.web.cockpit.access import Admin, CheckedForm, Viewer, audit
from hub.web.cockpit.i18n import page_language, translator
from hub.web.cockpit.render import render
from hub.web.deps import HubDep

router = APIRouter(prefix="/admin", include_in_schema=False)

PAGE_SIZE = 25
#: the largest id a path may name: the id columns are 32-bit integers on PostgreSQL
MAX_ID = 2**31 - 1
PersonId = Annotated[int, Path(ge=1, le=MAX_ID)]
#: what the page may say after an action (``?done=``); the texts are in the templates
DONE = ("opted-out", "opted-in", "unchanged", "erased")


@router.get("/people", response_class=HTMLResponse)
async def people(
    request: Request,
    hub: HubDep,
    user: Viewer,
    q: Annotated[str, Query(max_length=200)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    done: str | None = None,
) -> Response:
    async with hub.store.session() as s:
        erased = await erased_person_id(s)
        found, total = await search_people(s, q, PAGE_SIZE, (page - 1) * PAGE_SIZE, exclude=erased)
    return render(
        request,
        hub,
        "admin/people.html",
        user,
        query=q,
        people=found,
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
        done=done if done in DONE else None,
    )


async def _person_or_404(hub: HubDep, person_id: int) -> Person:
    async with hub.store.session() as s:
        person = await s.get(Person, person_id)
        if person is None or person.id == await erased_person_id(s):
            raise HTTPException(404, "no such person")
        return person


@router.get("/people/{person_id}", response_class=HTMLResponse)
async def person_page(
    request: Request, hub: HubDep, user: Viewer, person_id: PersonId, done: str | None = None
) -> Response:
    _ = translator(page_language(request))
    person = await _person_or_404(hub, person_id)
    async with hub.store.session() as s:
        identities = list(
            await s.scalars(
                select(Identity).where(Identity.person_id == person_id).order_by(Identity.connector)
            )
        )
        lines = await invitation_lines(s, person_id, _)
        answers = list(
            await s.scalars(
                select(Answer).where(Answer.person_id == person_id).order_by(Answer.answered_at.desc())
            )
        )
        write_backs = list(
            await s.scalars(
                select(WriteBack)
                .where(WriteBack.person_id == person_id)
                .order_by(WriteBack.connector, WriteBack.id)
            )
        )
    by_crm: dict[str, list[WriteBack]] = {}
    for item in write_backs:
        by_crm.setdefault(item.connector, []).append(item)
    return render(
        request,
        hub,
        "admin/person.html",
        user,
        person=person,
        notes=notes(person, _),
        identities=identities,
        invitations=lines,
        answers=answers,
        write_backs=by_crm,
        done=done if done in DONE else None,
    )


async def _opt(hub: HubDep, user: Admin, person_id: int, opted_out: bool) -> Response:
    await _person_or_404(hub, person_id)
    how = "opted out" if opted_out else "opted in"
    changed = await hub.engine.optouts.by_id(person_id, opted_out, None, f"{how} by an admin in the cockpit")
    action = "person.opt_out" if opted_out else "person.opt_in"
    await audit(hub, user.name, action, f"person:{person_id}", changed=changed)
    outcome = ("opted-out" if opted_out else "opted-in") if changed else "unchanged"
    return RedirectResponse(f"/admin/people/{person_id}?done={outcome}", status_code=303)


@router.post("/people/{person_id}/opt-out")
async def opt_out(hub: HubDep, user: Admin, _form: CheckedForm, person_id: PersonId) -> Response:
    return await _opt(hub, user, person_id, True)


@router.post("/people/{person_id}/opt-in")
async def opt_in(hub: HubDep, user: Admin, _form: CheckedForm, person_id: PersonId) -> Response:
    return await _opt(hub, user, person_id, False)


@router.post("/people/{person_id}/export")
async def export(hub: HubDep, user: Admin, _form: CheckedForm, person_id: PersonId) -> Response:
    """The person's data as a JSON download; the export is in the audit log (``hub.privacy``)."""
    with person_or_404(person_id):
        data = await export_person(hub.store, person_id, user.name)
    return Response(
        data.model_dump_json(indent=2),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="person-{person_id}.json"',
            "Cache-Control": "no-store",
        },
    )


async def _confirm_page(
    request: Request, hub: HubDep, user: Admin, person_id: int, error: str | None = None
) -> Response:
    person = await _person_or_404(hub, person_id)
    return render(
        request,
        hub,
        "admin/person_erase.html",
        user,
        status=400 if error else 200,
        person=person,
        error=error,
    )


@router.get("/people/{person_id}/erase", response_class=HTMLResponse)
async def erase_confirmation(request: Request, hub: HubDep, user: Admin, person_id: PersonId) -> Response:
    """The confirmation step: what goes, what stays, and a box to tick."""
    return await _confirm_page(request, hub, user, person_id)


@router.post("/people/{person_id}/erase")
async def erase(
    request: Request, hub: HubDep, user: Admin, form: CheckedForm, person_id: PersonId
) -> Response:
    if form.get("confirm") != "yes":
        _ = translator(page_language(request))
        return await _confirm_page(request, hub, user, person_id, _("Tick the box to confirm the erase."))
    with person_or_404(person_id):
        await erase_person(hub.store, person_id, user.name)
    return RedirectResponse("/admin/people?done=erased", status_code=303)
