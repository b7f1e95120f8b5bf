"""``/admin/audit``: the audit log, newest first, a page at a time, narrowed to one actor or one action.

Viewers see it too: knowing who did what is part of watching the hub. The log is only read here; entries are
written by ``access.audit`` and ``hub.accounts`` as the actions happen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Select, func, select

from hub.store.tables import AuditEntry
from hub.web.cockpit.access import Viewer
from hub.web.cockpit.render import render
from hub.web.deps import HubDep

router = APIRouter(prefix="/admin", include_in_schema=False)

PAGE_SIZE = 50
#: how many actors and actions the filter menus offer (the most recent distinct ones would need more work)
MENU_SIZE = 200


@dataclass(frozen=True)
class Line:
    """One entry as the table shows it."""

    at: datetime
    actor: str
    action: str
    target: str
    detail: str


def _detail(detail: dict[str, Any] | None) -> str:
    if not detail:
        return ""
    return json.dumps(detail, ensure_ascii=False, sort_keys=True, default=str)[:500]


def _filtered(query: Select[Any], actor: str, action: str) -> Select[Any]:
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if action:
        query = query.where(AuditEntry.action == action)
    return query


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(
    request: Request, hub: HubDep, user: Viewer, actor: str = "", action: str = "", page: int = 1
) -> HTMLResponse:
    page = max(page, 1)
    async with hub.store.session() as s:
        total = await s.scalar(_filtered(select(func.count()).select_from(AuditEntry), actor, action)) or 0
        rows = (
            await s.execute(
                _filtered(select(AuditEntry), actor, action)
                .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
                .offset((page - 1) * PAGE_SIZE)
                .limit(PAGE_SIZE)
            )
        ).scalars()
        lines = [Line(r.at, r.actor, r.action, r.target or "", _detail(r.detail)) for r in rows]
        actors = (
            await s.execute(select(AuditEntry.actor).distinct().order_by(AuditEntry.actor).limit(MENU_SIZE))
        ).scalars()
        actions = (
            await s.execute(select(AuditEntry.action).distinct().order_by(AuditEntry.action).limit(MENU_SIZE))
        ).scalars()
        actor_menu, action_menu = list(actors), list(actions)
    pages = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    return render(
        request,
        hub,
        "admin/audit.html",
        user,
        lines=lines,
        actor=actor,
        action=action,
        actors=actor_menu,
        actions=action_menu,
        page=page,
        pages=pages,
        total=total,
    )
