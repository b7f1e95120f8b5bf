"""axe-core, injected from the local npm install, finds no serious or critical problem on any survey page."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import update

from hub.store.tables import Token
from tests.browser.live import LiveHub

pytestmark = pytest.mark.browser

SERIOUS = ("serious", "critical")
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


def problems(page: Page, axe_script: Path, impacts: tuple[str, ...] = SERIOUS) -> list[str]:
    """Every serious or critical (or ``impacts``) axe violation on the page, one line each (rule, impact,
    where)."""
    page.add_script_tag(path=str(axe_script))
    results: dict[str, Any] = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
        WCAG,
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in results["violations"]
        if v["impact"] in impacts
    ]


@pytest.mark.parametrize("kind", ["nps", "csat", "ces", "smiley"])
def test_the_question_page(page: Page, live: LiveHub, axe_script: Path, kind: str) -> None:
    page.goto(live.new_survey(kind) + "?score=2")
    assert problems(page, axe_script) == []


def test_the_question_page_with_an_error(page: Page, live: LiveHub, axe_script: Path) -> None:
    page.goto(live.new_survey())
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_role("alert")).to_have_text("Please choose an answer.")
    assert problems(page, axe_script) == []


def test_the_follow_up_and_thank_you_pages(page: Page, live: LiveHub, axe_script: Path) -> None:
    page.goto(live.new_survey(language="fr-FR"))
    page.get_by_role("radio", name="8", exact=True).check()
    page.get_by_role("button", name="Suivant").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Que faudrait-il pour que vous nous donniez 10\u00a0?"
    )
    assert problems(page, axe_script) == []
    page.get_by_role("button", name="Envoyer").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Merci pour votre réponse\u00a0!")
    assert problems(page, axe_script) == []


def test_the_expired_and_unknown_pages(page: Page, live: LiveHub, axe_script: Path) -> None:
    path = live.new_survey(language="fi")

    async def expire() -> None:
        async with live.hub.store.session() as s:
            await s.execute(update(Token).values(expires_at=live.hub.now() - timedelta(minutes=1)))

    live.run(expire())
    reply = page.goto(path)
    assert reply is not None and reply.status == 410
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Tämä kysely on vanhentunut. Kiitos mielenkiinnostasi."
    )
    assert problems(page, axe_script) == []
    reply = page.goto("/s/no-such-token")
    assert reply is not None and reply.status == 404
    assert problems(page, axe_script) == []


def test_a_light_brand_colour_keeps_its_contrast(page: Page, live: LiveHub, axe_script: Path) -> None:
    branding = live.hub.config.hub.branding
    before = branding.colour
    branding.colour = "#ffd43b"  # a yellow: white text on it would fail
    try:
        page.goto(live.new_survey() + "?score=10")
        assert problems(page, axe_script) == []
        button = page.get_by_role("button", name="Next")
        assert button.evaluate("b => getComputedStyle(b).color") == "rgb(0, 0, 0)"
    finally:
        branding.colour = before
