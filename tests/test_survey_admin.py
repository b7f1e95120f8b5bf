"""The admin login and the demo mailbox: who gets in, and mail HTML shown without trusting it."""

from __future__ import annotations

import mailbox
import re
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from hub.web import create_app
from hub.web.admin import SESSION_COOKIE, open_links_in_new_tabs, with_links
from tests.helpers import csrf_of

PASSWORD = "correct horse battery staple"
SURVEY_URL = "http://127.0.0.1:8000/s/AbC123?score=9"


def client_for(app, host: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 50123))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000")


def catch(folder: Path, subject: str, html: str | None = None, text: str = "Hello") -> str:
    """Store a message in a Maildir as the mail catcher does; returns its key."""
    message = EmailMessage()
    message["From"] = "Nordlys Energi <survey@example.com>"
    message["To"] = "ada@example.com"
    message["Subject"] = subject
    message["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return mailbox.Maildir(folder, create=True).add(message)


@pytest.fixture
async def admin(make_hub, tmp_path):
    hub = await make_hub()
    hub.config.hub.demo = True
    hub.config.hub.admin_password = SecretStr(PASSWORD)
    hub.config.hub.mailbox_dir = "mail"  # relative to the config file's folder
    return hub, create_app(hub, scheduler=False), tmp_path / "mail"


async def sign_in(client: httpx.AsyncClient, password: str = PASSWORD, next: str = "") -> httpx.Response:
    form = await client.get("/admin/login")
    return await client.post(
        "/admin/login",
        data={"csrf": csrf_of(form.text), "username": "admin", "password": password, "next": next},
    )


async def test_without_a_password_the_admin_pages_do_not_exist(admin) -> None:
    hub, app, _ = admin
    hub.config.hub.admin_password = None
    hub.config.hub.demo = False
    async with client_for(app) as client:
        for path in ("/admin/login", "/admin/mailbox", "/admin/mailbox/x/html"):
            assert (await client.get(path)).status_code == 404
        assert (await client.post("/admin/login", data={"password": "x"})).status_code == 404


async def test_the_demo_without_a_password_is_open_to_this_machine_only(admin) -> None:
    hub, app, folder = admin
    hub.config.hub.admin_password = None
    catch(folder, "Hvordan gjorde vi det?")
    async with client_for(app) as local:
        page = await local.get("/admin/mailbox")
        assert page.status_code == 200 and "Hvordan gjorde vi det?" in page.text
        assert "Sign out" not in page.text
        login = await local.get("/admin/login")
        assert login.status_code == 303 and login.headers["location"] == "/admin/mailbox"
        proxied = await local.get("/admin/mailbox", headers={"X-Forwarded-For": "198.51.100.7"})
        assert proxied.status_code == 404
    async with client_for(app, "203.0.113.9") as remote:
        assert (await remote.get("/admin/mailbox")).status_code == 404


async def test_login_sets_a_signed_session(admin) -> None:
    _, app, _ = admin
    async with client_for(app, "203.0.113.9") as client:
        first = await client.get("/admin/mailbox")
        assert first.status_code == 303 and first.headers["location"] == "/admin/login?next=/admin/mailbox"
        form = await client.get("/admin/login")
        assert form.status_code == 200 and 'type="password"' in form.text
        wrong = await sign_in(client, "guess")
        assert wrong.status_code == 401 and "Wrong user name or password." in wrong.text
        assert SESSION_COOKIE not in client.cookies
        done = await sign_in(client, next="/admin/mailbox")
        assert done.status_code == 303 and done.headers["location"] == "/admin/mailbox"
        cookie = done.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie
        page = await client.get("/admin/mailbox")
        assert page.status_code == 200 and "No messages yet." in page.text and "Sign out" in page.text
        out = await client.post("/admin/logout", data={"csrf": csrf_of(page.text)})
        assert out.status_code == 303
        assert (await client.get("/admin/mailbox")).status_code == 303


async def test_the_login_form_needs_its_csrf_token(admin) -> None:
    _, app, _ = admin
    async with client_for(app) as client:
        await client.get("/admin/login")
        forged = await client.post("/admin/login", data={"username": "admin", "password": PASSWORD})
        assert forged.status_code == 403 and SESSION_COOKIE not in client.cookies


async def test_a_forged_or_stale_session_is_not_accepted(admin) -> None:
    hub, app, _ = admin
    async with client_for(app) as client:
        await sign_in(client)
        assert (await client.get("/admin/mailbox")).status_code == 200
        hub.config.hub.admin_password = SecretStr("a new password")  # ends every session
        assert (await client.get("/admin/mailbox")).status_code == 303
    async with client_for(app) as client:
        client.cookies.set(SESSION_COOKIE, "eyJ1c2VyIjoiYWRtaW4ifQ.forged.sig", path="/admin")
        assert (await client.get("/admin/mailbox")).status_code == 303


async def test_login_attempts_are_limited(admin) -> None:
    _, app, _ = admin
    async with client_for(app) as client:
        codes = [(await sign_in(client, "guess")).status_code for _ in range(11)]
        assert codes == [401] * 10 + [429]
        assert (await sign_in(client)).status_code == 429


async def test_login_never_redirects_off_the_admin_pages(admin) -> None:
    _, app, _ = admin
    async with client_for(app) as client:
        for target in ("https://evil.example/", "//evil.example/admin/", "/s/abc"):
            done = await sign_in(client, next=target)
            assert done.headers["location"] == "/admin/mailbox"
            client.cookies.clear()


async def test_the_mailbox_is_a_demo_page(admin) -> None:
    hub, app, _ = admin
    hub.config.hub.demo = False
    async with client_for(app) as client:
        await sign_in(client)
        assert (await client.get("/admin/mailbox")).status_code == 404


async def test_the_mailbox_lists_messages_newest_first(admin) -> None:
    _, app, folder = admin
    catch(folder, "Første")
    second = EmailMessage()
    second["Subject"] = "Andre 🍷"
    second["To"] = "bob@example.com"
    second["Date"] = "Tue, 24 Nov 2026 10:00:00 +0000"
    second.set_content("x")
    mailbox.Maildir(folder).add(second)
    async with client_for(app) as client:
        await sign_in(client)
        page = await client.get("/admin/mailbox")
    subjects = re.findall(r'<a href="/admin/mailbox/[^"]+">([^<]+)</a>', page.text)
    assert subjects == ["Andre 🍷", "Første"]
    assert "2026-11-24 10:00:00 UTC" in page.text


async def test_a_message_shows_its_html_sandboxed_and_its_text_escaped(admin) -> None:
    _, app, folder = admin
    html = (
        "<!doctype html><html><head><title>x</title></head><body>"
        f'<script>alert(1)</script><a href="{SURVEY_URL}">9</a></body></html>'
    )
    key = catch(folder, "Survey", html=html, text=f"Answer here: {SURVEY_URL}.\n<b>not bold</b>")
    async with client_for(app) as client:
        await sign_in(client)
        page = await client.get(f"/admin/mailbox/{key}")
        assert page.status_code == 200
        assert f'<iframe class="mail-html" src="/admin/mailbox/{key}/html" sandbox="allow-popups' in page.text
        assert "frame-src 'self'" in page.headers["content-security-policy"]
        assert "&lt;b&gt;not bold&lt;/b&gt;" in page.text
        link = SURVEY_URL.replace("&", "&amp;")
        assert f'<a href="{link}" target="_blank" rel="noopener noreferrer">{link}</a>.' in page.text
        body = await client.get(f"/admin/mailbox/{key}/html")
        policy = body.headers["content-security-policy"]
        assert policy.startswith("sandbox allow-popups") and "script-src" not in policy
        assert "default-src 'none'" in policy and body.headers["x-frame-options"] == "SAMEORIGIN"
        assert body.text.startswith('<!doctype html><html><head><base target="_blank"><title>')
        for bad in ("nope", "..%2F..%2Fetc%2Fpasswd", "a b"):
            assert (await client.get(f"/admin/mailbox/{bad}")).status_code == 404
    async with client_for(app, "203.0.113.9") as stranger:
        assert (await stranger.get(f"/admin/mailbox/{key}/html")).status_code == 303


async def test_without_a_mailbox_folder_the_page_says_what_to_set(admin) -> None:
    hub, app, _ = admin
    hub.config.hub.mailbox_dir = None
    async with client_for(app) as client:
        await sign_in(client)
        page = await client.get("/admin/mailbox")
    assert page.status_code == 200 and "hub.mailbox_dir" in page.text


def test_links_in_plain_text_are_found_without_trailing_punctuation() -> None:
    assert with_links("Go to https://a.example/s/x?y=1. Thanks") == [
        ("Go to ", False),
        ("https://a.example/s/x?y=1", True),
        (". Thanks", False),
    ]


def test_links_of_mail_html_open_in_a_new_tab() -> None:
    assert open_links_in_new_tabs("<p>x</p>") == '<base target="_blank"><p>x</p>'
    assert open_links_in_new_tabs("<!DOCTYPE html><p>x") == '<!DOCTYPE html><base target="_blank"><p>x'
    assert open_links_in_new_tabs('<HEAD lang="x"><title>') == '<HEAD lang="x"><base target="_blank"><title>'
