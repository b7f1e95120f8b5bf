"""Logging in to Salesforce: one function per OAuth flow, all ending at ``/services/oauth2/token``.

The flows run on the connector's own ``requests`` session (explicit CA trust) and return the access token
and the instance URL the API is then called on. Refusals become ``AuthError`` (an admin must act); a token
endpoint that is down becomes ``TransientError(sent=False)``: a login writes nothing, so the call that needed
it never reached Salesforce and a write-back waiting on it uses no attempt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
import requests

from hub import AuthError, TransientError
from hub_salesforce.config import (
    ClientCredentialsAuth,
    JwtBearerAuth,
    PasswordAuth,
    SalesforceSettings,
)

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Salesforce accepts assertions that expire within 3 minutes
JWT_LIFETIME_SECONDS = 170


@dataclass(frozen=True)
class Token:
    access_token: str
    instance_url: str

    def __repr__(self) -> str:
        return f"Token(instance_url={self.instance_url!r}, access_token=**********)"


def jwt_assertion(auth: JwtBearerAuth, audience: str, now: float | None = None) -> str:
    """The RS256-signed assertion of the JWT bearer flow."""
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": auth.consumer_key,
        "sub": auth.username,
        "aud": audience,
        "exp": issued + JWT_LIFETIME_SECONDS,
    }
    try:
        return jwt.encode(claims, auth.private_key.get_secret_value(), algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise AuthError(
            f"auth.private_key is not a usable RSA private key (PEM): {type(exc).__name__}"
        ) from None


def token_form(settings: SalesforceSettings) -> dict[str, str]:
    """The form body of the token request for the configured flow."""
    auth = settings.auth
    if isinstance(auth, JwtBearerAuth):
        return {"grant_type": JWT_GRANT, "assertion": jwt_assertion(auth, settings.jwt_audience)}
    if isinstance(auth, ClientCredentialsAuth):
        return {
            "grant_type": "client_credentials",
            "client_id": auth.client_id,
            "client_secret": auth.client_secret.get_secret_value(),
        }
    assert isinstance(auth, PasswordAuth)
    token = auth.security_token.get_secret_value() if auth.security_token else ""
    return {
        "grant_type": "password",
        "client_id": auth.client_id,
        "client_secret": auth.client_secret.get_secret_value(),
        "username": auth.username,
        "password": auth.password.get_secret_value() + token,
    }


def _post_token_request(settings: SalesforceSettings, session: requests.Session) -> tuple[int, Any]:
    """POST the token request: the HTTP status and the JSON body (``{}`` when it is not JSON).

    The reply is read and closed here, so an ``AuthError`` raised later does not hold it (and through it
    the pooled TLS connection to the token endpoint) for as long as a caller keeps the exception.
    """
    with session.post(
        settings.token_url, data=token_form(settings), timeout=settings.timeout_seconds
    ) as reply:
        try:
            body = reply.json()
        except ValueError:
            body = {}
        return reply.status_code, body


def login(settings: SalesforceSettings, session: requests.Session) -> Token:
    """Exchange the configured credentials for a session; never logs or raises with a secret in it."""
    try:
        status, body = _post_token_request(settings, session)
    except requests.RequestException as exc:
        raise TransientError(
            f"Salesforce token endpoint unreachable: {type(exc).__name__}", sent=False
        ) from None
    if status >= 500 or status == 429:
        raise TransientError(f"Salesforce token endpoint answered HTTP {status}", sent=False)
    if status != 200 or not isinstance(body, dict) or "access_token" not in body:
        error = body.get("error", "") if isinstance(body, dict) else ""
        description = body.get("error_description", "") if isinstance(body, dict) else ""
        raise AuthError(
            f"Salesforce refused the {settings.auth.type} login at {settings.token_url}: "
            f"HTTP {status} {error} {description}".strip()
        )
    instance_url = settings.instance_url or str(body.get("instance_url", "")).rstrip("/")
    if not instance_url.startswith("https://"):
        raise AuthError("the Salesforce token reply named no https instance_url")
    return Token(access_token=str(body["access_token"]), instance_url=instance_url)
