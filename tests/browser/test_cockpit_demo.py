"""The cockpit of ``make demo`` in real Chromium, against the SuperOffice emulator the demo runs: an admin signs
in with the login the demo printed, starts a full re-sync from the connector's sync page, and the emulator is
written to again without holding anything twice (one timeline entry, one internal message on the request)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser
from rich.console import Console

from hub import demo

pytestmark = pytest.mark.browser

LINK = re.compile(
    r"The cockpit: (http://127\.0\.0\.1:\d+)/admin \(sign in as admin / (\S+), or as viewer / (\S+)\)"
)
WRITES = {"POST", "PUT", "PATCH"}


class RunningDemo:
    """``cxhub demo --auto`` (staying up) on a thread of its own, with its CRM emulator and closed case."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.out = io.StringIO()
        self.crm: Any = None
        self.case: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None
        pick = demo.pick_emulators

        def keep(crm: str) -> Any:
            connector, channel = pick(crm)
            close_case = connector.close_case

            def closed() -> Any:
                self.case = close_case()
                return self.case

            connector.close_case = closed  # type: ignore[method-assign]
            self.crm = connector
            return connector, channel

        monkeypatch.setattr(demo, "pick_emulators", keep)
        self.config = folder / "demo.toml"
        self.config.write_text(demo.DEMO_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.task = asyncio.current_task()  # type: ignore[assignment]
            console = Console(file=self.out, width=300)
            await demo.run_demo(self.config, "superoffice", True, console, stay=True)

        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(main())

    def start(self) -> tuple[str, str]:
        self.thread.start()
        deadline = time.monotonic() + 120
        while "Ctrl-C stops the demo" not in self.out.getvalue():
            assert self.thread.is_alive() and time.monotonic() < deadline, self.out.getvalue()
            time.sleep(0.1)
        found = LINK.search(self.out.getvalue())
        assert found is not None, self.out.getvalue()
        return found.group(1), found.group(2)

    def stop(self) -> None:
        if self.loop is not None and self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(timeout=30)

    def writes(self) -> int:
        emulator, _server = self.crm._running()
        return sum(1 for call in list(emulator.calls) if call.method in WRITES and call.status < 300)


@pytest.fixture
def running_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningDemo]:
    running = RunningDemo(tmp_path, monkeypatch)
    yield running
    running.stop()


# stopping the demo (Ctrl-C) must end its jobs before its database: a statement still running on a closed
# event loop would fail on its thread
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_full_resync_from_the_cockpit_writes_again_without_a_duplicate(
    browser: Browser, running_demo: RunningDemo
) -> None:
    url, admin_password = running_demo.start()
    before = running_demo.writes()
    assert running_demo.crm.show(running_demo.case)["timeline"], "the story wrote its answer"

    context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.goto("/admin/login")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(admin_password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/admin**")
    page.goto("/admin/sync/crm")
    page.get_by_role("link", name="Full re-sync…").click()
    page.wait_for_url("**/admin/sync/crm/full")
    page.get_by_role("button", name=re.compile(r"Queue \d+ items and write them now")).click()
    page.wait_for_url("**/admin/sync/crm?**")
    assert "items were queued again" in page.content()
    context.close()

    deadline = time.monotonic() + 30
    while running_demo.writes() <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running_demo.writes() > before, "the re-sync wrote to the CRM again"
    shown = running_demo.crm.show(running_demo.case)
    assert len(shown["timeline"]) == 1, shown
    assert len(shown["internal messages"]) == 1, shown
    assert shown["person"]["x_cxhub_count"] == "1", shown
