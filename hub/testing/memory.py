"""An in-memory channel and CRM: the other end of a suite's hub, so a suite needs no mail server or CRM.

``MemoryChannel`` keeps what the hub sends (the connector suite reads survey links from it);
``MemoryConnector`` is a CRM with people and no API (the channel suite's events come from it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import pluggy
from pydantic import BaseModel, ConfigDict

from hub.contracts import ChannelType, ConnectorType, PluginContext, RegisterChannel, RegisterConnector
from hub.errors import BadInput, SkippableError
from hub.models import (
    CheckResult,
    Delivery,
    FetchResult,
    InboundReply,
    OutboundMessage,
    PersonOptOut,
    PersonRecord,
    WebhookReply,
    WebhookRequest,
    WriteBackItem,
    WriteBackResult,
)

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


class MemoryConnector:
    """A CRM that is a dict of people (class-wide, like ``MemoryChannel.sent``); writes are kept in a list.

    Events are handed to the hub by the test (``hub.engine.receive``): it has no webhooks and polls nothing.
    ``opt_outs`` holds what a CRM person's opt-out fields would show: the last ``PersonOptOut`` written to
    each person, in the order the hub wrote them (last write wins, as on a real field), so a test sees
    an older change written after a newer one. The people's own ``opted_out`` (the CRM's consent) is never
    touched by it.
    """

    batch_size = 50
    people: ClassVar[dict[str, PersonRecord]] = {}
    written: ClassVar[list[WriteBackItem]] = []
    opt_outs: ClassVar[dict[str, PersonOptOut]] = {}

    def __init__(self, settings: MemorySettings, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def check(self) -> list[CheckResult]:
        return [CheckResult(name="memory crm", ok=True)]

    async def fetch_events(self, cursor: str | None) -> FetchResult:
        return FetchResult(events=[], next_cursor=cursor)

    async def parse_webhook(self, request: WebhookRequest) -> WebhookReply:
        raise BadInput("the memory CRM sends no webhooks", 404)

    async def find_person(self, email: str | None, phone: str | None) -> PersonRecord | None:
        for person in MemoryConnector.people.values():
            if (email and person.email == email) or (phone and person.phone == phone):
                return person
        return None

    async def get_person(self, crm_id: str) -> PersonRecord | None:
        return MemoryConnector.people.get(crm_id)

    async def write_back(self, batch: Sequence[WriteBackItem]) -> list[WriteBackResult]:
        MemoryConnector.written.extend(batch)
        for item in batch:
            if isinstance(item.payload, PersonOptOut):
                MemoryConnector.opt_outs[item.record_id] = item.payload
        return [WriteBackResult(item_id=item.id, status="ok") for item in batch]

    def diagnostics(self) -> dict[str, Any]:
        return {"people": len(MemoryConnector.people), "written": len(MemoryConnector.written)}

    async def aclose(self) -> None:
        return None


class _MemoryPlugin:
    @_hookimpl
    def hub_register_channels(self, register: RegisterChannel) -> None:
        register(ChannelType(name="memory", settings=MemorySettings, factory=MemoryChannel))

    @_hookimpl
    def hub_register_connectors(self, register: RegisterConnector) -> None:
        register(ConnectorType(name="memory", settings=MemorySettings, factory=MemoryConnector))


def memory_channel_plugin() -> tuple[str, object]:
    """``(name, plugin)`` for ``Hub.open(..., plugin_objects=[...])``: the memory channel and CRM types."""
    return "hub.testing.memory", _MemoryPlugin()
