"""Serving an ASGI app (an emulator, a fake service, the hub itself) on a free loopback port in a thread.

Emulators, tests, the demo and the benchmarks all need the same thing: real HTTP (or HTTPS) on 127.0.0.1,
started and stopped from synchronous code, without a fixed port. This module is public and stable
(part of the plugin API, see docs/plugin-authors.md) and needs nothing but the hub: an emulator a plugin
offers to ``cxhub demo`` may use it in a production install. ``TlsServer`` also needs ``trustme`` (in the
``cxhub[demo]`` and ``cxhub[testing]`` extras).
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import uvicorn


class BackgroundServer:
    """``with BackgroundServer(app) as server: ... server.url``; or ``start()`` / ``stop()``.

    ``certfile`` (a PEM holding the key and the certificate chain) serves HTTPS instead of HTTP.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", certfile: str | None = None) -> None:
        self.host = host
        self.scheme = "https" if certfile else "http"
        # IPPROTO_TCP lets asyncio set TCP_NODELAY on accepted connections (no 40 ms Nagle delay)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self.port: int = self._socket.getsockname()[1]
        tls: dict[str, Any] = {"ssl_certfile": certfile, "ssl_keyfile": certfile} if certfile else {}
        # a request left hanging (a client that timed out) must not hold the shutdown for long
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=1, **tls
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True, name=f"asgi-{self.port}"
        )

    @property
    def url(self) -> str:
        """``http(s)://127.0.0.1:PORT``, known before the server starts."""
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> Self:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class TlsServer(BackgroundServer):
    """A ``BackgroundServer`` over HTTPS with a certificate from a fresh throwaway CA (trustme).

    For a client library that insists on https. ``ca_file`` is the CA's PEM: clients must trust it
    explicitly (httpx: ``verify=ssl.create_default_context(cafile=server.ca_file)``), nothing else does.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        import trustme  # a test and demo dependency only

        self._dir = tempfile.TemporaryDirectory(prefix="cxhub-tls-")
        ca = trustme.CA()
        self.ca_file = str(Path(self._dir.name) / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        key_file = str(Path(self._dir.name) / "server.pem")
        ca.issue_cert(host, "localhost").private_key_and_cert_chain_pem.write_to_path(key_file)
        super().__init__(app, host, certfile=key_file)

    def stop(self) -> None:
        super().stop()
        self._dir.cleanup()
