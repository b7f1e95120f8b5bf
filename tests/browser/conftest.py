"""Fixtures of the browser tests: one served hub and one Chromium per test module, a fresh page per test.

Chromium is the Debian package (``apt-get install chromium``), driven by Playwright; axe-core comes from npm
(``npm ci --prefix tests/browser``). Where either is missing the tests skip with the reason, except on CI
(``CI`` set), where they must run and fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from tests.browser.live import LiveHub

CHROMIUM = Path(os.environ.get("CXHUB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"


def needed(path: Path, what: str, install: str) -> Path:
    """``path`` if it exists; else skip (on a developer's machine) or fail (on CI) saying how to install it."""
    if path.exists():
        return path
    reason = f"{what} not found at {path}; install it with `{install}`"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so browser tests must run)")
    pytest.skip(f"{reason}; CI is not set")


def launch(playwright: Playwright) -> Browser:
    executable = needed(CHROMIUM, "Chromium", "apt-get install -y chromium")
    return playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    needed(CHROMIUM, "Chromium", "apt-get install -y chromium")
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    with LiveHub(tmp_path_factory.mktemp("live")) as served:
        yield served


@pytest.fixture
def page(browser: Browser, live: LiveHub) -> Iterator[Page]:
    """A fresh browser context (no cookies) at phone size; CSP bypassed only so that axe can be injected."""
    context = browser.new_context(
        base_url=live.url, viewport={"width": 390, "height": 844}, bypass_csp=True, locale="en-GB"
    )
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def axe_script() -> Path:
    return needed(AXE, "axe-core", "npm ci --prefix tests/browser")
