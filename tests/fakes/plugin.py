"""The test connector and channel, registered through the same hooks as any partner plugin."""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from hub import (
    AddressRejected,
    BadInput,
    CaseEvent,
    ChannelType,
    CheckResult,
    ConnectorType,
    Delivery,
    FetchResult,
    InboundAnswer,
    InboundReply,
    OutboundMessage,
    PersonRecord,
    PluginContext,
    Secret,
    SkippableError,
    WebhookReply,
    WebhookRequest,
    WriteBackItem,
    WriteBackResult,
    hookimpl,
)
from hub.http import raise_for_status
from tests.fakes.crm import TOKEN, sign


class FakeCrmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str
    token: Secret
    webhook_secret: Secret
    batch_size: int = 50


def _person(data: dict[str, Any]) -> PersonRecord:
    return PersonRecord(
        crm_id=data["id"],
        email=data.get("email"),
        phone=data.get("phone"),
        first_name=data.get("first_name"),
        language=data.get("language"),
        opted_out=data.get("no_mail", False),
        opt_out_reason="no mailings" if data.get("no_mail") else None,
    )


def _event(case: dict[str, Any]) -> CaseEvent:
    return CaseEvent(
        event_id=f"case:{case['id']}:closed",
        event_type="case.closed",
        occurred_at=datetime.fromisoformat(case.get("closed_at", "2026-01-01T00:00:00+00:00")),
        record_type="case",
        record_id=case["id"],
        person_id=case.get("person_id"),
        owner_email=case.get("owner_email"),
        fields=case.get("fields", {}),
    )


class FakeCrmConnector:
    def __init__(self, settings: FakeCrmSettings, ctx: PluginContext) -> None:
        self.settings = settings
        self.batch_size = settings.batch_size
        self.client = ctx.http_client(
            settings.base_url, headers={"Authorization": f"Bearer {settings.token.get_secret_value()}"}
        )

    async def check(self) -> list[CheckResult]:
        response = await self.client.get("/people", params={"email": "nobody@example.invalid"})
        if response.status_code == 401:
            return [CheckResult(name="credentials", ok=False, detail="token refused")]
        return [CheckResult(name="credentials", ok=True, detail="token accepted")]

    async def fetch_events(self, cursor: str | None) -> FetchResult:
        response = await self.client.get("/cases/closed", params={"after": int(cursor or 0)})
        raise_for_status(response, "poll")
        cases = response.json()
        last = max([int(cursor or 0), *[c["seq"] for c in cases]])
        return FetchResult(events=[_event(c) for c in cases], next_cursor=str(last))

    async def parse_webhook(self, request: WebhookRequest) -> WebhookReply:
        given = request.header("x-fake-signature") or ""
        expected = sign(self.settings.webhook_secret.get_secret_value(), request.body)
        if not hmac.compare_digest(given, expected):
            raise BadInput("bad signature", 401)
        try:
            case = json.loads(request.body)
            return WebhookReply(events=[_event(case)], body='{"ok": true}')
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"malformed case: {exc}") from None

    async def find_person(self, email: str | None, phone: str | None) -> PersonRecord | None:
        response = await self.client.get(
            "/people", params={k: v for k, v in (("email", email), ("phone", phone)) if v}
        )
        raise_for_status(response, "find person")
        found = response.json()
        return _person(found[0]) if found else None

    async def get_person(self, crm_id: str) -> PersonRecord | None:
        response = await self.client.get(f"/people/{crm_id}")
        if response.status_code == 404:
            return None
        raise_for_status(response, "get person")
        return _person(response.json())

    async def write_back(self, batch: Sequence[WriteBackItem]) -> list[WriteBackResult]:
        body = [item.model_dump(mode="json") for item in batch]
        response = await self.client.post("/batch", json=body)
        raise_for_status(response, "write batch")
        by_id = {item.id: item for item in batch}
        return [
            WriteBackResult.ok(by_id[r["id"]], r["remote_id"])
            if r["ok"]
            else WriteBackResult.failed(by_id[r["id"]], r["error"])
            for r in response.json()
        ]

    def diagnostics(self) -> dict[str, Any]:
        return {"base_url": self.settings.base_url, "token": "**********"}

    async def aclose(self) -> None:
        await self.client.aclose()


class FakeChannelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str


class FakeChannel:
    def __init__(self, settings: FakeChannelSettings, ctx: PluginContext) -> None:
        self.client = ctx.http_client(settings.base_url, headers={"Authorization": f"Bearer {TOKEN}"})

    async def check(self) -> list[CheckResult]:
        return [CheckResult(name="outbox", ok=True)]

    async def send(self, message: OutboundMessage) -> Delivery:
        if not message.recipient.email:
            raise SkippableError("no email address")
        if message.recipient.email.endswith("@bounce.test"):
            raise AddressRejected(message.recipient.email, "address rejected for good")
        response = await self.client.post("/outbox", json=message.model_dump(mode="json"))
        raise_for_status(response, "outbox")
        return Delivery(message_id=response.json()["id"])

    async def parse_inbound(self, request: WebhookRequest) -> InboundReply:
        data = json.loads(request.body)
        return InboundReply(
            answers=[InboundAnswer(sender=data["from"], text=data["text"], received_at=datetime.now(UTC))]
        )

    def diagnostics(self) -> dict[str, Any]:
        return {}

    async def aclose(self) -> None:
        await self.client.aclose()


@hookimpl
def hub_register_connectors(register: Any) -> None:
    register(ConnectorType(name="fakecrm", settings=FakeCrmSettings, factory=FakeCrmConnector))


@hookimpl
def hub_register_channels(register: Any) -> None:
    register(ChannelType(name="fakechannel", settings=FakeChannelSettings, factory=FakeChannel))
