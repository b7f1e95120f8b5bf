"""Admin pages of two-way channels: ``/admin/replies`` and, in the demo, ``/admin/phone``.

``/admin/replies`` lists the replies the hub kept instead of using (from nobody it surveyed, or still no
score after it asked once): they are never guessed onto someone's invitation, so an admin reads them here.

``/admin/phone`` shows the demo's emulated phones (a ``hub.PhoneEmulator`` the demo puts on
``app.state.phone``) as a phone would, one conversation per number, and lets the demo user type a reply,
which the emulator delivers to the hub as its provider would. No script: a form per conversation, and the
page is reloaded after each reply.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from hub.contracts import PhoneEmulator
from hub.engine.conversations import kept_replies
from hub.web.admin import _csrf_ok, _render, require_admin
from hub.web.cockpit.access import Role
from hub.web.cockpit.i18n import page_language, translator
from hub.web.deps import HubDep

router = APIRouter(prefix="/admin", include_in_schema=False)
log = structlog.get_logger("hub.web")

MAX_LISTED = 200
#: the longest reply the phone form takes (a long SMS of 10 segments)
MAX_REPLY = 1600


@router.get("/replies", response_class=HTMLResponse)
async def replies_page(request: Request, hub: HubDep) -> Response:
    denied = await require_admin(request, hub)
    if denied is not None:
        return denied
    async with hub.store.session() as s:
        rows = await kept_replies(s, MAX_LISTED)
    return _render(request, hub, "admin/replies.html", replies=rows)


@dataclass(frozen=True)
class Bubble:
    """One text in a conversation, as the phone page shows it."""

    mine: bool
    text: str
    at: datetime | None
    status: str | None


@dataclass(frozen=True)
class Conversation:
    number: str
    messages: list[Bubble]


def _when(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def read_conversations(phone: PhoneEmulator) -> list[Conversation]:
    """The emulator's conversations (see ``PhoneEmulator.conversations``), newest activity first."""
    found = []
    for item in phone.conversations():
        bubbles = [
            Bubble(
                mine=m.get("sender") == "phone",
                text=str(m.get("text", "")),
                at=_when(m.get("at")),
                status=m.get("status"),
            )
            for m in item.get("messages", [])
        ]
        found.append(Conversation(number=str(item.get("number", "")), messages=bubbles))
    return found[::-1]


def _phone(request: Request) -> PhoneEmulator | None:
    phone = getattr(request.app.state, "phone", None)
    return phone if isinstance(phone, PhoneEmulator) else None


@router.get("/phone", response_class=HTMLResponse)
async def phone_page(request: Request, hub: HubDep) -> Response:
    if not hub.config.hub.demo:
        raise HTTPException(404)
    denied = await require_admin(request, hub)
    if denied is not None:
        return denied
    phone = _phone(request)
    conversations = await asyncio.to_thread(read_conversations, phone) if phone is not None else []
    error = request.query_params.get("error")
    _ = translator(page_language(request))
    return _render(
        request,
        hub,
        "admin/phone.html",
        running=phone is not None,
        conversations=conversations,
        error=_("The hub did not take the reply; see the log.") if error else None,
        max_reply=MAX_REPLY,
    )


@router.post("/phone", response_class=HTMLResponse)
async def phone_reply(request: Request, hub: HubDep) -> Response:
    """The demo user texts from one of the emulated phones: the emulator delivers it to the hub."""
    if not hub.config.hub.demo:
        raise HTTPException(404)
    denied = await require_admin(request, hub, role=Role.ADMIN)
    if denied is not None:
        return denied
    _ = translator(page_language(request))
    if not await _csrf_ok(request, hub):
        raise HTTPException(403, _("The form had expired: reload the page."))
    phone = _phone(request)
    form = await request.form()
    number, text = form.get("number"), form.get("text")
    if phone is None or not isinstance(number, str) or not isinstance(text, str):
        raise HTTPException(400, _("No phone, number or text."))
    text = text.strip()
    if not text or len(text) > MAX_REPLY:
        raise HTTPException(400, _("A reply is 1 to {limit} characters.", limit=MAX_REPLY))
    known = {c.number for c in await asyncio.to_thread(read_conversations, phone)}
    if number not in known:
        raise HTTPException(400, _("No conversation with that number."))
    try:
        await asyncio.to_thread(phone.reply, number, text)
    except Exception:  # the hub refused or failed: say so on the page, keep the demo running
        log.exception("phone.reply_failed")
        return RedirectResponse("/admin/phone?error=1", status_code=303)
    return RedirectResponse("/admin/phone", status_code=303)
