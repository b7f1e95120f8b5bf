"""Tokens for Dataverse from Microsoft Entra ID, through msal's client-credentials flow.

One ``ConfidentialClientApplication`` per connector instance, created on first use, keeps msal's own token
cache (a token close to expiry is renewed by msal). msal is synchronous, so it runs in a worker thread; its
HTTP goes through ``MsalHttp``, which hands each request to the connector's shared httpx client on the
hub's event loop: the hub's timeouts, proxy and CA bundle apply to Entra ID exactly as to Dataverse.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
import jwt
import msal  # type: ignore[import-untyped]  # msal ships no type information

from hub import AuthError, ConfigError, TransientError
from hub_dynamics.config import CertificateAuth, DynamicsSettings

T = TypeVar("T")

#: what msal may pass to ``get``/``post`` that httpx understands
_REQUEST_ARGS = frozenset({"params", "headers", "data", "json", "timeout"})
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)


class MsalHttp:
    """msal's ``http_client``: requests-like ``get``/``post`` over the connector's httpx client.

    Called from msal's worker thread; each call is run on ``loop`` and waited for. httpx's ``Response``
    already has what msal reads (``status_code``, ``text``, ``headers``, ``raise_for_status``).
    """

    def __init__(self, client: httpx.AsyncClient, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()

    @staticmethod
    def _args(kwargs: dict[str, Any]) -> dict[str, Any]:
        """httpx's arguments from msal's; form values msal hands over as bytes (the client assertion)
        become text, as requests would send them (httpx would send their repr)."""
        # timeout=None would switch httpx's timeouts off: the connector's own timeouts apply instead
        args = {k: v for k, v in kwargs.items() if k in _REQUEST_ARGS and v is not None}
        if isinstance(args.get("data"), dict):
            args["data"] = {
                k: v.decode("ascii") if isinstance(v, bytes) else v for k, v in args["data"].items()
            }
        return args

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._run(self._client.get(url, **self._args(kwargs)))

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._run(self._client.post(url, **self._args(kwargs)))

    def close(self) -> None:
        """msal may call this; the httpx client belongs to the connector and is closed there."""


def certificate_credential(auth: CertificateAuth) -> dict[str, str]:
    """msal's certificate credential from one PEM holding the private key and the certificate."""
    pem = auth.certificate.get_secret_value()
    blocks = {match.group(1): match.group(0) for match in _PEM_BLOCK.finditer(pem)}
    key = next((block for kind, block in blocks.items() if "PRIVATE KEY" in kind), None)
    certificate = blocks.get("CERTIFICATE")
    if key is None or certificate is None:
        raise ConfigError(
            "auth.certificate must be a PEM holding both the private key and the certificate "
            "(cat key.pem cert.pem > d365.pem)"
        )
    credential = {"private_key": key, "public_certificate": certificate}
    if auth.passphrase is not None:
        credential["passphrase"] = auth.passphrase.get_secret_value()
    return credential


class TokenSource:
    """Bearer tokens for one environment; ``renew()`` drops the cached one after Dataverse refused it."""

    def __init__(self, settings: DynamicsSettings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self._client = client
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()

    def _application(self, loop: asyncio.AbstractEventLoop) -> msal.ConfidentialClientApplication:
        with self._lock:
            if self._app is None:
                auth = self.settings.auth
                credential: Any = (
                    certificate_credential(auth)
                    if isinstance(auth, CertificateAuth)
                    else auth.client_secret.get_secret_value()
                )
                self._app = msal.ConfidentialClientApplication(
                    auth.client_id,
                    client_credential=credential,
                    authority=self.settings.authority,
                    http_client=MsalHttp(self._client, loop),
                    instance_discovery=False,
                )
            return self._app

    def _acquire(self, loop: asyncio.AbstractEventLoop, fresh: bool) -> dict[str, Any]:
        try:
            app = self._application(loop)
            if fresh:
                app.remove_tokens_for_client()
            return dict(app.acquire_token_for_client(scopes=[self.settings.scope]))
        except jwt.PyJWTError as exc:  # the certificate's key cannot sign the client assertion
            raise AuthError(f"auth.certificate holds a key msal cannot sign with: {exc}") from None
        except ValueError as exc:  # msal: the authority's discovery document was refused (unknown tenant)
            raise AuthError(
                f"Entra ID refused the authority {self.settings.authority}: {str(exc)[:200]}; "
                "check tenant_id and authority_host"
            ) from None

    async def token(self, fresh: bool = False) -> str:
        """A valid access token (msal's cache first); ``fresh`` forces a new one."""
        loop = asyncio.get_running_loop()
        try:
            result = await asyncio.to_thread(self._acquire, loop, fresh)
        except httpx.TransportError as exc:
            never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
            raise TransientError(f"Entra ID unreachable: {type(exc).__name__}", sent=not never_sent) from None
        except httpx.HTTPStatusError as exc:
            raise TransientError(f"Entra ID answered HTTP {exc.response.status_code}") from None
        if "access_token" in result:
            return str(result["access_token"])
        error = str(result.get("error", "unknown_error"))
        description = str(result.get("error_description", ""))[:300]
        if error in ("temporarily_unavailable", "server_error"):
            raise TransientError(f"Entra ID: {error}")
        raise AuthError(
            f"Entra ID refused the {self.settings.auth.type} credentials of app "
            f"{self.settings.auth.client_id}: {error} {description}".strip()
        )
