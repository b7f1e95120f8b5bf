"""An in-memory channel: keeps what the hub sends, so suites can read survey links without a mail server."""

from __future__ import annotations

from typing import Any

import pluggy
from pydantic import BaseModel, ConfigDict

from hub.contracts import ChannelType, PluginContext, RegisterChannel
from hub.errors import BadInput, SkippableError
from hub.models import CheckResult, Delivery, InboundReply, OutboundMessage, WebhookRequest

_hookimpl = pluggy.HookimplMarker("cxhub")


class MemorySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemoryChannel:
    """Every instance appends to the class-wide ``sent`` list (one list per test run is enough)."""

    sent: list[OutboundMessage] = []  # noqa: RUF012 - deliberately shared by the instances of one test

    def __init__(self, settings: MemorySettings, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def check(self) -> list[CheckResult]:
        return [CheckResult(name="memory", ok=True)]

    async def send(self, message: OutboundMessage) -> Delivery:
        if not (message.recipient.email or message.recipient.phone):
            raise SkippableError("no address")
        MemoryChannel.sent.append(message)
        return Delivery(message_id=f"memory-{len(MemoryChannel.sent)}")

    async def parse_inbound(self, request: WebhookRequest) -> InboundReply:
        raise BadInput("the memory channel takes no inbound requests", 404)

    def diagnostics(self) -> dict[str, Any]:
        return {"sent": len(MemoryChannel.sent)}

    async def aclose(self) -> None:
        return None


class _MemoryPlugin:
    @_hookimpl
    def hub_register_channels(self, register: RegisterChannel) -> None:
        register(ChannelType(name="memory", settings=MemorySettings, factory=MemoryChannel))


def memory_channel_plugin() -> tuple[str, object]:
    """``(name, plugin)`` for ``Hub.open(..., plugin_objects=[...])``."""
    return "hub.testing.memory", _MemoryPlugin()
