"""A small, strict OpenID Connect provider for the single sign-on tests, served over real HTTP.

Discovery, ``/authorize`` (code flow only; needs a registered redirect URI, ``state``, ``nonce`` and a PKCE
S256 challenge), ``/token`` (client secret by HTTP Basic, one use per code, the same redirect URI, the
PKCE verifier) and ``/jwks``. Its ID tokens are RS256-signed with joserfc. There is no login form: the
person "signed in" at the provider is whoever the test puts in ``state.person`` (the claims about them).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Form, Header, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse
from joserfc import jwt
from joserfc.jwk import RSAKey

CLIENT_ID = "cxhub-cockpit"
CLIENT_SECRET = "oidc-client-secret-for-tests"


@dataclass
class Grant:
    redirect_uri: str
    nonce: str
    challenge: str
    claims: dict[str, Any]


@dataclass
class ProviderState:
    redirect_uris: list[str]
    issuer: str = ""
    person: dict[str, Any] = field(default_factory=dict)
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "test-key-1"}))
    grants: dict[str, Grant] = field(default_factory=dict)
    #: what the test may break on purpose: the id_token's nonce, audience or signing key
    wrong: str | None = None
    requests: list[str] = field(default_factory=list)


def _refuse(error: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status)


def create_app(state: ProviderState) -> FastAPI:
    app = FastAPI()

    @app.get("/.well-known/openid-configuration")
    async def discovery() -> dict[str, Any]:
        base = state.issuer
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        }

    @app.get("/jwks")
    async def jwks() -> dict[str, Any]:
        return {"keys": [state.key.as_dict(private=False, use="sig", alg="RS256")]}

    @app.get("/authorize")
    async def authorize(request: Request) -> Any:
        q = request.query_params
        state.requests.append("authorize")
        if q.get("client_id") != CLIENT_ID or q.get("redirect_uri") not in state.redirect_uris:
            raise HTTPException(400, "unknown client or redirect_uri")  # never redirect to an unknown place
        problems = [
            q.get("response_type") != "code" and "response_type",
            "openid" not in (q.get("scope") or "").split() and "scope",
            not q.get("state") and "state",
            not q.get("nonce") and "nonce",
            q.get("code_challenge_method") != "S256" and "code_challenge_method",
            len(q.get("code_challenge") or "") < 43 and "code_challenge",
        ]
        if any(problems):
            raise HTTPException(400, f"invalid_request: {[p for p in problems if p]}")
        code = secrets.token_urlsafe(24)
        state.grants[code] = Grant(q["redirect_uri"], q["nonce"], q["code_challenge"], dict(state.person))
        target = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]})
        return RedirectResponse(target, status_code=302)

    @app.post("/token")
    async def token(
        grant_type: str = Form(),
        code: str = Form(),
        redirect_uri: str = Form(),
        code_verifier: str = Form(""),
        authorization: str = Header(""),
    ) -> Any:
        state.requests.append("token")
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if authorization != f"Basic {expected}":
            return _refuse("invalid_client", 401)
        grant = state.grants.pop(code, None)  # one use
        if grant_type != "authorization_code" or grant is None or grant.redirect_uri != redirect_uri:
            return _refuse("invalid_grant")
        digest = hashlib.sha256(code_verifier.encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant.challenge:
            return _refuse("invalid_grant")
        now = int(time.time())
        claims = {
            "iss": state.issuer,
            "aud": "someone-else" if state.wrong == "aud" else CLIENT_ID,
            "sub": grant.claims.get("sub", "subject-1"),
            "iat": now,
            "exp": now + 300,
            "nonce": "not-the-nonce" if state.wrong == "nonce" else grant.nonce,
            **grant.claims,
        }
        key = (
            RSAKey.generate_key(2048, parameters={"kid": "test-key-1"}) if state.wrong == "key" else state.key
        )
        id_token = jwt.encode({"alg": "RS256", "kid": "test-key-1"}, claims, key)
        return {
            "access_token": secrets.token_urlsafe(24),
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": id_token,
        }

    return app
