"""The shared channel suite, run against a small two-way channel, so its two-way tests are proven before any
real SMS plugin runs them: the conversation, the request for a number, opt-out keywords, kept replies, and
delivery reports that race the send call, repeat, arrive out of order or say the number is a landline."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from hub.models import WebhookRequest
from hub.testing import Capabilities, ChannelSuite
from tests.fakes import twoway

LINK = re.compile(r"https?://\S+/s/[A-Za-z0-9_-]+")


class TwoWayHarness:
    plugin = "twoway"
    plugin_modules = ("tests.fakes.twoway",)
    capabilities = Capabilities(inbound_replies=True, delivery_statuses=True)

    def __init__(self, provider: twoway.Provider) -> None:
        self.provider = provider
        self.replies = 0

    def settings(self) -> dict[str, Any]:
        return {"secret": twoway.SECRET}

    def bad_settings(self) -> dict[str, Any]:
        return {"secret": "not-the-secret"}

    def environment(self) -> dict[str, str]:
        return {}

    def address(self) -> dict[str, str]:
        return {"phone": "+4520304050"}

    def survey_link(self, address: str) -> str | None:
        texts = self.messages_to(address)
        found = LINK.search(texts[-1]) if texts else None
        return found.group(0) if found else None

    def fail_sends(self, count: int, status: int, retry_after: float | None = None) -> None:
        self.provider.failures = (count, status, retry_after)

    def inbound_reply(self, sender: str, text: str) -> WebhookRequest:
        self.replies += 1
        return self.provider.sign({"type": "reply", "id": f"IN{self.replies}", "from": sender, "text": text})

    def tamper(self, request: WebhookRequest) -> WebhookRequest:
        return request.model_copy(update={"body": request.body.replace(b'"text": "', b'"text": "1')})

    def messages_to(self, address: str) -> list[str]:
        return [m["text"] for m in self.provider.delivered if m["to"] == address]

    def status_callback(self, message_id: str, status: str, error_code: str | None = None) -> WebhookRequest:
        return self.provider.sign(
            {"type": "status", "sid": message_id, "status": status, "error_code": error_code}
        )

    def last_message_id(self, address: str) -> str | None:
        sent = [m["sid"] for m in self.provider.delivered if m["to"] == address]
        return sent[-1] if sent else None


@pytest.fixture
def provider() -> Iterator[twoway.Provider]:
    twoway.PROVIDER = twoway.Provider()
    yield twoway.PROVIDER


class TestTwoWayChannelSuite(ChannelSuite):
    @pytest.fixture
    def harness(self, provider: twoway.Provider) -> TwoWayHarness:
        return TwoWayHarness(provider)
