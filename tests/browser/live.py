"""A hub served by uvicorn on a loopback port, for the browser tests and the screenshot script.

The hub runs in its own thread with its own event loop, next to the fake CRM and channel of the other tests;
``run()`` executes a coroutine on that loop, so a test can create invitations and read the store while the
browser talks to the server.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import threading
import time
import tomllib
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import uvicorn

from hub.app import Hub
from hub.config import HubConfig, parse_config
from hub.testing.server import BackgroundServer
from hub.web import create_app
from tests.conftest import WEBHOOK_SECRET, config_text
from tests.fakes.crm import TOKEN, FakeState
from tests.fakes.crm import create_app as create_crm
from tests.helpers import survey_flow

T = TypeVar("T")

BRANDING = """
[hub.branding]
company_name = "Nordlys Energi"
colour = "#0f766e"

[surveys.csat]
kind = "csat"

[surveys.ces]
kind = "ces"

[surveys.smiley]
kind = "smiley"
"""
TOPICS = {
    "en": ["Delivery", "Billing", "Support", "The app"],
    "nb": ["Levering", "Faktura", "Kundeservice", "Appen"],
}


class LiveHub:
    """``with LiveHub(folder) as live:`` serves a hub at ``live.url`` until the block ends."""

    def __init__(self, folder: Path, extra: str = BRANDING) -> None:
        self.folder = folder
        self.extra = extra
        self.crm_state = FakeState()
        self.url = ""
        self._crm = BackgroundServer(create_crm(self.crm_state))
        self._people = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._hub: Hub | None = None

    @property
    def hub(self) -> Hub:
        assert self._hub is not None, "the hub is not running"
        return self._hub

    def _config(self) -> HubConfig:
        os.environ.setdefault("FAKE_CRM_TOKEN", TOKEN)
        os.environ.setdefault("FAKE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        os.environ.setdefault("CXHUB_TEST_API_TOKEN", "api-token-for-tests-42")
        database = f"sqlite+aiosqlite:///{self.folder / 'hub.db'}"
        config = parse_config(
            tomllib.loads(config_text(database, self._crm.url, self.extra)), self.folder / "cxhub.toml"
        )
        config.policy.min_days_between_surveys = 0
        config.surveys["nps"].topics = dict(TOPICS)
        config.surveys["nps"].thank_you_link = "https://example.com/"
        return config

    def __enter__(self) -> LiveHub:
        self._crm.__enter__()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = self._config()
        config.hub.public_url = self.url  # links in messages point at this server
        self._thread = threading.Thread(target=self._serve, args=(config, sock), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while self._server is None or not self._server.started:
            if self._failure is not None:
                raise RuntimeError("the hub did not start") from self._failure
            if time.monotonic() > deadline:
                raise RuntimeError("the hub did not start within 20 s")
            time.sleep(0.02)
        return self

    def _serve(self, config: HubConfig, sock: socket.socket) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._hub = await Hub.open(config)
            app = create_app(self._hub, scheduler=False)
            self.prepare(app)
            server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
            self._server = server
            try:
                await server.serve(sockets=[sock])
            finally:
                await self._hub.close()

        try:
            asyncio.run(main())
        except BaseException as exc:
            self._failure = exc

    def prepare(self, app: Any) -> None:
        """Adjust the web app before it serves (a subclass adds what its pages need)."""

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=20)
        self._crm.__exit__(exc_type, exc, tb)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the hub's event loop and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def new_survey(self, kind: str = "nps", language: str | None = "en-GB") -> str:
        """A fresh person closes a case; returns the path of the survey link sent to them (``/s/<token>``)."""
        person = f"B{next(self._people)}"
        self.crm_state.people[person] = {
            "id": person,
            "email": f"{person.lower()}@example.com",
            "first_name": "Bea",
            "language": language,
        }
        self.hub.config.campaigns["case_closed"].survey = kind
        token = self.run(survey_flow(self.hub, self.crm_state, case_id=f"C-{person}", person=person))
        return f"/s/{token}"
