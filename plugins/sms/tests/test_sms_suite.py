"""The hub's shared channel suite, run against the SMS channel and its Twilio emulator over real HTTP.

Replies and status callbacks are signed by the emulator for the URL the suite's hub is public at, exactly
as Twilio signs them for the hub's public URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from hub_sms.emulator import SmsEmulator

from hub.models import WebhookRequest
from hub.testing import Capabilities, ChannelSuite
from hub.testing.channel_suite import CHANNEL, channel_suite_config

MOBILE = "+4520304050"


def _capabilities() -> Capabilities:
    """Replies and delivery reports; ``delivery_statuses`` is known to the suite from the hub's SMS support
    on (a suite without it runs the reply tests only)."""
    try:
        return Capabilities(inbound_replies=True, delivery_statuses=True)  # type: ignore[call-arg]
    except TypeError:
        return Capabilities(inbound_replies=True)


class SmsHarness:
    """The SMS channel pointed at the Twilio emulator."""

    plugin = "sms"
    capabilities = _capabilities()

    def __init__(self, emulator: SmsEmulator) -> None:
        self.emulator = emulator
        emulator.forward_to(self.inbound_url.rsplit("/inbound/", 1)[0], CHANNEL)

    @property
    def inbound_url(self) -> str:
        """Where the suite's hub is reached by the provider: its public URL and the channel's inbound path."""
        public_url: str = channel_suite_config(self, Path("."))["hub"]["public_url"]
        return f"{public_url}/inbound/{CHANNEL}"

    def settings(self) -> dict[str, Any]:
        return {**self.emulator.instance_settings(), "auth_token": "env:SMS_SUITE_TOKEN", "timeout": 5}

    def bad_settings(self) -> dict[str, Any]:
        return {**self.settings(), "auth_token": "env:SMS_SUITE_WRONG_TOKEN"}

    def environment(self) -> dict[str, str]:
        return {"SMS_SUITE_TOKEN": self.emulator.state.auth_token, "SMS_SUITE_WRONG_TOKEN": "not-the-token"}

    def address(self) -> dict[str, str]:
        return {"phone": MOBILE}

    def survey_link(self, address: str) -> str | None:
        return self.emulator.survey_link(address)

    def fail_sends(self, count: int, status: int, retry_after: float | None = None) -> None:
        self.emulator.fail_sends(count, status, retry_after)

    def inbound_reply(self, sender: str, text: str) -> WebhookRequest:
        return self.emulator.inbound_request(sender, text, url=self.inbound_url)

    def tamper(self, request: WebhookRequest) -> WebhookRequest:
        form = dict(parse_qsl(request.body.decode("utf-8"), keep_blank_values=True))
        field = "Body" if "Body" in form else "MessageStatus"
        form[field] = form[field] + " (changed)"
        return request.model_copy(update={"body": urlencode(form).encode("utf-8")})

    def status_callback(self, message_id: str, status: str, error_code: str | None = None) -> WebhookRequest:
        return self.emulator.status_request(message_id, status, error_code, url=self.inbound_url)

    def messages_to(self, address: str) -> list[str]:
        return [text.body for text in self.emulator.messages(address)]

    def last_message_id(self, address: str) -> str | None:
        texts = self.emulator.messages(address)
        return texts[-1].sid if texts else None


@pytest.fixture
def sms_emulator() -> Iterator[SmsEmulator]:
    with SmsEmulator() as running:
        yield running


class TestSmsChannelSuite(ChannelSuite):
    @pytest.fixture
    def harness(self, sms_emulator: SmsEmulator) -> SmsHarness:
        return SmsHarness(sms_emulator)
