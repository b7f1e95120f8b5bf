"""The screenshot script runs and writes pictures of the right sizes (the docs' copies are made with it)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.browser.live import LiveHub
from tests.browser.screenshots import capture, capture_cockpit

pytestmark = pytest.mark.browser


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_screenshots_at_phone_and_desktop_size(browser: Browser, live: LiveHub, tmp_path: Path) -> None:
    written = {path.name: png_size(path) for path in capture(live, browser, tmp_path)}
    assert written["survey-nps-phone.png"] == (780, 1688)  # 390x844 at device pixel ratio 2
    assert written["survey-nps-desktop.png"] == (1280, 800)
    assert {"followup-phone.png", "thanks-phone.png", "survey-smiley-phone.png"} <= set(written)


def test_cockpit_screenshots_at_phone_and_desktop_size(
    browser: Browser, live: LiveHub, tmp_path: Path
) -> None:
    written = {path.name: png_size(path) for path in capture_cockpit(live, browser, tmp_path)}
    assert written["cockpit-dashboard-phone.png"][0] == 780  # 390 wide at device pixel ratio 2
    assert written["cockpit-sync-desktop.png"][0] == 1280
    assert set(written) == {
        f"cockpit-{page}-{size}.png" for page in ("dashboard", "sync") for size in ("phone", "desktop")
    }
