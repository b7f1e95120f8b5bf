"""``/admin`` leads to a page that exists in every mode: the dashboard behind the login, the mailbox in the demo."""

from __future__ import annotations

from pydantic import SecretStr

from hub.web import create_app
from tests.helpers import asgi_client, csrf_of

PASSWORD = "correct horse battery staple"


async def test_admin_outside_the_demo_leads_to_a_real_page_behind_the_login(make_hub) -> None:
    hub = await make_hub()
    hub.config.hub.admin_password = SecretStr(PASSWORD)
    async with asgi_client(create_app(hub, scheduler=False)) as client:
        first = await client.get("/admin")
        assert first.status_code == 303 and first.headers["location"] == "/admin/login?next=/admin"
        form = await client.get("/admin/login")
        signed = await client.post(
            "/admin/login",
            data={"csrf": csrf_of(form.text), "username": "admin", "password": PASSWORD, "next": ""},
        )
        assert signed.status_code == 303 and signed.headers["location"] == "/admin"
        home = await client.get("/admin")
        assert home.status_code == 200 and "Sign out" in home.text
        assert "<h1>Dashboard</h1>" in home.text  # the cockpit's dashboard is the home page
        assert "/api/v1" in home.text and 'href="/api/docs"' in home.text  # the test config turns the API on
        assert "Mailbox" not in home.text  # the demo's only
        for link in ('href="/admin"', 'href="/api/docs"'):
            target = link.split('"')[1]
            assert (await client.get(target)).status_code == 200, target


async def test_without_a_password_outside_the_demo_there_is_no_admin(make_hub) -> None:
    hub = await make_hub()
    async with asgi_client(create_app(hub, scheduler=False)) as client:
        assert (await client.get("/admin")).status_code == 404
