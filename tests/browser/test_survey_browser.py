"""The survey in real Chromium: answered by mouse and by keyboard alone, the answer stored byte for byte."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from hub.store.tables import Response
from tests.browser.live import LiveHub

pytestmark = pytest.mark.browser

COMMENT = "Leveringen var sen, men kundeservice var god: æøå ÆØÅ 🍷👍"


def stored(live: LiveHub, path: str) -> Response:
    async def query() -> Response:
        _, survey = await live.hub.engine.page_for_token(path.rsplit("/", 1)[1])
        assert survey is not None
        async with live.hub.store.session() as s:
            row = await s.scalar(select(Response).where(Response.invitation_id == survey.invitation_id))
        assert row is not None, "no response stored"
        return row

    return live.run(query())


def test_answering_with_the_mouse_stores_a_detractor_with_the_comment(page: Page, live: LiveHub) -> None:
    path = live.new_survey(language="nb-NO")
    page.goto(path)
    expect(page.locator("html")).to_have_attribute("lang", "nb")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Hvor sannsynlig er det")
    page.get_by_role("radio", name="6", exact=True).check()
    page.get_by_role("button", name="Neste").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Hva kunne vi gjort bedre?")
    expect(page.get_by_text("Ditt svar: 6")).to_be_visible()
    page.get_by_label("Hva kunne vi gjort bedre?").fill(COMMENT)
    page.get_by_role("radio", name="Kundeservice").check()
    page.get_by_role("button", name="Send").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Takk for svaret ditt!")
    expect(page).to_have_url(f"{live.url}{path}/thanks")
    row = stored(live, path)
    assert (row.rating, row.category, row.topic) == (6, "detractor", "Kundeservice")
    assert row.comment is not None and row.comment.encode() == COMMENT.encode()


def test_the_score_in_the_link_is_only_pre_selected(page: Page, live: LiveHub) -> None:
    path = live.new_survey()
    page.goto(f"{path}?score=9")
    expect(page.get_by_role("radio", name="9", exact=True)).to_be_checked()

    async def count() -> int:
        async with live.hub.store.session() as s:
            return len(list(await s.scalars(select(Response.id))))

    before = live.run(count())
    page.reload()
    assert live.run(count()) == before


def test_answering_with_the_keyboard_alone(page: Page, live: LiveHub) -> None:
    path = live.new_survey(language="de-AT")
    page.goto(path)
    page.keyboard.press("Tab")  # into the scale: the first radio button
    focused = page.locator(":focus")
    expect(focused).to_have_attribute("name", "score")
    expect(focused).to_have_accessible_name("0, Unwahrscheinlich")
    for _ in range(9):
        page.keyboard.press("ArrowRight")  # arrow keys move the choice along the scale
    page.keyboard.press("Space")
    expect(page.get_by_role("radio", name="9", exact=True)).to_be_checked()
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Weiter")
    page.keyboard.press("Space")

    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Was ist der wichtigste Grund für Ihre Bewertung?"
    )
    page.keyboard.press("Tab")  # the "change" link
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_attribute("id", "comment")
    page.keyboard.type("Schnell und freundlich – danke!")
    page.keyboard.press("Tab")  # the topics: a radio group; Space picks the focused one
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Senden")
    page.keyboard.press("Enter")

    expect(page.get_by_role("heading", level=1)).to_have_text("Vielen Dank für Ihre Antwort!")
    row = stored(live, path)
    assert (row.rating, row.category, row.comment) == (9, "promoter", "Schnell und freundlich – danke!")
    assert row.topic == "Delivery"  # no German topics configured: the English ones
    assert row.language == "de"


def test_focus_is_visible_on_the_scale(page: Page, live: LiveHub) -> None:
    page.goto(live.new_survey())
    page.keyboard.press("Tab")
    box = page.locator(".option input:focus + .box")
    outline = box.evaluate(
        "element => getComputedStyle(element).outlineStyle + ' ' + getComputedStyle(element).outlineWidth"
    )
    assert outline == "solid 3px"
