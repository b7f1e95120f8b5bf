"""A small two-way text channel and its provider, to prove ``hub.testing.ChannelSuite``'s two-way tests.

The provider keeps what it delivered per number, signs the requests it makes to the hub (HMAC-SHA256 of the
body; a forged one is refused with 403, as Twilio does), reports on delivery with Twilio's error codes, and
refuses people who opted out with it (21610). It lives in memory: the suite's tests need no server for it.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from hub import hookimpl
from hub.contracts import ChannelType, PluginContext, RegisterChannel
from hub.errors import AddressRejected, AuthError, BadInput, RecipientOptedOut, SkippableError, TransientError
from hub.models import (
    CheckResult,
    Delivery,
    DeliveryStatus,
    InboundAnswer,
    InboundReply,
    OutboundMessage,
    ReplyMessage,
    SurveyMessage,
    WebhookRequest,
)

SECRET = "two-way-signing-secret"
#: Twilio's codes for an address that can never be reached: invalid, not a mobile, unknown, landline
REJECTED_CODES = {"21211", "21614", "30005", "30006"}
OPTED_OUT_CODE = "21610"
FINAL = {"delivered": "delivered", "undelivered": "failed", "failed": "failed"}


@dataclass
class Provider:
    """The provider's side: what it delivered, and the faults a test asks for."""

    delivered: list[dict[str, str]] = field(default_factory=list)
    opted_out: set[str] = field(default_factory=set)
    #: numbers that can never receive a text (landlines, invalid ones): refused at send
    unreachable: set[str] = field(default_factory=set)
    failures: tuple[int, int, float | None] = (0, 200, None)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def sign(self, payload: dict[str, Any]) -> WebhookRequest:
        body = json.dumps(payload).encode()
        digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        return WebhookRequest(
            method="POST",
            url="http://127.0.0.1:9/inbound/channel",
            headers={"content-type": "application/json", "x-signature": digest},
            body=body,
        )


PROVIDER = Provider()


class TwoWaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str


def _text(message: OutboundMessage) -> str:
    if isinstance(message, ReplyMessage):
        return message.text
    if isinstance(message, SurveyMessage):
        return f"{message.question} {message.reply_instructions or message.survey_url}"
    return f"{message.subject}: {message.text}"


class TwoWayChannel:
    def __init__(self, settings: TwoWaySettings, ctx: PluginContext) -> None:
        self.settings = settings

    async def check(self) -> list[CheckResult]:
        if self.settings.secret != SECRET:
            raise AuthError("the provider refused the credentials")
        return [CheckResult(name="two-way provider", ok=True)]

    async def send(self, message: OutboundMessage) -> Delivery:
        number = message.recipient.phone
        if not number:
            raise SkippableError("no phone number")
        count, status, retry_after = PROVIDER.failures
        if count:
            PROVIDER.failures = (count - 1, status, retry_after)
            raise TransientError(f"the provider answered {status}", retry_after=retry_after)
        if number in PROVIDER.unreachable:
            raise AddressRejected(number, f"21614: {number} is not a mobile number")
        if number in PROVIDER.opted_out:
            raise RecipientOptedOut(number, f"{OPTED_OUT_CODE}: the recipient opted out")
        sid = f"SM{next(PROVIDER.ids):032d}"
        at = datetime.now(UTC).isoformat()
        PROVIDER.delivered.append({"to": number, "text": _text(message), "sid": sid, "at": at})
        return Delivery(message_id=sid)

    async def parse_inbound(self, request: WebhookRequest) -> InboundReply:
        expected = hmac.new(self.settings.secret.encode(), request.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.header("x-signature") or ""):
            raise BadInput("the signature does not match", 403)
        data = json.loads(request.body)
        now = datetime.now(UTC)
        if data["type"] == "status":
            code = data.get("error_code")
            report = DeliveryStatus(
                message_id=data["sid"],
                status=data["status"],
                outcome=FINAL.get(data["status"], "pending"),  # type: ignore[arg-type]
                error_code=code,
                error=f"error {code}" if code else None,
                address_rejected=code in REJECTED_CODES,
                opted_out=code == OPTED_OUT_CODE,
                reported_at=now,
            )
            return InboundReply(statuses=[report])
        answer = InboundAnswer(sender=data["from"], text=data["text"], received_at=now, message_id=data["id"])
        return InboundReply(answers=[answer])

    def diagnostics(self) -> dict[str, Any]:
        return {"delivered": len(PROVIDER.delivered)}

    async def aclose(self) -> None:
        return None


@hookimpl
def hub_register_channels(register: RegisterChannel) -> None:
    register(ChannelType(name="twoway", settings=TwoWaySettings, factory=TwoWayChannel))
