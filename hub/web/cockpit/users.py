"""``/admin/users``: admins list, add, re-role, reset and remove the cockpit's named users.

Each change goes through ``hub.accounts`` (as ``cxhub user ...`` does), which refuses what must not happen
(a name taken twice, a short password, leaving nobody admin) and writes the audit entry in the same
transaction. Every form is CSRF-checked; after a change the browser is sent back to the list (303), so a
reload never repeats it. A refused change shows the list again with the reason (400).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from hub import accounts
from hub.app import Hub
from hub.web.cockpit.access import Admin, CheckedForm, User, builtin_password
from hub.web.cockpit.i18n import Translate, page_language, translator
from hub.web.cockpit.render import render
from hub.web.deps import HubDep

router = APIRouter(prefix="/admin", include_in_schema=False)

#: what the list may say after a change (``?done=``; the template has the sentences); anything else is ignored
DONE = ("added", "role", "password", "removed")


def _field(form: CheckedForm, name: str, *, strip: bool = True) -> str:
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    return value.strip() if strip else value


def reason(_: Translate, error: accounts.AccountError) -> str:
    """Why a change was refused, in the page's language (``hub.accounts`` says it in English for the CLI)."""
    v = error.values
    texts = {
        accounts.TOO_SHORT: lambda: _("A password has at least {n} characters.", **v),
        accounts.TOO_LONG: lambda: _("A password has at most {n} characters.", **v),
        accounts.BAD_NAME: lambda: _(
            "A user name is 1 to 100 letters, digits or . _ @ + - and starts with a letter or digit."
        ),
        accounts.BAD_ROLE: lambda: _("The role is viewer or admin, not {role}.", **v),
        accounts.NO_SUCH_USER: lambda: _("There is no user {name}.", **v),
        accounts.TAKEN: lambda: _("There is already a user {name}.", **v),
        accounts.LAST_ADMIN: lambda: _("{name} is the last admin: make someone else admin first.", **v),
    }
    found = texts.get(error.text)
    return found() if found is not None else str(error)


async def _page(
    request: Request, hub: Hub, user: User, status: int = 200, error: str | None = None
) -> HTMLResponse:
    async with hub.store.session() as s:
        found = await accounts.list_accounts(s)
    done = request.query_params.get("done", "")
    return render(
        request,
        hub,
        "admin/users.html",
        user,
        status,
        accounts=found,
        roles=accounts.ROLES,
        builtin=builtin_password(hub) is not None,
        error=error,
        done=done if done in DONE and error is None else None,
        min_password=accounts.MIN_PASSWORD,
    )


async def _change(
    request: Request, hub: Hub, user: User, done: str, work: Callable[[AsyncSession, bool], Awaitable[None]]
) -> Response:
    """Make one change in a transaction; back to the list when made, the list with the reason when refused."""
    try:
        async with hub.store.session() as s:
            await work(s, builtin_password(hub) is not None)
    except accounts.AccountError as exc:
        _ = translator(page_language(request))
        return await _page(request, hub, user, 400, reason(_, exc))
    return RedirectResponse(f"/admin/users?done={quote(done)}", status_code=303)


@router.get("/users", response_class=HTMLResponse)
async def users_page(request: Request, hub: HubDep, user: Admin) -> HTMLResponse:
    return await _page(request, hub, user)


@router.post("/users", response_class=HTMLResponse)
async def add_user(request: Request, hub: HubDep, user: Admin, form: CheckedForm) -> Response:
    name, role = _field(form, "name"), _field(form, "role")
    password = _field(form, "password", strip=False)
    if password != _field(form, "password_again", strip=False):
        _ = translator(page_language(request))
        return await _page(request, hub, user, 400, _("The two passwords differ."))
    return await _change(
        request, hub, user, "added", lambda s, _builtin: accounts.add(s, user.name, name, role, password)
    )


@router.post("/users/{name}/role", response_class=HTMLResponse)
async def change_role(name: str, request: Request, hub: HubDep, user: Admin, form: CheckedForm) -> Response:
    role = _field(form, "role")
    return await _change(
        request,
        hub,
        user,
        "role",
        lambda s, builtin: accounts.set_role(s, user.name, name, role, builtin_admin=builtin),
    )


@router.post("/users/{name}/password", response_class=HTMLResponse)
async def reset_password(
    name: str, request: Request, hub: HubDep, user: Admin, form: CheckedForm
) -> Response:
    password = _field(form, "password", strip=False)
    return await _change(
        request,
        hub,
        user,
        "password",
        lambda s, _builtin: accounts.set_password(s, user.name, name, password),
    )


@router.post("/users/{name}/remove", response_class=HTMLResponse)
async def remove_user(name: str, request: Request, hub: HubDep, user: Admin, form: CheckedForm) -> Response:
    return await _change(
        request,
        hub,
        user,
        "removed",
        lambda s, builtin: accounts.remove(s, user.name, name, builtin_admin=builtin),
    )
