"""The shared connector suite (hub.testing) run against the test connector, as a partner would run it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub import WebhookRequest
from hub.testing import Capabilities, ConnectorSuite
from tests.conftest import WEBHOOK_SECRET
from tests.fakes.crm import TOKEN, FakeState, sign


class FakeCrmHarness:
    plugin = "fakecrm"
    plugin_modules = ("tests.fakes.plugin",)
    capabilities = Capabilities(webhooks=True, polling=True, timeline=True)

    def __init__(self, state: FakeState, url: str) -> None:
        self.state = state
        self.url = url
        self.cases = 0

    def settings(self) -> dict[str, Any]:
        return {
            "base_url": self.url,
            "token": "env:SUITE_CRM_TOKEN",
            "webhook_secret": "env:SUITE_HOOK_SECRET",
        }

    def bad_settings(self) -> dict[str, Any]:
        return {**self.settings(), "token": "env:SUITE_BAD_TOKEN"}

    def environment(self) -> dict[str, str]:
        return {"SUITE_CRM_TOKEN": TOKEN, "SUITE_HOOK_SECRET": WEBHOOK_SECRET, "SUITE_BAD_TOKEN": "nope"}

    def close_case(self) -> str:
        """A case closed in the fake CRM, where its poll endpoint lists it (no webhook is sent)."""
        seq = len(self.state.cases) + 1
        self.state.cases.append({"seq": seq, "id": f"C{seq}", "person_id": "P1"})
        return f"C{seq}"

    def closed_case_webhook(self) -> WebhookRequest:
        self.cases += 1
        body = json.dumps({"id": f"S{self.cases}", "person_id": "P1"}).encode()
        return WebhookRequest(
            method="POST",
            url="http://127.0.0.1:9/hooks/crm",
            body=body,
            headers={"content-type": "application/json", "x-fake-signature": sign(WEBHOOK_SECRET, body)},
        )

    def tamper(self, request: WebhookRequest) -> WebhookRequest:
        return request.model_copy(update={"body": request.body.replace(b'"P1"', b'"P2"')})

    def fail_writes(self, count: int, status: int, retry_after: float | None = None) -> None:
        headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else {}
        self.state.write_failures = (count, status, headers)

    def timeline_entries(self, response_id: str) -> int:
        return sum(1 for key in self.state.records if key == f"timeline:{response_id}")


class TestFakeCrmConnector(ConnectorSuite):
    @pytest.fixture
    def harness(self, fake_crm, crm_state) -> FakeCrmHarness:
        return FakeCrmHarness(crm_state, fake_crm.url)
