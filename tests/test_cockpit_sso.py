"""Single sign-on to the cockpit against a strict OpenID provider over real HTTP (``tests.fakes.oidc``): code
flow with PKCE, state and nonce; the role from the configured rules; refused when the rules or the ID token
say no."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from hub.config import SsoSettings
from hub.store.tables import AuditEntry
from hub.testing.server import BackgroundServer
from hub.web import create_app
from hub.web.cockpit.access import SESSION_COOKIE, Role
from hub.web.cockpit.sso import role_for
from tests.fakes import oidc
from tests.helpers import asgi_client

CALLBACK = "http://127.0.0.1:8000/admin/sso/callback"


@pytest.fixture
def provider() -> Iterator[oidc.ProviderState]:
    state = oidc.ProviderState(redirect_uris=[CALLBACK])
    with BackgroundServer(oidc.create_app(state)) as server:
        state.issuer = server.url
        yield state


@pytest.fixture
async def sso_hub(make_hub, provider, monkeypatch):
    monkeypatch.setenv("CXHUB_TEST_SSO_SECRET", oidc.CLIENT_SECRET)
    hub = await make_hub(
        f"""
        [hub.sso]
        issuer = "{provider.issuer}"
        client_id = "{oidc.CLIENT_ID}"
        client_secret = "env:CXHUB_TEST_SSO_SECRET"
        admin_groups = ["cx-admins"]
        viewer_domains = ["example.com"]
        """
    )
    return hub, create_app(hub, scheduler=False)


async def through_provider(client: httpx.AsyncClient, next: str = "/admin/audit") -> httpx.Response:
    """Start at the hub, follow it to the provider (real HTTP) and back; the hub's answer to the callback."""
    start = await client.get(f"/admin/sso/login?next={next}")
    assert start.status_code in (302, 303, 307), start.text
    async with httpx.AsyncClient() as browser:
        at_provider = await browser.get(start.headers["location"])
    assert at_provider.status_code == 302, at_provider.text
    back = at_provider.headers["location"]
    assert back.startswith(CALLBACK)
    return await client.get(back.removeprefix("http://127.0.0.1:8000"))


async def test_a_group_member_signs_in_as_admin(sso_hub, provider) -> None:
    hub, app = sso_hub
    provider.person = {
        "sub": "u-1",
        "email": "Ada@Corp.example",
        "email_verified": True,
        "groups": ["cx-admins"],
    }
    async with asgi_client(app) as client:
        login = await client.get("/admin/login")
        assert 'href="/admin/sso/login?next=' in login.text
        done = await through_provider(client)
        assert done.status_code == 303 and done.headers["location"] == "/admin/audit"
        assert SESSION_COOKIE in client.cookies
        users = await client.get("/admin/users")
        assert users.status_code == 200 and "Sign out (Ada@Corp.example)" in users.text
    assert provider.requests == ["authorize", "token"]
    async with hub.store.session() as s:
        from sqlalchemy import select

        logins = (
            (await s.execute(select(AuditEntry).where(AuditEntry.action == "user.login"))).scalars().all()
        )
    assert [(e.actor, e.detail) for e in logins] == [("Ada@Corp.example", {"via": "sso", "role": "admin"})]


async def test_a_verified_address_at_a_viewer_domain_signs_in_as_viewer(sso_hub, provider) -> None:
    _, app = sso_hub
    provider.person = {"email": "vic@example.com", "email_verified": True}
    async with asgi_client(app) as client:
        assert (await through_provider(client)).status_code == 303
        assert (await client.get("/admin/audit")).status_code == 200
        assert (await client.get("/admin/users")).status_code == 403


@pytest.mark.parametrize(
    "person",
    [
        {"email": "eve@elsewhere.example", "email_verified": True},  # no rule names her
        {"email": "vic@example.com", "email_verified": False},  # an address the provider did not verify
        {"email": "vic@example.com"},
    ],
)
async def test_someone_the_rules_do_not_name_is_refused(sso_hub, provider, person: dict[str, Any]) -> None:
    _, app = sso_hub
    provider.person = person
    async with asgi_client(app) as client:
        refused = await through_provider(client)
        assert refused.status_code == 403 and "not allowed into this cockpit" in refused.text
        assert SESSION_COOKIE not in client.cookies


@pytest.mark.parametrize("wrong", ["nonce", "aud", "key"])
async def test_an_id_token_that_does_not_check_out_is_refused(sso_hub, provider, wrong: str) -> None:
    _, app = sso_hub
    provider.person = {"email": "ada@corp.example", "email_verified": True, "groups": ["cx-admins"]}
    provider.wrong = wrong
    async with asgi_client(app) as client:
        refused = await through_provider(client)
        assert refused.status_code == 403 and "did not succeed" in refused.text
        assert SESSION_COOKIE not in client.cookies


async def test_a_callback_from_another_browser_is_refused(sso_hub, provider) -> None:
    """Login CSRF: a code and state obtained by someone else do not sign this browser in."""
    _, app = sso_hub
    provider.person = {"email": "ada@corp.example", "email_verified": True, "groups": ["cx-admins"]}
    async with asgi_client(app) as attacker:
        start = await attacker.get("/admin/sso/login")
        async with httpx.AsyncClient() as browser:
            back = (await browser.get(start.headers["location"])).headers["location"]
    async with asgi_client(app) as victim:
        refused = await victim.get(back.removeprefix("http://127.0.0.1:8000"))
        assert refused.status_code == 403 and SESSION_COOKIE not in victim.cookies


async def test_without_sso_its_pages_do_not_exist(make_hub) -> None:
    hub = await make_hub()
    async with asgi_client(create_app(hub, scheduler=False)) as client:
        assert (await client.get("/admin/sso/login")).status_code == 404
        assert (await client.get("/admin/sso/callback?code=x&state=y")).status_code == 404


def test_the_role_rules() -> None:
    settings = SsoSettings.model_validate(
        {
            "issuer": "https://id.example",
            "client_id": "x",
            "client_secret": "env:CXHUB_TEST_API_TOKEN",
            "admin_emails": ["Boss@Example.com"],
            "viewer_domains": ["example.com"],
            "viewer_groups": ["readers"],
            "groups_claim": "roles",
        }
    )
    assert role_for(settings, {"email": "boss@example.com", "email_verified": True}) is Role.ADMIN
    assert role_for(settings, {"email": "amy@example.com", "email_verified": True}) is Role.VIEWER
    assert role_for(settings, {"email": "amy@example.com.evil", "email_verified": True}) is None
    assert role_for(settings, {"roles": ["readers"]}) is Role.VIEWER
    assert role_for(settings, {"groups": ["readers"]}) is None  # another claim than the configured one
    assert role_for(settings, {"roles": "readers"}) is None
