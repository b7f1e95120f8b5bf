"""The cockpit in other languages, in Chromium: the language menu switches the page and the choice stays on the
next page; translated pages (the longest words are German and Finnish) stay accessible and fit a phone."""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from hub.config import HubConfig
from tests.browser.live import LiveHub
from tests.browser.test_survey_accessibility import problems

pytestmark = pytest.mark.browser

PAGES = ["/admin/mailbox", "/admin/phone", "/admin/replies"]
SIZES = {"phone": (390, 844), "desktop": (1280, 800)}


class DemoLiveHub(LiveHub):
    """The live hub in demo mode without a password (open to this machine), one email in its mailbox."""

    def _config(self) -> HubConfig:
        config = super()._config()
        config.hub.demo = True
        config.hub.admin_password = None
        config.hub.mailbox_dir = str(self.folder / "mail")
        message = EmailMessage()
        message["From"] = "survey@example.com"
        message["To"] = "ada@example.com"
        message["Subject"] = "Nordlys Energi: how did we do?"
        message.set_content("Answer here: https://example.com/s/x")
        mailbox.Maildir(self.folder / "mail", create=True).add(message)
        return config


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoLiveHub]:
    with DemoLiveHub(tmp_path_factory.mktemp("cockpit-languages")) as live:
        yield live


def fresh_page(browser: Browser, demo: DemoLiveHub, size: str) -> Page:
    """A page without cookies, CSP bypassed only so that axe can be injected."""
    width, height = SIZES[size]
    context = browser.new_context(
        base_url=demo.url, viewport={"width": width, "height": height}, bypass_csp=True, locale="en-GB"
    )
    context.set_default_timeout(10_000)
    return context.new_page()


def test_the_language_menu_switches_and_the_choice_stays(browser: Browser, demo: DemoLiveHub) -> None:
    page = fresh_page(browser, demo, "desktop")
    page.goto("/admin/mailbox")
    expect(page.get_by_role("heading", level=1)).to_have_text("Mailbox")
    page.get_by_label("Language").select_option("fi")
    page.get_by_role("button", name="Change").click()
    expect(page.locator("html")).to_have_attribute("lang", "fi")
    expect(page.get_by_role("heading", level=1)).to_have_text("Postilaatikko")
    page.get_by_role("navigation").get_by_role("link", name="Vastaukset").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Vastaukset")
    expect(page.locator("html")).to_have_attribute("lang", "fi")
    page.context.close()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("lang", ["de", "fi", "fr"])
def test_translated_pages_are_accessible_and_fit(
    browser: Browser, demo: DemoLiveHub, axe_script: Path, lang: str, size: str
) -> None:
    page = fresh_page(browser, demo, size)
    for path in PAGES:
        page.goto(f"{path}?lang={lang}")
        expect(page.locator("html")).to_have_attribute("lang", lang)
        assert problems(page, axe_script) == [], path
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} in {lang} is {overflow}px wider than the screen"
    page.goto(f"/admin/mailbox?lang={lang}")
    page.get_by_role("link", name="Nordlys Energi: how did we do?").click()  # the mailbox's only message
    expect(page.get_by_role("heading", level=1)).to_have_text("Nordlys Energi: how did we do?")
    assert problems(page, axe_script) == []
    page.context.close()
