"""Screenshots of the survey pages and the admin cockpit for the docs: ``python -m tests.browser.screenshots [FOLDER]``.

Serves a hub with the fake CRM (as the browser tests do), walks through a survey in headless Chromium at phone
(390x844) and desktop (1280x800) size, then gives the hub the demo's twelve weeks of earlier answers and a few
synced ones, signs in to the cockpit and shoots its dashboard and sync page, and writes PNGs to FOLDER
(default ``docs/screenshots``).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

from hub import accounts
from hub.demo_history import seed_history
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.browser.live import LiveHub

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ADMIN = ("ada", "screenshots of the cockpit")


def _shoot(
    browser: Browser,
    live: LiveHub,
    path: str,
    viewport: dict[str, int],
    target: Path,
    act: Callable[[Page], None] | None = None,
) -> Path:
    context = browser.new_context(
        base_url=live.url, viewport=viewport, device_scale_factor=2 if viewport == PHONE else 1
    )
    page = context.new_page()
    page.goto(path)
    if act is not None:
        act(page)
    page.screenshot(path=str(target), animations="disabled", caret="hide")
    context.close()
    return target


def _to_followup(page: Page) -> None:
    page.get_by_role("radio", name="6", exact=True).check()
    page.get_by_role("button").click()
    page.wait_for_url("**/s/*")


def _to_thanks(page: Page) -> None:
    _to_followup(page)
    page.locator("#comment").fill("Leveringen var to dager forsinket, men kundeservice ordnet det raskt.")
    page.get_by_role("button").click()
    page.wait_for_url("**/thanks")


def capture(live: LiveHub, browser: Browser, folder: Path) -> list[Path]:
    """Write every screenshot into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        _shoot(browser, live, live.new_survey(language="nb-NO"), PHONE, folder / "survey-nps-phone.png"),
        _shoot(
            browser,
            live,
            live.new_survey(language="en-GB") + "?score=9",
            DESKTOP,
            folder / "survey-nps-desktop.png",
        ),
        _shoot(
            browser,
            live,
            live.new_survey(language="nb-NO"),
            PHONE,
            folder / "followup-phone.png",
            _to_followup,
        ),
        _shoot(
            browser, live, live.new_survey(language="nb-NO"), PHONE, folder / "thanks-phone.png", _to_thanks
        ),
        _shoot(
            browser,
            live,
            live.new_survey("smiley", language="sv-SE") + "?score=3",
            PHONE,
            folder / "survey-smiley-phone.png",
        ),
        _shoot(
            browser,
            live,
            live.new_survey("csat", language="fr-FR"),
            DESKTOP,
            folder / "survey-csat-desktop.png",
        ),
    ]


async def _cockpit_history(live: LiveHub) -> None:
    """The demo's earlier answers, an admin to sign in as, and the answers of the survey screenshots synced."""
    hub = live.hub
    hub.config.campaigns["case_closed"].survey = "nps"  # the survey screenshots last asked another kind
    await seed_history(hub, "crm", "case_closed", ["mail"])
    async with hub.store.session() as s:
        await accounts.add(s, "screenshots", ADMIN[0], "admin", ADMIN[1])
    await hub.sync.run("crm")


def _cockpit_page(browser: Browser, live: LiveHub, path: str, viewport: dict[str, int], target: Path) -> Path:
    context = browser.new_context(
        base_url=live.url, viewport=viewport, device_scale_factor=2 if viewport == PHONE else 1
    )
    page = context.new_page()
    page.goto("/admin/login")
    page.get_by_label("User name").fill(ADMIN[0])
    page.get_by_label("Password").fill(ADMIN[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/admin**")
    page.goto(path)
    page.screenshot(path=str(target), animations="disabled", caret="hide", full_page=viewport == DESKTOP)
    context.close()
    return target


def capture_cockpit(live: LiveHub, browser: Browser, folder: Path) -> list[Path]:
    """The cockpit's dashboard and sync page at desktop and phone size, into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    live.run(_cockpit_history(live))
    return [
        _cockpit_page(browser, live, path, viewport, folder / f"cockpit-{name}-{size}.png")
        for name, path in (("dashboard", "/admin"), ("sync", "/admin/sync/crm"))
        for size, viewport in (("desktop", DESKTOP), ("phone", PHONE))
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch, LiveHub(Path(scratch)) as live, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for written in [
                *capture(live, browser, args.folder),
                *capture_cockpit(live, browser, args.folder),
            ]:
                print(written)
        finally:
            browser.close()


if __name__ == "__main__":
    main()
