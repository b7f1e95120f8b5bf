"""The demo's phone page in Chromium: the survey texted to a person shows as a phone shows it, the demo user
types the score, the hub's follow-up question appears, the reason typed next lands on the same response.

Two phones: the two-way test channel's (``tests.fakes.phone``), and the real SMS plugin's Twilio emulator with
its phones (``hub_sms.emulator.SmsEmulator``) as ``cxhub demo --channel sms`` serves it. Either way the replies
reach the served hub over real HTTP at ``/inbound/sms``, signed as the provider signs them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hub_sms.emulator import SmsEmulator
from playwright.sync_api import Browser, Page, expect
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


def by_text(config: HubConfig, settings: dict[str, Any]) -> HubConfig:
    """``config`` in demo mode with channel ``sms`` of ``settings`` first, its campaign answered by reply."""
    config.hub.demo = True
    config.channels["sms"] = config.channels["mail"].model_validate(settings)
    campaign = config.campaigns["case_closed"]
    campaign.channels = ["sms", "mail"]
    campaign.answer_by = "reply"
    return config


class PhoneLiveHub(LiveHub):
    """The live hub in demo mode, surveying by text (the two-way test channel) and answered by reply."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, BRANDING)
        self.phone = FakePhone()

    def _config(self) -> HubConfig:
        config = super()._config()
        config.hub.plugin_modules = [*config.hub.plugin_modules, "tests.fakes.twoway"]
        return by_text(config, {"plugin": "twoway", "secret": twoway.SECRET})

    def prepare(self, app: Any) -> None:
        app.state.phone = self.phone
        self.phone.start(self.folder, self.url, "sms")


@pytest.fixture(scope="module")
def texted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoneLiveHub]:
    twoway.PROVIDER = twoway.Provider()
    with PhoneLiveHub(tmp_path_factory.mktemp("phone")) as live:
        yield live


class SmsLiveHub(LiveHub):
    """The live hub in demo mode, surveying by text through the SMS plugin and its Twilio emulator with phones
    (served over real HTTP, its number forwarding texts to this hub's ``/inbound/sms``), answered by reply."""

    def __init__(self, folder: Path, phone: SmsEmulator) -> None:
        super().__init__(folder, BRANDING)
        self.phone = phone

    def _config(self) -> HubConfig:
        config = super()._config()
        self.phone.start(self.folder, self.url, "sms")  # self.url is this hub's, known before the config
        config.hub.plugins = ["sms"]
        settings = {k: v for k, v in self.phone.instance_settings().items() if v is not None}
        return by_text(config, {"plugin": "sms", **settings})

    def prepare(self, app: Any) -> None:
        app.state.phone = self.phone

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self.phone.stop()


@pytest.fixture(scope="module")
def texted_by_sms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmsLiveHub]:
    phone = SmsEmulator()
    with pytest.MonkeyPatch.context() as env:
        for name, value in phone.environment().items():
            env.setenv(name, value)  # the emulator's auth token, where the channel's settings read it
        with SmsLiveHub(tmp_path_factory.mktemp("sms-phone"), phone) as live:
            yield live


def text_survey(live: LiveHub, person: str, first_name: str) -> None:
    """``person`` (mobile ``NUMBER``) closes a case; the hub texts the survey."""
    live.crm_state.people[person] = {
        "id": person,
        "phone": NUMBER,
        "first_name": first_name,
        "language": "en",
    }

    async def invite() -> None:
        hub = live.hub
        await hub.engine.receive("crm", [case_event(f"C-{person}", person)], source="webhook")
        await hub.engine.process_pending()
        await hub.engine.dispatch_due()

    live.run(invite())


def answer_on_the_phone_page(page: Page, reason: str) -> None:
    """As the demo user: read the texted survey, type 9, see the hub's follow-up question, type ``reason``."""
    page.goto("/admin/phone")
    phone = page.get_by_role("region", name=f"Phone {NUMBER}")
    expect(phone).to_contain_text(reply_instructions("en", SurveyKind.NPS))

    phone.get_by_label(f"Reply from {NUMBER}").fill("9")
    phone.get_by_role("button", name="Send").click()
    phone = page.get_by_role("region", name=f"Phone {NUMBER}")
    followup = text("en", followup_key(SurveyKind.NPS, NpsCategory.PROMOTER))
    expect(phone.locator(".bubble.theirs .bubble-text").last).to_contain_text(followup)

    phone.get_by_label(f"Reply from {NUMBER}").fill(reason)
    phone.get_by_role("button", name="Send").click()
    mine = page.get_by_role("region", name=f"Phone {NUMBER}").locator(".bubble.mine .bubble-text")
    expect(mine).to_have_text(["9", reason])


def stored_answers(live: LiveHub) -> list[tuple[int, str | None]]:
    async def answers() -> list[tuple[int, str | None]]:
        async with live.hub.store.session() as s:
            return [(r.rating, r.comment) for r in await s.scalars(select(Response))]

    return live.run(answers())


def test_the_demo_user_answers_by_text_on_the_phone_page(
    browser: Browser, texted: PhoneLiveHub, axe_script: Path
) -> None:
    text_survey(texted, "T1", "Tove")
    context = browser.new_context(  # CSP bypassed only so that axe can be injected
        base_url=texted.url, viewport={"width": 390, "height": 844}, bypass_csp=True
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    answer_on_the_phone_page(page, "Kind and quick 👍")
    assert stored_answers(texted) == [(9, "Kind and quick 👍")]
    assert problems(page, axe_script) == []
    context.close()


def test_the_demo_user_answers_through_the_sms_emulators_phone(
    browser: Browser, texted_by_sms: SmsLiveHub
) -> None:
    """The real SMS channel: the survey goes out through the Twilio emulator, the page's replies go from the
    emulator's phone to the hub as Twilio's signed webhooks, and the follow-up question comes back by SMS."""
    text_survey(texted_by_sms, "S1", "Sune")
    [sent] = texted_by_sms.phone.messages(NUMBER)
    assert sent.sender == "hub" and sent.body.startswith("Nordlys Energi: ")  # the texted survey, fitted
    context = browser.new_context(base_url=texted_by_sms.url, viewport={"width": 390, "height": 844})
    context.set_default_timeout(10_000)
    page = context.new_page()
    answer_on_the_phone_page(page, "Kind and quick 👍")
    assert stored_answers(texted_by_sms) == [(9, "Kind and quick 👍")]

    [conversation] = texted_by_sms.phone.conversations()
    assert [m["sender"] for m in conversation["messages"]] == ["hub", "phone", "hub", "phone"]
    followup = text("en", followup_key(SurveyKind.NPS, NpsCategory.PROMOTER))
    assert followup in conversation["messages"][2]["text"], json.dumps(conversation)
    context.close()
