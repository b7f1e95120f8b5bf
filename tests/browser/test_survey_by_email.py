"""The whole customer path with real parts: the survey email arrives over SMTP (aiosmtpd), Chromium opens the
link from it, the answer is stored byte for byte, and the detractor alert reaches the case owner by email."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_email.catcher import MailCatcher
from playwright.sync_api import Browser, expect
from sqlalchemy import select

from hub.config import HubConfig
from hub.store.tables import Response
from tests.browser.live import BRANDING, LiveHub
from tests.helpers import case_event

pytestmark = pytest.mark.browser

COMMENT = "Det tog for lang tid: æøå ÆØÅ 🍷👍"


class EmailLiveHub(LiveHub):
    """The live hub with the real email channel, sending to a local aiosmtpd catcher."""

    def __init__(self, folder: Path, catcher: MailCatcher) -> None:
        super().__init__(folder, BRANDING)
        self.catcher = catcher

    def _config(self) -> HubConfig:
        config = super()._config()
        config.hub.plugins = ["email"]
        config.channels["mail"] = config.channels["mail"].model_validate(
            {"plugin": "email", **self.catcher.channel_settings(), "from_address": "feedback@nordlys.example"}
        )
        return config


@pytest.fixture(scope="module")
def mailed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmailLiveHub]:
    with MailCatcher() as catcher, EmailLiveHub(tmp_path_factory.mktemp("mail"), catcher) as live:
        yield live


def test_from_the_email_to_the_crm_and_the_owners_alert(browser: Browser, mailed: EmailLiveHub) -> None:
    live, catcher = mailed, mailed.catcher
    live.crm_state.people["D1"] = {
        "id": "D1",
        "email": "dorte@example.dk",
        "first_name": "Dorte",
        "language": "da-DK",
    }

    async def close_case() -> None:
        await live.hub.engine.receive("crm", [case_event("C-D1", "D1")], source="webhook")
        await live.hub.engine.process_pending()
        await live.hub.engine.dispatch_due()

    live.run(close_case())
    [mail] = catcher.wait_for(1, timeout=15)
    assert mail.rcpt_tos == ("dorte@example.dk",)
    assert mail.subject.startswith("Nordlys Energi") and "Hvordan" in mail.subject
    assert mail.text is not None and "Hvor sandsynligt er det" in mail.text
    assert mail.html is not None and "Hvor sandsynligt er det" in mail.html
    unsubscribe = mail.message["List-Unsubscribe"]
    assert unsubscribe is not None and f"<{live.url}/u/" in unsubscribe
    buttons = re.findall(rf'href="({re.escape(live.url)}/s/[^"?]+\?score=(\d+))"', mail.html)
    assert [int(score) for _, score in buttons] == list(range(11))
    link = dict((int(score), url) for url, score in buttons)[6]

    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="da-DK")
    page = context.new_page()
    page.goto(link)
    expect(page.get_by_role("radio", name="6", exact=True)).to_be_checked()  # pre-selected, not recorded
    page.get_by_role("button", name="Næste").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Hvad kunne vi gøre bedre?")
    page.get_by_label("Hvad kunne vi gøre bedre?").fill(COMMENT)
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Tak for dit svar!")
    context.close()

    async def stored() -> Response | None:
        async with live.hub.store.session() as s:
            return await s.scalar(select(Response))

    row = live.run(stored())
    assert row is not None and (row.rating, row.category) == (6, "detractor")
    assert row.comment is not None and row.comment.encode("utf-8") == COMMENT.encode("utf-8")

    # the owner hears at once of the score, and again when the comment follows
    _, alert, comment_alert = catcher.wait_for(3, timeout=15)
    assert alert.rcpt_tos == comment_alert.rcpt_tos == ("owner@example.com",)
    assert "Detractor" in alert.subject and "6" in alert.subject
    assert alert.text is not None and "Dorte answered 6 (detractor)" in alert.text
    assert comment_alert.subject.startswith("Comment: ")
    assert comment_alert.text is not None and f"Comment: {COMMENT}" in comment_alert.text
