"""The admin pages: a login, and in demo mode ``/admin/mailbox``, the local mail catcher's messages. The home
page, ``/admin``, is the cockpit's dashboard (``hub.web.cockpit.dashboard``).

Access. With ``hub.admin_password`` set, every admin page needs a login as user ``admin``; the login form is
CSRF-protected and rate-limited, and a successful login sets a signed, HttpOnly, SameSite=Strict session
cookie (itsdangerous, keyed with the hub's secret) that also carries a fingerprint of the password, so
changing the password ends every session. Without a password the admin pages do not exist (404), with one
exception for the demo: with ``hub.demo = true`` and no password, requests from this machine's loopback
address are let in without a login. A request that came through a proxy (``Forwarded``/``X-Forwarded-For``/
``X-Real-IP``) is never taken as local, since behind a local reverse proxy every client looks local.

The mailbox reads the catcher's Maildir folder (``hub.mailbox_dir``) with the standard ``mailbox`` module, so
the core never imports the email plugin. A message's HTML is shown in a sandboxed iframe whose document comes
from a separate route with its own strict CSP (``sandbox``, no script, no requests except images): mail HTML
is untrusted input.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import mailbox
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from hub.app import Hub
from hub.web.cockpit.access import Role, User
from hub.web.cockpit.render import render
from hub.web.deps import HubDep, client_address
from hub.web.protection import CSRF_COOKIE, RateLimiter, csrf_valid
from hub.web.survey import secure

router = APIRouter(prefix="/admin", include_in_schema=False)

USER = "admin"
SESSION_COOKIE = "cxhub_admin"
SESSION_SECONDS = 12 * 3600
#: what a Maildir key may look like (``<time>.<unique>.<host>``); anything else is not looked up
MAIL_KEY = re.compile(r"[A-Za-z0-9._,:=+-]{1,200}")
MAX_LISTED = 200
_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
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


def _password(hub: Hub) -> str | None:
    configured = hub.config.hub.admin_password
    value = configured.get_secret_value() if configured is not None else ""
    return value or None


def _fingerprint(hub: Hub, password: str) -> str:
    return hmac.new(hub.secret_key.encode(), password.encode(), hashlib.sha256).hexdigest()[:32]


def _sessions(hub: Hub) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(hub.secret_key, salt="cxhub.admin.session")


def is_local(request: Request) -> bool:
    """A request straight from this machine (not forwarded by a proxy)."""
    if any(name in request.headers for name in _PROXY_HEADERS):
        return False
    try:
        return ip_address(client_address(request)).is_loopback
    except ValueError:
        return False


def open_without_login(request: Request, hub: Hub) -> bool:
    return _password(hub) is None and hub.config.hub.demo and is_local(request)


def signed_in(request: Request, hub: Hub) -> bool:
    if open_without_login(request, hub):
        return True
    password = _password(hub)
    cookie = request.cookies.get(SESSION_COOKIE)
    if password is None or not cookie:
        return False
    try:
        data = _sessions(hub).loads(cookie, max_age=SESSION_SECONDS)
    except BadSignature:
        return False
    return (
        isinstance(data, dict)
        and data.get("user") == USER
        and hmac.compare_digest(str(data.get("password", "")), _fingerprint(hub, password))
    )


def require_admin(request: Request, hub: Hub) -> Response | None:
    """None when the request may see an admin page; else a 404 (admin off) or a redirect to the login."""
    if _password(hub) is None and not open_without_login(request, hub):
        raise HTTPException(404)
    if signed_in(request, hub):
        return None
    return RedirectResponse(f"/admin/login?next={request.url.path}", status_code=303)


def _safe_next(target: str | None, hub: Hub) -> str:
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
    user = User(USER, Role.ADMIN) if signed_in(request, hub) else None
    return render(request, hub, name, user, status, **context)


async def _csrf_ok(request: Request, hub: Hub) -> bool:
    form = await request.form()
    submitted = form.get("csrf")
    return csrf_valid(
        hub.secret_key,
        request.cookies.get(CSRF_COOKIE),
        "admin",
        submitted if isinstance(submitted, str) else None,
    )


# --- login ----------------------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, hub: HubDep, next: str | None = None) -> Response:
    if _password(hub) is None:
        if open_without_login(request, hub):
            return RedirectResponse(_safe_next(next, hub), status_code=303)
        raise HTTPException(404)
    return _render(request, hub, "admin/login.html", next=_safe_next(next, hub))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, hub: HubDep) -> Response:
    password = _password(hub)
    if password is None:
        raise HTTPException(404)
    form = await request.form()
    target = _safe_next(str(form.get("next") or ""), hub)
    if not _limiter(request).allow(client_address(request)):
        error = "Too many attempts. Wait a minute and try again."
        return _render(request, hub, "admin/login.html", status=429, next=target, error=error)
    if not await _csrf_ok(request, hub):
        error = "The form had expired. Please sign in again."
        return _render(request, hub, "admin/login.html", status=403, next=target, error=error)
    user, given = form.get("username"), form.get("password")
    if not (
        isinstance(user, str)
        and isinstance(given, str)
        and hmac.compare_digest(user.encode(), USER.encode())
        and hmac.compare_digest(given.encode(), password.encode())
    ):
        error = "Wrong user name or password."
        return _render(request, hub, "admin/login.html", status=401, next=target, error=error)
    response = RedirectResponse(target, status_code=303)
    session = _sessions(hub).dumps({"user": USER, "password": _fingerprint(hub, password)})
    response.set_cookie(
        SESSION_COOKIE,
        session,
        max_age=SESSION_SECONDS,
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
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
    """One caught message as the list shows it."""

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
                subject=str(message.get("subject", "")) or "(no subject)",
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


def _demo_mailbox(request: Request, hub: Hub) -> Response | Path | None:
    """The gate of the mailbox pages: the Maildir's path, None when unset, or a response to send instead."""
    if not hub.config.hub.demo:
        raise HTTPException(404)
    denied = require_admin(request, hub)
    if denied is not None:
        return denied
    return mailbox_path(hub)


@router.get("/mailbox", response_class=HTMLResponse)
async def mailbox_list(request: Request, hub: HubDep) -> Response:
    path = _demo_mailbox(request, hub)
    if isinstance(path, Response):
        return path
    items = await asyncio.to_thread(list_mail, path) if path is not None else []
    return _render(request, hub, "admin/mailbox.html", configured=path is not None, items=items)


async def _message_or_404(request: Request, hub: Hub, key: str) -> Response | EmailMessage:
    path = _demo_mailbox(request, hub)
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
        subject=str(message.get("subject", "")) or "(no subject)",
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
