"""Who is signed in to the cockpit, in which role, and what they did.

Two roles: a **viewer** sees the dashboards, answers, people and sync state; an **admin** may also act (run a
sync, re-sync, pause, replay, opt people out or in, export or erase a person, manage users). Page routes
take the user as a dependency, ``Viewer`` or ``Admin``: without a session the browser is sent to the login,
and a viewer asking for an admin's action (a link or a hand-made POST alike) gets a 403. Every form is
CSRF-protected (``checked_form``), and every action is written to the audit log (``audit``) before its
answer goes out.

The API (``/api/v1``) authenticates with its bearer token instead and acts as the admin ``api``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from starlette.datastructures import FormData

from hub.app import Hub
from hub.store.tables import AuditEntry
from hub.web.deps import HubDep
from hub.web.protection import CSRF_COOKIE, csrf_valid

#: what the CSRF token of the cockpit's forms is bound to (the survey pages bind theirs to the survey token)
CSRF_SCOPE = "admin"


class Role(StrEnum):
    VIEWER = "viewer"
    ADMIN = "admin"


@dataclass(frozen=True)
class User:
    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


async def current_user(request: Request, hub: HubDep) -> User:
    """The signed-in user. No session: a redirect to the login (303), or 404 while the cockpit is off."""
    from hub.web import admin  # the login lives there; imported late since it renders through this package

    denied = admin.require_admin(request, hub)
    if denied is not None:
        raise HTTPException(303, headers={"Location": denied.headers["location"]})
    return User(admin.USER, Role.ADMIN)


async def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    """The signed-in user when an admin; a viewer gets 403 (also for a POST made by hand)."""
    if not user.is_admin:
        raise HTTPException(403, "this needs the admin role")
    return user


Viewer = Annotated[User, Depends(current_user)]
Admin = Annotated[User, Depends(admin_user)]


async def checked_form(request: Request, hub: HubDep) -> FormData:
    """The submitted form, once its CSRF field matches the browser's CSRF cookie; 403 otherwise."""
    form = await request.form()
    submitted = form.get("csrf")
    if not csrf_valid(
        hub.secret_key,
        request.cookies.get(CSRF_COOKIE),
        CSRF_SCOPE,
        submitted if isinstance(submitted, str) else None,
    ):
        raise HTTPException(403, "the form had expired: reload the page and try again")
    return form


CheckedForm = Annotated[FormData, Depends(checked_form)]


async def audit(hub: Hub, actor: str, action: str, target: str | None = None, **detail: Any) -> None:
    """Record one action (``sync.run``, ``person.erase``, ``user.add``...) in the audit log."""
    async with hub.store.session() as s:
        s.add(AuditEntry(actor=actor, action=action, target=target, detail=detail or None))
