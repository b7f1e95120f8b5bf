"""The dashboard in Chromium: the figures it shows are those of the seeded answers, its filter form works as a
plain GET form, and axe-core finds nothing at desktop (1280x800) and phone (390x844) size."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from pydantic import SecretStr

from hub.config import HubConfig
from hub.testing.answers import seed
from tests.browser.live import BRANDING, LiveHub
from tests.browser.test_survey_accessibility import problems
from tests.test_cockpit_dashboard import NOW, PASSWORD, expected, seeded_items

pytestmark = pytest.mark.browser

DEAL_WON = """
[campaigns.deal_won]
trigger = { connector = "crm", event = "deal.won" }
survey = "csat"
channels = ["mail"]
"""
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
ITEMS = seeded_items()


class DashboardLiveHub(LiveHub):
    """The live hub with an admin password, two campaigns (NPS and CSAT), its clock at ``NOW``."""

    def _config(self) -> HubConfig:
        config = super()._config()
        config.hub.admin_password = SecretStr(PASSWORD)
        return config


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardLiveHub]:
    with DashboardLiveHub(tmp_path_factory.mktemp("dashboard"), BRANDING + DEAL_WON) as live:
        live.hub.now = lambda: NOW

        async def seeded() -> None:
            async with live.hub.store.engine.begin() as conn:
                await seed(conn, ITEMS)

        live.run(seeded())
        yield live


@pytest.fixture(params=list(SIZES))
def signed_in(request: pytest.FixtureRequest, browser: Browser, board: DashboardLiveHub) -> Iterator[Page]:
    """A page at desktop or phone size, signed in through the login form."""
    context = browser.new_context(
        base_url=board.url, viewport=SIZES[request.param], bypass_csp=True, locale="en-GB"
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto("/admin")
    page.get_by_label("User name").fill("admin")  # the built-in admin of hub.admin_password
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    yield page
    context.close()


def figures_on(page: Page) -> dict[str, str]:
    return {
        str(cell.get_attribute("data-figure")): cell.inner_text().strip()
        for cell in page.locator("[data-figure]").all()
    }


def test_the_figures_shown_are_those_of_the_seeded_answers(signed_in: Page) -> None:
    page = signed_in
    assert figures_on(page) == expected(ITEMS, {})
    page.get_by_label("Period", exact=True).select_option(label="Last 90 days")
    page.get_by_label("Connector", exact=True).select_option("crm")
    page.get_by_label("Trend by", exact=True).select_option(label="Month")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("heading", name="Trend by month").first).to_be_visible()
    assert "connector=crm" in page.url and "period=90" in page.url  # a link to share
    assert figures_on(page) == expected(ITEMS, {"period": "90", "connector": "crm"})
    page.get_by_text("The figures of the chart").first.click()
    table = page.locator('table[data-trend="nps"]')
    expect(table).to_be_visible()
    answers = sum(int(cell) for cell in table.locator("tbody tr td:nth-child(2)").all_inner_texts())
    shown = figures_on(page)
    nps_answers = int(shown["promoters"]) + int(shown["passives"]) + int(shown["detractors"])
    assert answers == nps_answers


def test_no_accessibility_problem_and_nothing_wider_than_the_screen(
    signed_in: Page, axe_script: Path
) -> None:
    page = signed_in
    page.goto("/admin?period=365")
    for summary in page.locator("details summary").all():
        summary.click()  # the tables too
    assert problems(page, axe_script) == []
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"] if page.viewport_size else False
    chart = page.locator("svg.chart[role=img]").first
    assert chart.bounding_box() is not None
    page.goto("/admin?period=12&from=nonsense")  # the page with its error message
    expect(page.get_by_role("alert")).to_be_visible()
    assert problems(page, axe_script) == []
