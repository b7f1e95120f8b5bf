"""The admin pages: a login, and in demo mode ``/admin/mailbox``, the local mail catcher's messages. The home
page, ``/admin``, is the cockpit's dashboard (``hub.web.cockpit.dashboard``).

Access (who may sign in, sessions, roles: ``hub.web.cockpit.access``). The login form takes a user name and
password, is CSRF-protected and rate-limited, records each sign-in in the audit log, and sets the signed,
HttpOnly, SameSite=Strict session cookie. In the demo with no way to sign in configured, requests from this
machine's loopback address enter without a login; a request that came through a proxy
(``Forwarded``/``X-Forwarded-For``/``X-Real-IP``) is never taken as local, since behind a local reverse proxy
every client looks local.

The mailbox reads the catcher's Maildir folder (``hub.mailbox_dir``) with the standard ``mailbox`` module, so
the core never imports the email plugin. A message's HTML is shown in a sandboxed iframe whose document comes
from a separate route with its own strict CSP (``sandbox``, no script, no requests except images): mail HTML
is untrusted input.
"""

from __future__ import annotations

import asyncio
import mailbox
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from hub import accounts
from hub.app import Hub
from hub.web.cockpit.access import (
    SESSION_COOKIE,
    Role,
    User,
    audit,
    cockpit_on,
    csrf_ok,
    login_required,
    open_without_login,
    session_user,
    set_session,
    sign_in,
)
from hub.web.cockpit.i18n import page_language, translator
from hub.web.cockpit.render import render
from hub.web.deps import HubDep, client_address
from hub.web.protection import RateLimiter
from hub.web.survey import secure

router = APIRouter(prefix="/admin", include_in_schema=False)

__all__ = ["SESSION_COOKIE", "router"]
#: what a Maildir key may look like (``<time>.<unique>.<host>``); anything else is not looked up
MAIL_KEY = re.compile(r"[A-Za-z0-9._,:=+-]{1,200}")
MAX_LISTED = 200
_URL = re.compile(r"https?://[^\s<>\"']+")
_HEAD = re.compile(r"<head\b[^>]*>", re.IGNORECASE)
_DOCTYPE = re.compile(r"\s*<!doctype[^>]*>", re.IGNORECASE)
_PARSER = BytesParser(policy=policy.default)

#: the HTML part of a message: sandboxed even when opened on its own; only its links may open new tabs
MAIL_HTML_POLICY = (
    "sandbox allow-popups allow-popups-to-escape-sandbox; default-src 'none'; img-src data: https: http:; "
    "style-src 'unsafe-inline'; font-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)


# --- who may enter --------------------------------------------------------------------------------------------


async def require_admin(request: Request, hub: Hub, *, role: Role = Role.VIEWER) -> Response | None:
    """None when the request's user may see this page (``role``: the least role it needs); else a redirect
    to the login. 404 while the cockpit is off; 403 for a viewer where an admin is needed."""
    user = await session_user(request, hub)
    if user is None:
        denied = await login_required(request, hub)
        if denied.status_code == 404:
            raise denied
        return RedirectResponse(f"/admin/login?next={request.url.path}", status_code=303)
    if role is Role.ADMIN and not user.is_admin:
        raise HTTPException(403, "this needs the admin role")
    return None


def safe_next(target: str | None, hub: Hub) -> str:
    """Only a path inside the admin pages: a login must not redirect anywhere else. Without one: the
    mailbox in the demo, else the home page (both exist)."""
    inside = target is not None and (target == "/admin" or target.startswith("/admin/"))
    if target and inside and "//" not in target and "\\" not in target:
        return target
    return "/admin/mailbox" if hub.config.hub.demo else "/admin"


def _limiter(request: Request) -> RateLimiter:
    found = getattr(request.app.state, "admin_login_limit", None)
    if not isinstance(found, RateLimiter):
        found = RateLimiter(limit=10, window_seconds=60)
        request.app.state.admin_login_limit = found
    return found


# --- rendering ------------------------------------------------------------------------------------------------


def _render(request: Request, hub: Hub, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page for the user ``require_admin`` found for this request (None on the login page)."""
    user = getattr(request.state, "cockpit_user", None)
    return render(request, hub, name, user if isinstance(user, User) else None, status, **context)


async def _csrf_ok(request: Request, hub: Hub) -> bool:
    return csrf_ok(request, hub, await request.form())


# --- login ----------------------------------------------------------------------------------------------------


def _login_page(
    request: Request, hub: Hub, target: str, status: int = 200, error: str | None = None
) -> Response:
    sso = hub.config.hub.sso is not None
    return render(request, hub, "admin/login.html", None, status, next=target, error=error, sso=sso)


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, hub: HubDep, next: str | None = None) -> Response:
    if not await cockpit_on(hub):
        if await open_without_login(request, hub):
            return RedirectResponse(safe_next(next, hub), status_code=303)
        raise HTTPException(404)
    return _login_page(request, hub, safe_next(next, hub))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, hub: HubDep) -> Response:
    if not await cockpit_on(hub):
        raise HTTPException(404)
    form = await request.form()
    target = safe_next(str(form.get("next") or ""), hub)
    _ = translator(page_language(request))
    if not _limiter(request).allow(client_address(request)):
        return _login_page(request, hub, target, 429, _("Too many attempts. Wait a minute and try again."))
    if not await _csrf_ok(request, hub):
        return _login_page(request, hub, target, 403, _("The form had expired. Please sign in again."))
    name, given = form.get("username"), form.get("password")
    session = None
    if isinstance(name, str) and isinstance(given, str) and 0 < len(given) <= accounts.MAX_PASSWORD:
        session = await sign_in(hub, name.strip(), given)
    if session is None:
        return _login_page(request, hub, target, 401, _("Wrong user name or password."))
    await audit(hub, session.user.name, "user.login", session.user.name, via=session.kind)
    response = RedirectResponse(target, status_code=303)
    set_session(response, request, hub, session)
    return response


@router.post("/logout", response_class=HTMLResponse)
async def logout(request: Request, hub: HubDep) -> Response:
    if not await _csrf_ok(request, hub):
        raise HTTPException(403)
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/admin")
    return response


# --- the mailbox ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MailItem:
    """One caught message as the list shows it (``subject`` is empty when it has none: the page says so in
    its own language)."""

    key: str
    subject: str
    sender: str
    to: str
    sent_at: datetime


def mailbox_path(hub: Hub) -> Path | None:
    """``hub.mailbox_dir``, a relative path taken from the config file's folder; None when unset."""
    configured = hub.config.hub.mailbox_dir
    if not configured:
        return None
    path = Path(configured).expanduser()
    return path if path.is_absolute() else hub.config.source.parent / path


def _open(path: Path) -> mailbox.Maildir | None:
    if not (path / "new").is_dir() or not (path / "cur").is_dir():
        return None
    return mailbox.Maildir(path, factory=None, create=False)


def _sent_at(message: EmailMessage, fallback: float) -> datetime:
    header = message.get("date")
    moment = getattr(header, "datetime", None)
    if isinstance(moment, datetime):
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return datetime.fromtimestamp(fallback, UTC)


def list_mail(path: Path, limit: int = MAX_LISTED) -> list[MailItem]:
    """The newest ``limit`` messages in a Maildir, newest first; empty when the folder has none (yet)."""
    box = _open(path)
    if box is None:
        return []
    items = []
    for key in box.iterkeys():
        try:
            raw = box.get_bytes(key)
            received = box.get_message(key).get_date()
        except (KeyError, FileNotFoundError):  # removed while we read
            continue
        message = _PARSER.parsebytes(raw, headersonly=True)
        assert isinstance(message, EmailMessage)
        items.append(
            MailItem(
                key=key,
                subject=str(message.get("subject", "")),
                sender=str(message.get("from", "")),
                to=str(message.get("to", "")) or ", ".join(map(str, message.get_all("x-envelope-to", []))),
                sent_at=_sent_at(message, received),
            )
        )
    items.sort(key=lambda item: (item.sent_at, item.key), reverse=True)
    return items[:limit]


def read_mail(path: Path, key: str) -> EmailMessage | None:
    if not MAIL_KEY.fullmatch(key):
        return None
    box = _open(path)
    if box is None:
        return None
    try:
        raw = box.get_bytes(key)
    except (KeyError, FileNotFoundError):
        return None
    message = _PARSER.parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def body_of(message: EmailMessage, subtype: str) -> str | None:
    """The decoded ``text/<subtype>`` body, None when the message has none."""
    part = message.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_subtype() != subtype:
        return None
    content = part.get_content()
    return content.replace("\r\n", "\n") if isinstance(content, str) else None


def with_links(plain: str) -> list[tuple[str, bool]]:
    """Split a text into (piece, is_url) so the page can make the URLs clickable without trusting the text."""
    pieces: list[tuple[str, bool]] = []
    position = 0
    for match in _URL.finditer(plain):
        url = match.group(0).rstrip(".,;:!?)")
        if match.start() > position:
            pieces.append((plain[position : match.start()], False))
        pieces.append((url, True))
        position = match.start() + len(url)
    if position < len(plain):
        pieces.append((plain[position:], False))
    return pieces


def open_links_in_new_tabs(html: str) -> str:
    """Add ``<base target="_blank">`` (after ``<head>`` or the doctype, keeping standards mode): inside the
    sandbox a link could not leave the frame."""
    base = '<base target="_blank">'
    found = _HEAD.search(html) or _DOCTYPE.match(html)
    if found is None:
        return base + html
    return html[: found.end()] + base + html[found.end() :]


async def _demo_mailbox(request: Request, hub: Hub) -> Response | Path | None:
    """The gate of the mailbox pages: the Maildir's path, None when unset, or a response to send instead."""
    if not hub.config.hub.demo:
        raise HTTPException(404)
    denied = await require_admin(request, hub)
    if denied is not None:
        return denied
    return mailbox_path(hub)


@router.get("/mailbox", response_class=HTMLResponse)
async def mailbox_list(request: Request, hub: HubDep) -> Response:
    path = await _demo_mailbox(request, hub)
    if isinstance(path, Response):
        return path
    items = await asyncio.to_thread(list_mail, path) if path is not None else []
    return _render(request, hub, "admin/mailbox.html", configured=path is not None, items=items)


async def _message_or_404(request: Request, hub: Hub, key: str) -> Response | EmailMessage:
    path = await _demo_mailbox(request, hub)
    if isinstance(path, Response):
        return path
    message = await asyncio.to_thread(read_mail, path, key) if path is not None else None
    if message is None:
        raise HTTPException(404)
    return message


@router.get("/mailbox/{key}", response_class=HTMLResponse)
async def mailbox_message(key: str, request: Request, hub: HubDep) -> Response:
    message = await _message_or_404(request, hub, key)
    if isinstance(message, Response):
        return message
    plain = body_of(message, "plain")
    return _render(
        request,
        hub,
        "admin/mail.html",
        key=key,
        subject=str(message.get("subject", "")),
        headers=[(name, str(message.get(name))) for name in ("from", "to", "date") if message.get(name)],
        has_html=body_of(message, "html") is not None,
        text=with_links(plain) if plain is not None else None,
    )


@router.get("/mailbox/{key}/html", response_class=HTMLResponse)
async def mailbox_message_html(key: str, request: Request, hub: HubDep) -> Response:
    message = await _message_or_404(request, hub, key)
    if isinstance(message, Response):
        return message
    html = body_of(message, "html")
    if html is None:
        raise HTTPException(404)
    response = HTMLResponse(open_links_in_new_tabs(html))
    secure(response, MAIL_HTML_POLICY)
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response
