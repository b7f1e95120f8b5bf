"""The cockpit's people and campaigns pages in Chromium: search, open a person, erase them after the
confirmation step, and find them gone; every page free of axe-core violations at desktop and phone size.

The served hub runs in demo mode without a password, where this machine's own requests are the admin.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from hub.config import HubConfig
from hub.store.tables import Person
from tests.browser.live import LiveHub
from tests.browser.test_survey_accessibility import problems
from tests.helpers import survey_flow

pytestmark = pytest.mark.browser

SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


class CockpitLiveHub(LiveHub):
    """The live hub in demo mode: the cockpit is open to requests from this machine, as its admin."""

    def _config(self) -> HubConfig:
        config = super()._config()
        config.hub.demo = True
        return config


@pytest.fixture(scope="module")
def cockpit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CockpitLiveHub]:
    with CockpitLiveHub(tmp_path_factory.mktemp("cockpit")) as live:
        yield live


def surveyed(live: LiveHub, crm_id: str, name: str, email: str) -> int:
    """``name`` closes a case and is sent a survey; returns their id in the hub."""
    live.crm_state.people[crm_id] = {"id": crm_id, "email": email, "first_name": name, "language": "en"}
    live.run(survey_flow(live.hub, live.crm_state, case_id=f"C-{crm_id}", person=crm_id))

    async def person_id() -> int:
        async with live.hub.store.session() as s:
            found = await s.scalar(select(Person.id).where(Person.email == email))
        assert found is not None
        return found

    return live.run(person_id())


def violations(page: Page, axe_script: Path) -> list[str]:
    """Every axe-core violation on the page, whatever its impact (minor and moderate too)."""
    return problems(page, axe_script, impacts=("minor", "moderate", "serious", "critical"))


def test_search_open_and_erase_a_person(page: Page, cockpit: CockpitLiveHub, axe_script: Path) -> None:
    surveyed(cockpit, "Z1", "Zora", "zora.quist@example.com")
    page.goto(cockpit.url + "/admin/people")
    page.get_by_label("Name, email or phone").fill("QUIST")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("Matches for “QUIST”: 1")).to_be_visible()
    page.get_by_role("link", name="Zora").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Zora")
    expect(page.get_by_role("cell", name="case_closed").first).to_be_visible()
    expect(page.get_by_text("zora.quist@example.com")).to_be_visible()
    page.get_by_role("link", name="Erase this person…").click()
    page.get_by_role("button", name="Erase for good").click()  # not confirmed: nothing happens
    expect(page.get_by_role("alert")).to_have_text("Tick the box to confirm the erase.")
    assert violations(page, axe_script) == []
    page.get_by_label("I understand that this erases the person for good.").check()
    page.get_by_role("button", name="Erase for good").click()
    expect(page.get_by_role("status")).to_contain_text("The person was erased")
    page.get_by_label("Name, email or phone").fill("quist")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("Matches for “quist”: 0")).to_be_visible()
    assert page.get_by_text("zora.quist@example.com").count() == 0


def test_the_campaigns_check_runs_on_request(page: Page, cockpit: CockpitLiveHub) -> None:
    page.goto(cockpit.url + "/admin/campaigns")
    expect(page.get_by_role("heading", name="case_closed")).to_be_visible()
    page.get_by_role("button", name="Check crm").click()
    row = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="crm"))
    expect(row).to_contain_text("passed")
    expect(row).to_contain_text("token accepted")
    expect(row).to_contain_text("checked at")


@pytest.mark.parametrize("size", SIZES)
def test_the_pages_pass_axe(browser: Browser, cockpit: CockpitLiveHub, axe_script: Path, size: str) -> None:
    person = surveyed(cockpit, f"A-{size}", "Alma", f"alma.{size}@example.com")
    context = browser.new_context(base_url=cockpit.url, viewport=SIZES[size], bypass_csp=True, locale="en-GB")
    try:
        page = context.new_page()
        for path in ("/admin/people", "/admin/people?q=alma", f"/admin/people/{person}", "/admin/campaigns"):
            page.goto(path)
            assert violations(page, axe_script) == [], path
        page.get_by_role("button", name="Check all connectors and channels").click()
        expect(page.get_by_text("checked at").first).to_be_visible()
        assert violations(page, axe_script) == [], "campaigns with check results"
    finally:
        context.close()
