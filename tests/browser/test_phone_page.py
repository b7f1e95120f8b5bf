"""The demo's phone page in Chromium: the survey texted to a person shows as a phone shows it, the demo user
types the score, the hub's follow-up question appears, the reason typed next lands on the same response.

The phone is the two-way test channel's (``tests.fakes.phone``); its replies reach the served hub over real
HTTP at ``/inbound/sms``, as the SMS emulator's do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect
from sqlalchemy import select

from hub.config import HubConfig
from hub.models import NpsCategory, SurveyKind
from hub.store.tables import Response
from hub.texts import followup_key, reply_instructions, text
from tests.browser.live import BRANDING, LiveHub
from tests.browser.test_survey_accessibility import problems
from tests.fakes import twoway
from tests.fakes.phone import FakePhone
from tests.helpers import case_event

pytestmark = pytest.mark.browser

NUMBER = "+4520304050"


class PhoneLiveHub(LiveHub):
    """The live hub in demo mode, surveying by text (the two-way test channel) and answered by reply."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, BRANDING)
        self.phone = FakePhone()

    def _config(self) -> HubConfig:
        config = super()._config()
        config.hub.demo = True
        config.hub.plugin_modules = [*config.hub.plugin_modules, "tests.fakes.twoway"]
        config.channels["sms"] = config.channels["mail"].model_validate(
            {"plugin": "twoway", "secret": twoway.SECRET}
        )
        campaign = config.campaigns["case_closed"]
        campaign.channels = ["sms", "mail"]
        campaign.answer_by = "reply"
        return config

    def prepare(self, app: Any) -> None:
        app.state.phone = self.phone
        self.phone.start(self.folder, self.url, "sms")


@pytest.fixture(scope="module")
def texted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoneLiveHub]:
    twoway.PROVIDER = twoway.Provider()
    with PhoneLiveHub(tmp_path_factory.mktemp("phone")) as live:
        yield live


def test_the_demo_user_answers_by_text_on_the_phone_page(
    browser: Browser, texted: PhoneLiveHub, axe_script: Path
) -> None:
    texted.crm_state.people["T1"] = {"id": "T1", "phone": NUMBER, "first_name": "Tove", "language": "en"}

    async def invite() -> None:
        hub = texted.hub
        await hub.engine.receive("crm", [case_event("C-T1", "T1")], source="webhook")
        await hub.engine.process_pending()
        await hub.engine.dispatch_due()

    texted.run(invite())
    context = browser.new_context(  # CSP bypassed only so that axe can be injected
        base_url=texted.url, viewport={"width": 390, "height": 844}, bypass_csp=True
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto("/admin/phone")
    phone = page.get_by_role("region", name=f"Phone {NUMBER}")
    expect(phone).to_contain_text(reply_instructions("en", SurveyKind.NPS))

    phone.get_by_label(f"Reply from {NUMBER}").fill("9")
    phone.get_by_role("button", name="Send").click()
    phone = page.get_by_role("region", name=f"Phone {NUMBER}")
    followup = text("en", followup_key(SurveyKind.NPS, NpsCategory.PROMOTER))
    expect(phone.locator(".bubble.theirs .bubble-text").last).to_have_text(followup)

    phone.get_by_label(f"Reply from {NUMBER}").fill("Kind and quick 👍")
    phone.get_by_role("button", name="Send").click()
    mine = page.get_by_role("region", name=f"Phone {NUMBER}").locator(".bubble.mine .bubble-text")
    expect(mine).to_have_text(["9", "Kind and quick 👍"])

    async def answers() -> list[tuple[int, str | None]]:
        async with texted.hub.store.session() as s:
            return [(r.rating, r.comment) for r in await s.scalars(select(Response))]

    assert texted.run(answers()) == [(9, "Kind and quick 👍")]
    assert problems(page, axe_script) == []
    context.close()
