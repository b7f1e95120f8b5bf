"""Fixtures of the SMS channel's tests: the Twilio emulator on a free port, channels pointed at it, messages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from hub_sms.channel import SmsChannel
from hub_sms.config import SmsSettings
from hub_sms.emulator import SmsEmulator

from hub import Branding, PluginContext, Recipient, ReplyMessage, ScaleOption, SurveyKind, SurveyMessage
from hub.http import make_client

MOBILE = "+4520304050"  # a Danish mobile number
PUBLIC_URL = "https://hub.example"


@pytest.fixture
def emulator() -> Iterator[SmsEmulator]:
    with SmsEmulator() as running:
        yield running


@pytest.fixture
def ctx() -> PluginContext:
    return PluginContext(instance="sms", public_url=PUBLIC_URL, http_client=make_client)


def settings_for(emulator: SmsEmulator, monkeypatch: pytest.MonkeyPatch, **changes: Any) -> SmsSettings:
    for name, value in emulator.environment().items():
        monkeypatch.setenv(name, value)
    values = {**emulator.instance_settings(), "timeout": 5, **changes}
    return SmsSettings.model_validate(values)


@pytest.fixture
async def make_channel(
    emulator: SmsEmulator, ctx: PluginContext, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., SmsChannel]]:
    """Build channels pointed at the emulator (settings keyword arguments replace any); closed after."""
    channels: list[SmsChannel] = []

    def make(**changes: Any) -> SmsChannel:
        channel = SmsChannel(settings_for(emulator, monkeypatch, **changes), ctx)
        channels.append(channel)
        return channel

    yield make
    for channel in channels:
        await channel.aclose()


#: an English NPS invitation to Ann's mobile, as the hub builds it
INVITATION: dict[str, Any] = {
    "invitation_id": 7,
    "campaign": "support",
    "recipient": Recipient(name="Ann Lee", phone=MOBILE, language="en"),
    "language": "en",
    "branding": Branding(company_name="Acme"),
    "survey_kind": SurveyKind.NPS,
    "subject": "How did we do?",
    "intro": "You recently contacted our support team.",
    "question": "How likely are you to recommend Acme to a friend?",
    "low_label": "Not at all likely",
    "high_label": "Extremely likely",
    "options": [ScaleOption(value=n, label=str(n), url=f"{PUBLIC_URL}/s/tok?rating={n}") for n in range(11)],
    "survey_url": f"{PUBLIC_URL}/s/tok",
    "unsubscribe_url": f"{PUBLIC_URL}/u/tok",
    "unsubscribe_text": "Unsubscribe from surveys",
}


def survey(**changes: Any) -> SurveyMessage:
    """The invitation with keyword arguments replacing any field."""
    return SurveyMessage(**{**INVITATION, **changes})


def reply_message(text: str, phone: str = MOBILE) -> ReplyMessage:
    return ReplyMessage(
        invitation_id=7, campaign="support", recipient=Recipient(phone=phone), language="en", text=text
    )


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client
