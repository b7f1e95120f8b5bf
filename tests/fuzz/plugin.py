"""A text-message channel for the fuzz suite: sends through the fake CRM's outbox, reads replies strictly.

Unlike the fake channel of ``tests.fakes.plugin`` (which trusts its input), its ``parse_inbound`` refuses
anything that is not ``{"from": str, "text": str}`` with ``BadInput``, as a real provider's parser must, so
the fuzz suite exercises the hub's own handling of inbound replies rather than a test double's crash.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from hub import (
    BadInput,
    ChannelType,
    CheckResult,
    Delivery,
    InboundAnswer,
    InboundReply,
    OutboundMessage,
    PluginContext,
    SkippableError,
    WebhookRequest,
    hookimpl,
)
from hub.http import raise_for_status
from tests.fakes.crm import TOKEN


class TextSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str


class TextChannel:
    def __init__(self, settings: TextSettings, ctx: PluginContext) -> None:
        self.client = ctx.http_client(settings.base_url, headers={"Authorization": f"Bearer {TOKEN}"})

    async def check(self) -> list[CheckResult]:
        return [CheckResult(name="outbox", ok=True)]

    async def send(self, message: OutboundMessage) -> Delivery:
        if not message.recipient.phone:
            raise SkippableError("no phone number")
        response = await self.client.post("/outbox", json=message.model_dump(mode="json"))
        raise_for_status(response, "outbox")
        return Delivery(message_id=response.json()["id"])

    async def parse_inbound(self, request: WebhookRequest) -> InboundReply:
        try:
            data = json.loads(request.body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise BadInput("reply is not JSON") from None
        if not isinstance(data, dict):
            raise BadInput("reply is not a JSON object")
        sender, text = data.get("from"), data.get("text")
        if not isinstance(sender, str) or not isinstance(text, str):
            raise BadInput('reply needs "from" and "text" strings')
        return InboundReply(answers=[InboundAnswer(sender=sender, text=text, received_at=datetime.now(UTC))])

    def diagnostics(self) -> dict[str, Any]:
        return {}

    async def aclose(self) -> None:
        await self.client.aclose()


@hookimpl
def hub_register_channels(register: Any) -> None:
    register(ChannelType(name="fuzztext", settings=TextSettings, factory=TextChannel))
