"""Single sign-on to the cockpit with OpenID Connect (``[hub.sso]``), through Authlib's Starlette client.

``/admin/sso/login`` sends the browser to the provider (authorization code flow with PKCE S256, a ``state``
and a ``nonce``, kept in a short-lived signed cookie limited to ``/admin/sso`` by Starlette's
``SessionMiddleware``, which binds the answer to the browser that asked). ``/admin/sso/callback`` trades the
code for tokens, and Authlib checks the ID token: its RS256 signature against the provider's JWKS, issuer,
audience, expiry and nonce. The role then comes from the configured rules (``role_for``); someone they do not
name is refused. The user gets the same session cookie as a password sign-in (kind ``sso``), and the sign-in
is recorded in the audit log as ``user.login``.

The callback is a GET that signs someone in: that is how the protocol returns, and ``state`` (checked
against the browser's own cookie) is what keeps it from being forged.
"""

from __future__ import annotations

import warnings
from typing import Any

import httpx
import structlog
from authlib.deprecate import AuthlibDeprecationWarning

with warnings.catch_warnings():
    # Authlib 1.9 announces on import that its httpx client will move to a new package; every command of the
    # hub imports this module, and an admin should not read a library's notice to its own developers each time
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.starlette_client import OAuth, StarletteOAuth2App
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from joserfc.errors import JoseError
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from hub.app import Hub
from hub.config import SsoSettings
from hub.web.admin import safe_next
from hub.web.cockpit.access import Role, User, audit, new_session, set_session
from hub.web.cockpit.i18n import page_language, translator
from hub.web.cockpit.render import render
from hub.web.deps import HubDep

router = APIRouter(prefix="/admin", include_in_schema=False)
log = structlog.get_logger("hub.web")

STATE_COOKIE = "cxhub_sso"
#: how long a sign-in at the provider may take
STATE_SECONDS = 600
_CLIENT = "cockpit"
_NEXT = "sso_next"


class StateCookie:
    """The signed cookie that keeps a sign-in's state, nonce and PKCE verifier (Starlette's
    ``SessionMiddleware``, which Authlib's client needs), on ``/admin/sso/`` only. Made on first use, since
    the hub (its secret key, its public URL) may be opened only when the app starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._inner: SessionMiddleware | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/admin/sso/"):
            await self.app(scope, receive, send)
            return
        if self._inner is None:
            hub: Hub = scope["app"].state.hub
            self._inner = SessionMiddleware(
                self.app,
                secret_key=hub.secret_key,
                session_cookie=STATE_COOKIE,
                max_age=STATE_SECONDS,
                path="/admin/sso",
                # the provider's redirect back is a cross-site navigation: a strict cookie would stay home
                same_site="lax",
                https_only=hub.config.hub.public_url.startswith("https://"),
            )
        await self._inner(scope, receive, send)


def role_for(settings: SsoSettings, claims: dict[str, Any]) -> Role | None:
    """The role the rules give these ID token claims; None: not let in. An e-mail address counts only when
    the provider says it is verified; admin rules win over viewer rules."""
    email = claims.get("email")
    verified = isinstance(email, str) and claims.get("email_verified") is True
    address = email.strip().lower() if verified and isinstance(email, str) else ""
    domain = address.rpartition("@")[2] if "@" in address else ""
    raw_groups = claims.get(settings.groups_claim)
    groups = {g for g in raw_groups if isinstance(g, str)} if isinstance(raw_groups, list) else set()

    def named(emails: list[str], domains: list[str], wanted: list[str]) -> bool:
        return (
            (bool(address) and address in {e.lower() for e in emails})
            or (bool(domain) and domain in {d.lower().lstrip("@") for d in domains})
            or bool(groups & set(wanted))
        )

    if named(settings.admin_emails, settings.admin_domains, settings.admin_groups):
        return Role.ADMIN
    if named(settings.viewer_emails, settings.viewer_domains, settings.viewer_groups):
        return Role.VIEWER
    return None


def _settings(hub: Hub) -> SsoSettings:
    settings = hub.config.hub.sso
    if settings is None:
        raise HTTPException(404)
    return settings


def _client(request: Request, settings: SsoSettings) -> StarletteOAuth2App:
    """The provider's client, made once per app (it caches the discovery document and the keys)."""
    found = getattr(request.app.state, "sso_client", None)
    if isinstance(found, StarletteOAuth2App):
        return found
    oauth = OAuth()
    client = oauth.register(
        _CLIENT,
        client_id=settings.client_id,
        client_secret=settings.client_secret.get_secret_value(),
        server_metadata_url=settings.metadata_url(),
        client_kwargs={"scope": " ".join(settings.scopes), "code_challenge_method": "S256"},
    )
    assert isinstance(client, StarletteOAuth2App)
    request.app.state.sso_client = client
    return client


def _refused(request: Request, hub: Hub, text: str) -> Response:
    return render(request, hub, "admin/login.html", None, 403, next="/admin", error=text, sso=True)


@router.get("/sso/login")
async def sso_login(request: Request, hub: HubDep, next: str = "/admin") -> Response:
    settings = _settings(hub)
    request.session.clear()
    request.session[_NEXT] = safe_next(next, hub)
    redirect = hub.config.hub.public_url.rstrip("/") + "/admin/sso/callback"
    response: Response = await _client(request, settings).authorize_redirect(request, redirect)
    return response


@router.get("/sso/callback")
async def sso_callback(request: Request, hub: HubDep) -> Response:
    settings = _settings(hub)
    _ = translator(page_language(request))
    target = str(request.session.get(_NEXT) or "/admin")
    try:
        token = await _client(request, settings).authorize_access_token(request)
    except (OAuthError, JoseError, httpx.HTTPError) as exc:
        log.warning("sso.refused", error=type(exc).__name__)
        return _refused(request, hub, _("Single sign-on did not succeed. Please try again."))
    finally:
        request.session.clear()
    claims = dict(token.get("userinfo") or {})
    role = role_for(settings, claims)
    name = str(claims.get("email") or claims.get("preferred_username") or claims.get("sub") or "")
    if role is None or not name:
        log.info("sso.not_allowed")
        return _refused(request, hub, _("Your account is not allowed into this cockpit."))
    user = User(name[:200], role)
    session = new_session(hub, user, "sso", "")
    await audit(hub, user.name, "user.login", user.name, via="sso", role=role.value)
    response = RedirectResponse(target, status_code=303)
    set_session(response, request, hub, session)
    return response
