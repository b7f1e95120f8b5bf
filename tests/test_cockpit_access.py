"""The cockpit's access layer: named users (Argon2id), ``cxhub user``, sign-in, roles, expiring sessions, the
audit log and the users page, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import getpass
import json
from datetime import timedelta

import httpx
import pytest
from argon2 import PasswordHasher
from pydantic import SecretStr
from sqlalchemy import select
from typer.testing import CliRunner

from hub import accounts
from hub.cli import app as cli
from hub.store import utcnow
from hub.store.tables import AdminUser, AuditEntry
from hub.web import create_app
from hub.web.cockpit.access import SESSION_COOKIE
from tests.conftest import config_text
from tests.helpers import csrf_of

runner = CliRunner()
ADA = ("ada", "ada's long password")
VIC = ("vic", "vic's long password")
BUILTIN = "the built-in admin password"


class Clock:
    """The hub's clock, moved by hand."""

    def __init__(self) -> None:
        self.at = utcnow()

    def __call__(self):  # type: ignore[no-untyped-def]
        return self.at

    def move(self, **delta: float) -> None:
        self.at += timedelta(**delta)


async def add_users(hub, *users: tuple[str, str, str]) -> None:
    async with hub.store.session() as s:
        for name, role, password in users:
            await accounts.add(s, "test", name, role, password)


@pytest.fixture
async def cockpit(make_hub):
    """A hub with an admin ``ada`` and a viewer ``vic`` (no built-in admin), its app and its clock."""
    hub = await make_hub()
    clock = Clock()
    hub.now = clock
    await add_users(hub, (ADA[0], "admin", ADA[1]), (VIC[0], "viewer", VIC[1]))
    return hub, create_app(hub, scheduler=False), clock


def client_for(app) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 50123))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000")


async def sign_in(client: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    form = await client.get("/admin/login")
    return await client.post(
        "/admin/login", data={"csrf": csrf_of(form.text), "username": name, "password": password, "next": ""}
    )


async def entries(hub, action: str | None = None) -> list[AuditEntry]:
    async with hub.store.session() as s:
        query = select(AuditEntry).order_by(AuditEntry.id)
        if action:
            query = query.where(AuditEntry.action == action)
        return list((await s.execute(query)).scalars())


async def stored(hub, name: str) -> AdminUser | None:
    async with hub.store.session() as s:
        return await accounts.find(s, name)


# --- hashing --------------------------------------------------------------------------------------------------


async def test_passwords_are_stored_as_argon2id_and_old_hashes_are_replaced_at_sign_in(make_hub) -> None:
    hub = await make_hub()
    await add_users(hub, ("ada", "admin", ADA[1]))
    row = await stored(hub, "ada")
    assert row is not None and row.password_hash is not None
    assert row.password_hash.startswith("$argon2id$") and ADA[1] not in row.password_hash
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(ADA[1])
    async with hub.store.session() as s:
        found = await accounts.find(s, "ada")
        assert found is not None
        found.password_hash = weak
    async with hub.store.session() as s:
        assert await accounts.authenticate(s, "ada", "not the password") is None
    assert (await stored(hub, "ada")).password_hash == weak  # type: ignore[union-attr]
    async with hub.store.session() as s:
        assert await accounts.authenticate(s, "ada", ADA[1]) is not None
    renewed = await stored(hub, "ada")
    assert renewed is not None and renewed.password_hash != weak and renewed.last_login_at is not None
    assert not accounts.hasher().check_needs_rehash(renewed.password_hash or "")


async def test_an_unknown_name_is_checked_against_a_hash_too(make_hub, monkeypatch) -> None:
    hub = await make_hub()
    await add_users(hub, ("ada", "admin", ADA[1]))
    checked: list[str] = []
    real = accounts.hasher()

    class Spy(PasswordHasher):
        def verify(self, hash, password):  # type: ignore[no-untyped-def]
            checked.append(hash)
            return real.verify(hash, password)

    monkeypatch.setattr(accounts, "hasher", lambda: Spy())
    async with hub.store.session() as s:
        assert await accounts.authenticate(s, "nobody", ADA[1]) is None
        assert await accounts.authenticate(s, "ada", "wrong password here") is None
    assert len(checked) == 2 and all(h.startswith("$argon2id$") for h in checked)


def test_weak_names_roles_and_passwords_are_refused() -> None:
    for bad in ("", "-x", "a b", "x" * 101, "a/b"):
        with pytest.raises(accounts.AccountError):
            accounts.check_name(bad)
    with pytest.raises(accounts.AccountError, match="viewer or admin"):
        accounts.check_role("root")
    with pytest.raises(accounts.AccountError, match="at least 10"):
        accounts.hash_password("short")


# --- the command line -----------------------------------------------------------------------------------------


def cxhub(*args: str, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(cli, list(args), input=input)
    return result.exit_code, result.output


async def test_cxhub_user_add_passwd_role_remove_and_list(make_hub, database_url, fake_crm, tmp_path) -> None:
    hub = await make_hub()  # migrates the database the command line then opens
    config = tmp_path / "cxhub.toml"
    config.write_text(config_text(database_url, fake_crm.url))
    c = ("-c", str(config))
    me = f"cli:{getpass.getuser()}"

    code, out = await asyncio.to_thread(
        cxhub, "user", "add", "ada", "--role", "admin", *c, input=f"{ADA[1]}\n{ADA[1]}\n"
    )
    assert code == 0 and "added ada (admin)" in out and ADA[1] not in out
    code, out = await asyncio.to_thread(cxhub, "user", "add", "bob", *c, input=f"{ADA[1]}\nsomething else\n")
    assert code != 0 and await stored(hub, "bob") is None  # the prompt asked twice and the two differed
    secret = tmp_path / "vic.txt"
    secret.write_text(VIC[1] + "\n")
    code, out = await asyncio.to_thread(cxhub, "user", "add", "vic", "--password-file", str(secret), *c)
    assert code == 0 and "added vic (viewer)" in out
    code, out = await asyncio.to_thread(
        cxhub, "user", "add", "cy", "--password-file", "-", *c, input="tiny\n"
    )
    assert code == 2 and "at least 10 characters" in out and await stored(hub, "cy") is None
    code, out = await asyncio.to_thread(cxhub, "user", "add", "ada", "--password-file", str(secret), *c)
    assert code == 2 and "already a user ada" in out

    code, out = await asyncio.to_thread(cxhub, "user", "list", "--json", *c)
    assert code == 0
    listed = json.loads(out)
    assert [(u["name"], u["role"], u["last sign-in"]) for u in listed] == [
        ("ada", "admin", "never"),
        ("vic", "viewer", "never"),
    ]

    before = (await stored(hub, "vic")).session_epoch  # type: ignore[union-attr]
    code, out = await asyncio.to_thread(
        cxhub, "user", "passwd", "vic", "--password-file", "-", *c, input="a brand new password\n"
    )
    assert code == 0
    vic = await stored(hub, "vic")
    assert vic is not None and vic.session_epoch == before + 1
    async with hub.store.session() as s:
        assert await accounts.authenticate(s, "vic", "a brand new password") is not None

    code, out = await asyncio.to_thread(cxhub, "user", "remove", "ada", *c)
    assert code == 2 and "last admin" in out and await stored(hub, "ada") is not None
    code, out = await asyncio.to_thread(cxhub, "user", "role", "ada", "viewer", *c)
    assert code == 2 and "last admin" in out
    code, out = await asyncio.to_thread(cxhub, "user", "role", "vic", "admin", *c)
    assert code == 0
    code, out = await asyncio.to_thread(cxhub, "user", "remove", "ada", *c)
    assert code == 0 and await stored(hub, "ada") is None
    code, out = await asyncio.to_thread(cxhub, "user", "remove", "ada", *c)
    assert code == 2 and "no user ada" in out

    logged = [(e.actor, e.action, e.target) for e in await entries(hub)]
    assert logged == [
        (me, "user.add", "ada"),
        (me, "user.add", "vic"),
        (me, "user.passwd", "vic"),
        (me, "user.role", "vic"),
        (me, "user.remove", "ada"),
    ]


# --- signing in and roles -------------------------------------------------------------------------------------


async def test_the_cockpit_exists_once_a_user_does(make_hub) -> None:
    hub = await make_hub()
    app = create_app(hub, scheduler=False)
    async with client_for(app) as client:
        assert (await client.get("/admin")).status_code == 404
        assert (await client.get("/admin/audit")).status_code == 404
        await add_users(hub, ("ada", "viewer", ADA[1]))
        first = await client.get("/admin/audit")
        assert first.status_code == 303 and first.headers["location"] == "/admin/login?next=/admin/audit"


async def test_the_demo_enters_as_demo_only_while_nobody_can_sign_in(make_hub) -> None:
    hub = await make_hub()
    hub.config.hub.demo = True
    app = create_app(hub, scheduler=False)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50123))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as local:
        page = await local.get("/admin/users")
        assert page.status_code == 200 and "Sign out" not in page.text
        added = await local.post(
            "/admin/users",
            data={
                "csrf": csrf_of(page.text),
                "name": "ada",
                "role": "admin",
                "password": ADA[1],
                "password_again": ADA[1],
            },
        )
        assert added.status_code == 303
        assert [(e.actor, e.action) for e in await entries(hub)] == [("demo", "user.add")]
        assert (await local.get("/admin/users")).status_code == 303  # now one signs in


async def test_users_sign_in_by_name_and_the_viewer_cannot_act(cockpit) -> None:
    hub, app, _ = cockpit
    async with client_for(app) as client:
        assert (await sign_in(client, "vic", ADA[1])).status_code == 401
        assert (await sign_in(client, "nobody", VIC[1])).status_code == 401
        assert (
            await sign_in(client, "admin", VIC[1])
        ).status_code == 401  # no built-in admin without the setting
        done = await sign_in(client, *VIC)
        assert done.status_code == 303 and SESSION_COOKIE in client.cookies
        audit = await client.get("/admin/audit")
        assert audit.status_code == 200 and "Sign out (vic)" in audit.text
        assert 'href="/admin/users"' not in audit.text
        assert (await client.get("/admin/users")).status_code == 403
        csrf = csrf_of(audit.text)
        for path, data in [
            ("/admin/users", {"name": "eve", "role": "admin", "password": VIC[1], "password_again": VIC[1]}),
            ("/admin/users/vic/role", {"role": "admin"}),
            ("/admin/users/ada/remove", {}),
            ("/admin/users/ada/password", {"password": "taken over at last"}),
        ]:
            refused = await client.post(path, data={"csrf": csrf, **data})
            assert refused.status_code == 403, path
    assert (await stored(hub, "vic")).role == "viewer"  # type: ignore[union-attr]
    assert await stored(hub, "eve") is None and await stored(hub, "ada") is not None
    logins = await entries(hub, "user.login")
    assert [(e.actor, e.target, e.detail) for e in logins] == [("vic", "vic", {"via": "user"})]


async def test_the_admin_manages_users_with_csrf_and_audit(cockpit) -> None:
    hub, app, _ = cockpit
    async with client_for(app) as client:
        await sign_in(client, *ADA)
        page = await client.get("/admin/users")
        assert page.status_code == 200 and "vic" in page.text and 'href="/admin/users"' in page.text
        csrf = csrf_of(page.text)
        form = {
            "name": "cy",
            "role": "viewer",
            "password": "cy's long password",
            "password_again": "cy's long password",
        }
        assert (await client.post("/admin/users", data=form)).status_code == 403  # no CSRF field
        added = await client.post("/admin/users", data={"csrf": csrf, **form})
        assert added.status_code == 303 and added.headers["location"] == "/admin/users?done=added"
        assert "The user was added." in (await client.get(added.headers["location"])).text
        twice = await client.post("/admin/users", data={"csrf": csrf, **form})
        assert twice.status_code == 400 and "There is already a user cy." in twice.text
        differ = await client.post(
            "/admin/users", data={"csrf": csrf, **form, "password_again": "not the same one"}
        )
        assert differ.status_code == 400 and "The two passwords differ." in differ.text
        assert (
            await client.post("/admin/users/cy/role", data={"csrf": csrf, "role": "admin"})
        ).status_code == 303
        reset = await client.post(
            "/admin/users/cy/password", data={"csrf": csrf, "password": "a reset password!"}
        )
        assert reset.status_code == 303
        assert (await client.post("/admin/users/cy/remove", data={"csrf": csrf})).status_code == 303
        demote = await client.post("/admin/users/ada/role", data={"csrf": csrf, "role": "viewer"})
        assert (
            demote.status_code == 400
            and "ada is the last admin: make someone else admin first." in demote.text
        )
        remove = await client.post("/admin/users/ada/remove", data={"csrf": csrf})
        assert remove.status_code == 400 and (await stored(hub, "ada")) is not None
    logged = [(e.actor, e.action, e.target) for e in await entries(hub) if e.actor == "ada"]
    assert logged == [
        ("ada", "user.login", "ada"),
        ("ada", "user.add", "cy"),
        ("ada", "user.role", "cy"),
        ("ada", "user.passwd", "cy"),
        ("ada", "user.remove", "cy"),
    ]


async def test_the_built_in_admin_still_signs_in_and_may_demote_the_last_named_admin(cockpit) -> None:
    hub, app, _ = cockpit
    hub.config.hub.admin_password = SecretStr(BUILTIN)
    async with client_for(app) as client:
        assert (await sign_in(client, "admin", BUILTIN)).status_code == 303
        page = await client.get("/admin/users")
        assert page.status_code == 200 and "Sign out (admin)" in page.text
        demote = await client.post(
            "/admin/users/ada/role", data={"csrf": csrf_of(page.text), "role": "viewer"}
        )
        assert demote.status_code == 303 and (await stored(hub, "ada")).role == "viewer"  # type: ignore[union-attr]


# --- sessions -------------------------------------------------------------------------------------------------


async def test_a_session_slides_while_used_and_ends_when_idle(cockpit) -> None:
    _, app, clock = cockpit
    async with client_for(app) as client:
        await sign_in(client, *VIC)
        first = client.cookies[SESSION_COOKIE]
        for _ in range(4):  # two hours in all, never 30 minutes idle
            clock.move(minutes=29)
            page = await client.get("/admin/audit")
            assert page.status_code == 200 and SESSION_COOKIE in page.headers.get("set-cookie", "")
        assert client.cookies[SESSION_COOKIE] != first
        clock.move(minutes=31)
        gone = await client.get("/admin/audit")
        assert gone.status_code == 303 and gone.headers["location"] == "/admin/login?next=/admin/audit"


async def test_the_idle_timeout_is_a_setting(cockpit) -> None:
    hub, app, clock = cockpit
    hub.config.hub.admin_session_idle_minutes = 5
    async with client_for(app) as client:
        await sign_in(client, *VIC)
        clock.move(minutes=4)
        assert (await client.get("/admin/audit")).status_code == 200
        clock.move(minutes=6)
        assert (await client.get("/admin/audit")).status_code == 303


async def test_a_session_ends_after_twelve_hours_however_active(cockpit) -> None:
    _, app, clock = cockpit
    async with client_for(app) as client:
        await sign_in(client, *VIC)
        for _ in range(47):  # 11 h 45 min, a request every quarter of an hour
            clock.move(minutes=15)
            assert (await client.get("/admin/audit")).status_code == 200
        clock.move(minutes=16)
        assert (await client.get("/admin/audit")).status_code == 303


async def test_a_password_change_or_removal_ends_the_sessions_at_once(cockpit) -> None:
    hub, app, _ = cockpit
    async with client_for(app) as vic, client_for(app) as ada:
        await sign_in(vic, *VIC)
        await sign_in(ada, *ADA)
        assert (await vic.get("/admin/audit")).status_code == 200
        async with hub.store.session() as s:
            await accounts.set_password(s, "test", "vic", "vic's next password")
        assert (await vic.get("/admin/audit")).status_code == 303
        assert (await sign_in(vic, "vic", "vic's next password")).status_code == 303
        assert (await vic.get("/admin/audit")).status_code == 200
        async with hub.store.session() as s:
            await accounts.set_role(s, "test", "vic", "admin", builtin_admin=False)
        assert (await vic.get("/admin/users")).status_code == 200  # a role counts from the next request
        page = await ada.get("/admin/users")
        assert (
            await ada.post("/admin/users/vic/remove", data={"csrf": csrf_of(page.text)})
        ).status_code == 303
        assert (await vic.get("/admin/audit")).status_code == 303


async def test_a_forged_session_cookie_is_not_accepted(cockpit) -> None:
    _, app, _ = cockpit
    async with client_for(app) as client:
        client.cookies.set(SESSION_COOKIE, '{"u":"ada","r":"admin","k":"user","e":"0"}.forged', path="/admin")
        assert (await client.get("/admin/users")).status_code == 303


# --- the audit log page ---------------------------------------------------------------------------------------


async def test_the_audit_log_is_newest_first_paged_and_filtered(cockpit) -> None:
    hub, app, _ = cockpit
    async with hub.store.session() as s:
        start = utcnow() - timedelta(days=1)
        for i in range(60):
            s.add(
                AuditEntry(at=start + timedelta(minutes=i), actor="api", action="sync.run", target=f"crm-{i}")
            )
        s.add(AuditEntry(at=start, actor="vic", action="person.erase", target="P9", detail={"why": "asked"}))
    async with client_for(app) as client:
        await sign_in(client, *VIC)
        first = (await client.get("/admin/audit?actor=api")).text
        assert "60 entries, page 1 of 2" in first
        assert first.index("crm-59") < first.index("crm-58") and "crm-9<" not in first
        second = (await client.get("/admin/audit?actor=api&page=2")).text
        assert "crm-9<" in second and "crm-10<" not in second and "Newer" in second
        erased = (await client.get("/admin/audit?action=person.erase")).text
        assert "P9" in erased and "crm-" not in erased and "asked" in erased
        everything = (await client.get("/admin/audit")).text
        assert "user.add" in everything and "user.login" in everything
