"""Who is signed in to the cockpit, in which role, and what they did.

Two roles: a **viewer** sees the dashboards, answers, people and sync state; an **admin** may also act (run a
sync, re-sync, pause, replay, opt people out or in, export or erase a person, manage users). Page routes
take the user as a dependency, ``Viewer`` or ``Admin``: without a session the browser is sent to the login,
and a viewer asking for an admin's action (a link or a hand-made POST alike) gets a 403. Every form is
CSRF-protected (``checked_form``), and every action is written to the audit log (``audit``) before its
answer goes out.

Who may sign in: the named users of ``admin_users`` (``cxhub user add``, ``/admin/users``; Argon2id hashes,
see ``hub.accounts``) and, with ``hub.admin_password`` set, the built-in admin ``admin``. With neither the
cockpit does not exist (404), except in the demo, where a request from this machine's loopback address acts
as the admin ``demo``. A session is a signed cookie (itsdangerous, keyed with the hub's secret) that carries
the user's name, when it began and when it was last used, and what ends it early: the user's
``session_epoch`` (raised by a password change or removal) or, for the built-in admin, a fingerprint of the
password. It ends after ``hub.admin_session_idle_minutes`` without a request and ``hub.admin_session_hours``
after the sign-in; the cookie is re-issued as the user moves (sliding), at most once a minute.

The API (``/api/v1``) authenticates with its bearer token instead and acts as the admin ``api``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import ip_address
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.responses import Response
from itsdangerous import BadSignature, URLSafeSerializer
from starlette.datastructures import FormData

from hub import accounts
from hub.app import Hub
from hub.store.tables import AuditEntry
from hub.web.deps import HubDep, client_address
from hub.web.protection import form_csrf_valid

#: what the CSRF token of the cockpit's forms is bound to (the survey pages bind theirs to the survey token)
CSRF_SCOPE = "admin"
SESSION_COOKIE = "cxhub_admin"
#: the user the demo's loopback requests act as
DEMO_USER = "demo"
#: a session's cookie is re-issued (its idle time restarted) at most this often
REISSUE_SECONDS = 60
_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
_STATE = "cockpit_user"
_REISSUE = "cockpit_cookie"


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


@dataclass(frozen=True)
class Session:
    """What a session cookie says: who, how they signed in (``builtin``, ``user``, ``sso``), what ends it
    early (``key``: the epoch or the password fingerprint), and since when (Unix seconds)."""

    user: User
    kind: str
    key: str
    began: float
    seen: float

    def payload(self) -> dict[str, Any]:
        return {
            "u": self.user.name,
            "r": self.user.role.value,
            "k": self.kind,
            "e": self.key,
            "b": self.began,
            "s": self.seen,
        }


# --- who may enter --------------------------------------------------------------------------------------------


def builtin_password(hub: Hub) -> str | None:
    """``hub.admin_password``, the built-in admin's; None when unset."""
    configured = hub.config.hub.admin_password
    value = configured.get_secret_value() if configured is not None else ""
    return value or None


def fingerprint(hub: Hub, password: str) -> str:
    return hmac.new(hub.secret_key.encode(), password.encode(), hashlib.sha256).hexdigest()[:32]


def is_local(request: Request) -> bool:
    """A request straight from this machine (not forwarded by a proxy)."""
    if any(name in request.headers for name in _PROXY_HEADERS):
        return False
    try:
        return ip_address(client_address(request)).is_loopback
    except ValueError:
        return False


async def cockpit_on(hub: Hub) -> bool:
    """Whether anyone can sign in: the built-in admin's password or single sign-on is set up, or a named user
    exists."""
    if builtin_password(hub) is not None or hub.config.hub.sso is not None:
        return True
    async with hub.store.session() as s:
        return await accounts.any_users(s)


async def open_without_login(request: Request, hub: Hub) -> bool:
    """The demo's exception: no way to sign in is configured, and the request comes from this machine."""
    return hub.config.hub.demo and is_local(request) and not await cockpit_on(hub)


def _serializer(hub: Hub) -> URLSafeSerializer:
    return URLSafeSerializer(hub.secret_key, salt="cxhub.admin.session")


def _read_cookie(request: Request, hub: Hub) -> Session | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    try:
        data = _serializer(hub).loads(cookie)
        return Session(
            User(str(data["u"]), Role(data["r"])),
            str(data["k"]),
            str(data["e"]),
            float(data["b"]),
            float(data["s"]),
        )
    except (BadSignature, KeyError, TypeError, ValueError):
        return None


async def _still_valid(hub: Hub, session: Session) -> User | None:
    """The session's user as of now (a role changed since the sign-in counts), or None when it was ended."""
    now = hub.now().timestamp()
    settings = hub.config.hub
    if now - session.seen > settings.admin_session_idle_minutes * 60:
        return None
    if now - session.began > settings.admin_session_hours * 3600 or session.seen > now + REISSUE_SECONDS:
        return None
    if session.kind == "builtin":
        password = builtin_password(hub)
        if password is None or not hmac.compare_digest(session.key, fingerprint(hub, password)):
            return None
        return User(accounts.BUILTIN_ADMIN, Role.ADMIN)
    if session.kind == "user":
        async with hub.store.session() as s:
            row = await accounts.find(s, session.user.name)
        if row is None or str(row.session_epoch) != session.key:
            return None
        return User(row.name, Role(row.role))
    if session.kind == "sso" and hub.config.hub.sso is not None:
        return session.user
    return None


async def session_user(request: Request, hub: Hub) -> User | None:
    """The signed-in user of this request (looked up once per request), None without a live session."""
    if hasattr(request.state, _STATE):
        found: User | None = getattr(request.state, _STATE)
        return found
    user: User | None = None
    if await open_without_login(request, hub):
        user = User(DEMO_USER, Role.ADMIN)
    else:
        session = _read_cookie(request, hub)
        user = await _still_valid(hub, session) if session is not None else None
        if session is not None and user is not None:
            now = hub.now().timestamp()
            if now - session.seen >= REISSUE_SECONDS:
                moved = Session(user, session.kind, session.key, session.began, now)
                setattr(request.state, _REISSUE, moved)
    setattr(request.state, _STATE, user)
    return user


def has_session(request: Request) -> bool:
    """Whether this request's user came with a session cookie (and so may sign out): not the demo's."""
    user = getattr(request.state, _STATE, None)
    return isinstance(user, User) and request.cookies.get(SESSION_COOKIE) is not None


def set_session(response: Response, request: Request, hub: Hub, session: Session) -> None:
    """Put ``session`` in its cookie on ``response``; the cookie lives no longer than the session may."""
    left = session.began + hub.config.hub.admin_session_hours * 3600 - hub.now().timestamp()
    response.set_cookie(
        SESSION_COOKIE,
        _serializer(hub).dumps(session.payload()),
        max_age=max(int(left), 0),
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def slide(response: Response, request: Request, hub: Hub) -> None:
    """Re-issue the session cookie with its idle time restarted, when this request's lookup asked for it."""
    moved = getattr(request.state, _REISSUE, None)
    if isinstance(moved, Session):
        set_session(response, request, hub, moved)


def new_session(hub: Hub, user: User, kind: str, key: str) -> Session:
    now = hub.now().timestamp()
    return Session(user, kind, key, now, now)


async def sign_in(hub: Hub, name: str, password: str) -> Session | None:
    """A new session when ``password`` is the user's; a named user wins over the built-in ``admin``.

    An unknown name is checked against a dummy hash, so the answer takes as long as for a known one."""
    builtin = builtin_password(hub)
    async with hub.store.session() as s:
        named = await accounts.find(s, name) if accounts.NAME.fullmatch(name) else None
        if named is None and builtin is not None and name == accounts.BUILTIN_ADMIN:
            if hmac.compare_digest(password.encode(), builtin.encode()):
                return new_session(hub, User(name, Role.ADMIN), "builtin", fingerprint(hub, builtin))
            return None
        row = await accounts.authenticate(s, name, password)
        if row is None:
            return None
        return new_session(hub, User(row.name, Role(row.role)), "user", str(row.session_epoch))


async def login_required(request: Request, hub: Hub) -> HTTPException:
    """What a request without a session gets: 404 while the cockpit is off, else a redirect to the login."""
    if not await cockpit_on(hub):
        return HTTPException(404)
    return HTTPException(303, headers={"Location": f"/admin/login?next={request.url.path}"})


# --- the dependencies -----------------------------------------------------------------------------------------


async def current_user(request: Request, hub: HubDep) -> User:
    """The signed-in user. No session: a redirect to the login (303), or 404 while the cockpit is off."""
    user = await session_user(request, hub)
    if user is None:
        raise await login_required(request, hub)
    return user


async def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    """The signed-in user when an admin; a viewer gets 403 (also for a POST made by hand)."""
    if not user.is_admin:
        raise HTTPException(403, "this needs the admin role")
    return user


Viewer = Annotated[User, Depends(current_user)]
Admin = Annotated[User, Depends(admin_user)]


def csrf_ok(request: Request, hub: Hub, form: FormData) -> bool:
    """Whether the form's CSRF field matches the browser's CSRF cookie (the login page answers a mismatch
    with its own message; every other form through ``checked_form``)."""
    return form_csrf_valid(hub.secret_key, request, form, CSRF_SCOPE)


async def checked_form(request: Request, hub: HubDep) -> FormData:
    """The submitted form, once its CSRF field matches the browser's CSRF cookie; 403 otherwise."""
    form = await request.form()
    if not csrf_ok(request, hub, form):
        raise HTTPException(403, "the form had expired: reload the page and try again")
    return form


CheckedForm = Annotated[FormData, Depends(checked_form)]


async def audit(hub: Hub, actor: str, action: str, target: str | None = None, **detail: Any) -> None:
    """Record one action (``sync.run``, ``person.erase``, ``user.add``...) in the audit log."""
    async with hub.store.session() as s:
        s.add(AuditEntry(actor=actor, action=action, target=target, detail=detail or None))
