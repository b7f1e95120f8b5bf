"""Who may call the emulated tenant: system user tickets, OpenID access tokens, Basic users.

The system user exchange checks what SuperOffice checks: the application token, the tenant, the system user
token, the RSA-SHA256 signature of ``<token>.<yyyyMMddHHmm>`` against the partner's public key, and that the
timestamp is recent. Tickets and access tokens expire; an expired one gets 401 like any unknown one.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from hub_superoffice.emulation.store import ApiError

TICKET_CLAIM = "http://schemes.superoffice.net/identity/ticket"
CONTEXT_CLAIM = "http://schemes.superoffice.net/identity/ctx"


def generate_key_pair() -> tuple[str, str]:
    """A fresh RSA key pair as (private PEM, public PEM): what a partner registers with SuperOffice."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    return private_pem, public_pem


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class Credentials:
    """What the emulated tenant accepts. Secrets here are test values, never real ones."""

    context_identifier: str = "Cust12345"
    application_token: str = "emulator-application-token"  # noqa: S105 - the emulator's public test value
    system_user_token: str = "CXHub-emulator-7f3a"  # noqa: S105 - the emulator's public test value
    partner_public_key_pem: str | None = None
    oauth_clients: dict[str, str] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    basic_users: dict[str, str] = field(default_factory=dict)
    ticket_lifetime_seconds: float = 6 * 3600
    access_token_lifetime_seconds: float = 3600
    signature_window_seconds: float = 300


class Authority:
    """Issues and checks credentials; thread-safe (login and API calls come from the server thread,
    expiry switches from tests)."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._lock = threading.Lock()
        self._jwt_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._partner_key: rsa.RSAPublicKey | None = None
        if credentials.partner_public_key_pem:
            key = serialization.load_pem_public_key(credentials.partner_public_key_pem.encode("ascii"))
            if not isinstance(key, rsa.RSAPublicKey):
                raise ValueError("the partner key must be RSA")
            self._partner_key = key
        self._tickets: dict[str, float] = {}
        self._access_tokens: dict[str, float] = {}
        self._expire_countdown: int | None = None
        self.issued = 0

    # -- system user

    def system_user_login(self, body: Any, webapi_url: str) -> dict[str, Any]:
        """The reply of PartnerSystemUser/Authenticate (always HTTP 200; ``IsSuccessful`` says how it went)."""
        problem = self._system_user_problem(body)
        if problem:
            return {"IsSuccessful": False, "ErrorMessage": problem, "Token": None}
        ticket = "7T:" + secrets.token_urlsafe(32)
        with self._lock:
            self._tickets[ticket] = time.time() + self.credentials.ticket_lifetime_seconds
            self.issued += 1
        return {"IsSuccessful": True, "ErrorMessage": "", "Token": self._jwt(ticket, webapi_url)}

    def _system_user_problem(self, body: Any) -> str | None:
        creds = self.credentials
        if not isinstance(body, dict):
            return "Request body must be a JSON object"
        if body.get("ApplicationToken") != creds.application_token:
            return "Unknown application token"
        if body.get("ContextIdentifier") != creds.context_identifier:
            return "The application is not approved for this tenant"
        if self._partner_key is None:
            return "No public key registered for the application"
        parts = str(body.get("SignedSystemToken", "")).rsplit(".", 2)
        if len(parts) != 3:
            return "SignedSystemToken must be <token>.<yyyyMMddHHmm>.<signature>"
        token, stamp, signature = parts
        if token != creds.system_user_token:
            return "Unknown system user token"
        try:
            signed_at = datetime.strptime(stamp, "%Y%m%d%H%M").replace(tzinfo=UTC)
        except ValueError:
            return "SignedSystemToken timestamp must be yyyyMMddHHmm (UTC)"
        if abs((datetime.now(UTC) - signed_at).total_seconds()) > creds.signature_window_seconds:
            return "SignedSystemToken timestamp is too old or in the future"
        try:
            self._partner_key.verify(
                base64.b64decode(signature, validate=True),
                f"{token}.{stamp}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, binascii.Error, ValueError):
            return "Signature of the system user token is not valid"
        return None

    def _jwt(self, ticket: str, webapi_url: str) -> str:
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT"}
        claims = {
            TICKET_CLAIM: ticket,
            CONTEXT_CLAIM: self.credentials.context_identifier,
            "http://schemes.superoffice.net/identity/webapi_url": webapi_url,
            "iss": "SuperOffice AS",
            "iat": now,
            "nbf": now,
            "exp": now + 60,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._jwt_key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    # -- OpenID refresh token

    def refresh(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        creds = self.credentials
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type"}
        client_id = form.get("client_id", "")
        if creds.oauth_clients.get(client_id) != form.get("client_secret") or not client_id:
            return 401, {"error": "invalid_client"}
        if creds.refresh_tokens.get(form.get("refresh_token", "")) != client_id:
            return 400, {"error": "invalid_grant", "error_description": "refresh token unknown or revoked"}
        token = f"8A:{creds.context_identifier}." + secrets.token_urlsafe(24)
        with self._lock:
            self._access_tokens[token] = time.time() + creds.access_token_lifetime_seconds
            self.issued += 1
        return 200, {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": int(creds.access_token_lifetime_seconds),
        }

    # -- API calls

    def authorize(self, headers: Mapping[str, str]) -> None:
        """Accept the request's credentials or raise ``ApiError(401)``."""
        value = headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        scheme = scheme.lower()
        with self._lock:
            if scheme == "soticket":
                self._check_expiry(self._tickets, token, "ticket")
                if headers.get("so-apptoken") != self.credentials.application_token:
                    raise ApiError(401, "SO-AppToken is missing or not this application's", "Unauthorized")
            elif scheme == "bearer":
                self._check_expiry(self._access_tokens, token, "access token")
            elif scheme == "basic":
                self._check_basic(token)
            else:
                raise ApiError(401, "Authorization required", "Unauthorized")
            if self._expire_countdown is not None:
                self._expire_countdown -= 1
                if self._expire_countdown <= 0:
                    self._expire_all_locked()

    def _check_expiry(self, issued: dict[str, float], token: str, what: str) -> None:
        expires = issued.get(token)
        if expires is None:
            raise ApiError(401, f"Unknown {what}", "Unauthorized")
        if time.time() >= expires:
            raise ApiError(401, f"The {what} has expired", "Unauthorized")

    def _check_basic(self, token: str) -> None:
        try:
            user, _, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise ApiError(401, "Malformed Basic credentials", "Unauthorized") from None
        if not user or self.credentials.basic_users.get(user) != password:
            raise ApiError(401, "Wrong user name or password", "Unauthorized")

    # -- switches for tests

    def expire_all(self) -> None:
        """Every ticket and access token issued so far expires now (as if their lifetime ran out)."""
        with self._lock:
            self._expire_all_locked()

    def expire_after(self, calls: int) -> None:
        """Let ``calls`` more API calls through, then expire every credential issued so far."""
        with self._lock:
            self._expire_countdown = calls

    def _expire_all_locked(self) -> None:
        now = time.time()
        self._tickets = dict.fromkeys(self._tickets, now)
        self._access_tokens = dict.fromkeys(self._access_tokens, now)
        self._expire_countdown = None
