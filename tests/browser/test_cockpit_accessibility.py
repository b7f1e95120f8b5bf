"""axe-core finds nothing, of any impact, on any page of the cockpit, at desktop and phone size, in English and
in German. The pages are read from the app's own routes, so a new page is checked without being listed here;
each is shown with something in it (twelve weeks of answers, a synced connector, a person, a caught email, a
texted survey). Only what is not the cockpit's own HTML is left out: the CSV download, the single sign-on
redirects (not configured here), and a caught email's own HTML, which the mail page shows in a sandbox."""

from __future__ import annotations

import mailbox
import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser
from sqlalchemy import select

from hub import accounts
from hub.config import HubConfig
from hub.demo_history import seed_history
from hub.store.tables import Person
from tests.browser.test_phone_page import PhoneLiveHub
from tests.browser.test_survey_accessibility import problems
from tests.helpers import app_routes

pytestmark = pytest.mark.browser

ADMIN = ("ada", "an admin's long passphrase")
NOT_PAGES = {"/admin/answers.csv", "/admin/sso/login", "/admin/sso/callback", "/admin/mailbox/{key}/html"}
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
ALL_IMPACTS = ("minor", "moderate", "serious", "critical")


class CockpitLiveHub(PhoneLiveHub):
    """The demo-mode live hub with a mail catcher's Maildir holding one message."""

    def _config(self) -> HubConfig:
        config = super()._config()
        maildir = mailbox.Maildir(self.folder / "mail", create=True)
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "hub@example.com", "bea@example.com", "Your view"
        message.set_content("How likely are you to recommend us? https://example.com/s/abc")
        message.add_alternative("<p>How likely are you to recommend us?</p>", subtype="html")
        self.mail_key = maildir.add(message)
        config.hub.mailbox_dir = str(self.folder / "mail")
        return config

    def prepare(self, app: Any) -> None:
        super().prepare(app)
        self.app = app


@pytest.fixture(scope="module")
def cockpit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CockpitLiveHub]:
    with CockpitLiveHub(tmp_path_factory.mktemp("cockpit")) as live:
        live.new_survey()
        live.run(_fill(live))
        yield live


async def _fill(live: CockpitLiveHub) -> None:
    await seed_history(live.hub, "crm", "case_closed", ["mail"])
    async with live.hub.store.session() as s:
        await accounts.add(s, "test", ADMIN[0], "admin", ADMIN[1])
    await live.hub.sync.run("crm")


def pages(live: CockpitLiveHub, app: Any) -> list[str]:
    """Every GET page under /admin, its parameters filled with things that exist."""

    async def a_person() -> int:
        async with live.hub.store.session() as s:
            return int(await s.scalar(select(Person.id).where(Person.email.is_not(None)).limit(1)) or 0)

    values = {"name": "crm", "person_id": str(live.run(a_person())), "key": live.mail_key}
    paths = sorted(
        {path for path, methods in app_routes(app) if path.startswith("/admin") and "GET" in methods}
    )
    return [
        re.sub(r"\{([^}]+)\}", lambda m: values[m.group(1)], path) for path in paths if path not in NOT_PAGES
    ]


def test_every_cockpit_page_is_clean_for_axe(
    browser: Browser, cockpit: CockpitLiveHub, axe_script: Path
) -> None:
    listed = pages(cockpit, cockpit.app)
    assert len(listed) >= 15, listed
    found: list[str] = []
    for size, viewport in SIZES.items():
        context = browser.new_context(
            base_url=cockpit.url, viewport=viewport, bypass_csp=True, locale="de-DE"
        )
        context.set_default_timeout(15_000)
        page = context.new_page()
        page.goto("/admin/login")
        page.locator("#username").fill(ADMIN[0])
        page.locator("#password").fill(ADMIN[1])
        page.locator("form.login button[type=submit]").click()
        page.wait_for_url("**/admin**")
        for language in ("en", "de"):
            for path in listed:
                joiner = "&" if "?" in path else "?"
                response = page.goto(f"{path}{joiner}lang={language}")
                assert response is not None and response.status == 200, (path, response and response.status)
                assert page.locator("html").get_attribute("lang") == language, path
                found += [f"{size} {language} {path}: {p}" for p in problems(page, axe_script, ALL_IMPACTS)]
                wide = page.evaluate("document.documentElement.scrollWidth")
                if size == "phone" and wide > viewport["width"]:
                    found.append(
                        f"{size} {language} {path}: {wide} px wide on a {viewport['width']} px screen"
                    )
        context.close()
    assert found == []
