"""Every action needs its role, read from the app's own routes so a new action is covered without a list here.

A viewer signed in with a valid CSRF field is refused (403) on every state-changing route under ``/admin``, and
nothing it asked for happens (the audit log shows its sign-in and nothing after); the API refuses every route without its
bearer token (401). The only forms a viewer may send are signing in and out.
"""

from __future__ import annotations

import re

import httpx
from sqlalchemy import select

from hub import accounts
from hub.store.tables import AuditEntry
from hub.web import create_app
from tests.helpers import app_routes, csrf_of

VIEWER = ("vic", "a viewer's long passphrase")
#: forms anybody may send: signing in and out
OPEN_FORMS = {"/admin/login", "/admin/logout"}
CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def concrete(path: str) -> str:
    """A path with each ``{parameter}`` filled (the role is checked before the parameter is looked up)."""
    return re.sub(r"\{[^}]+\}", "1", path)


async def test_a_viewer_cannot_take_any_action_of_the_cockpit(make_hub) -> None:
    hub = await make_hub()
    hub.config.hub.demo = True  # the demo's pages too (mailbox, phone), which exist only in demo mode
    async with hub.store.session() as s:
        await accounts.add(s, "test", VIEWER[0], "viewer", VIEWER[1])
    app = create_app(hub, scheduler=False)
    actions = [
        path
        for path, methods in app_routes(app)
        if path.startswith("/admin") and methods & CHANGING and path not in OPEN_FORMS
    ]
    assert len(actions) >= 15  # users, sync, people, checks...: the cockpit's actions were found
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 50123))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
        form = await client.get("/admin/login")
        signed = await client.post(
            "/admin/login",
            data={"csrf": csrf_of(form.text), "username": VIEWER[0], "password": VIEWER[1], "next": ""},
        )
        assert signed.status_code == 303
        page = await client.get("/admin/audit")
        assert page.status_code == 200
        csrf = csrf_of(page.text)
        for path in actions:
            for method in sorted(methods_of(app, path) & CHANGING):
                refused = await client.request(method, concrete(path), data={"csrf": csrf, "confirm": "yes"})
                assert refused.status_code == 403, (method, path, refused.status_code)
    async with hub.store.session() as s:
        done = [e.action for e in await s.scalars(select(AuditEntry))]
    assert done == ["user.add", "user.login"]  # the test's own setup and the viewer's sign-in: nothing else


def methods_of(app, path: str) -> set[str]:
    return set().union(*(methods for found, methods in app_routes(app) if found == path))


async def test_the_api_refuses_every_route_without_its_token(make_hub) -> None:
    hub = await make_hub()
    app = create_app(hub, scheduler=False)
    api = [(path, methods) for path, methods in app_routes(app) if path.startswith("/api/v1")]
    assert sum(1 for _path, methods in api if methods & CHANGING) >= 8
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000"
    ) as client:
        for path, methods in api:
            for method in sorted(methods - {"HEAD"}):
                refused = await client.request(
                    method, concrete(path), headers={"authorization": "Bearer wrong"}
                )
                assert refused.status_code == 401, (method, path, refused.status_code)
