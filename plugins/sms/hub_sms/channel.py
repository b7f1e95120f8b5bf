"""``SmsChannel``: the hub's ``Channel`` for text messages, gluing numbers, texts and pacing to a provider."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hub import (
    CheckResult,
    Delivery,
    InboundReply,
    OutboundMessage,
    PluginContext,
    SkippableError,
    SurveyMessage,
    WebhookRequest,
)
from hub_sms.config import SmsSettings
from hub_sms.numbers import to_e164
from hub_sms.provider import MaybeSent, Provider, SentMessage
from hub_sms.texts import Text, describe, message_text
from hub_sms.throttle import Throughput
from hub_sms.twilio import TwilioProvider

#: how far the provider's clock may be behind ours when a text that may have gone out is looked for
CLOCK_SKEW = timedelta(minutes=1)
#: texts that may have gone out, remembered per instance until they are sent or found
MAX_UNCERTAIN = 1000


#: the provider classes by ``settings.provider``: a second provider is one more entry (and a config literal)
PROVIDERS: dict[str, Callable[[SmsSettings, PluginContext], Provider]] = {"twilio": TwilioProvider}


def make_provider(settings: SmsSettings, ctx: PluginContext) -> Provider:
    return PROVIDERS[settings.provider](settings, ctx)


class SmsChannel:
    """Sends survey invitations, follow-up questions and alerts as texts, and reads the replies and the
    provider's delivery reports that come back to ``/inbound/<instance>``."""

    def __init__(self, settings: SmsSettings, ctx: PluginContext, provider: Provider | None = None) -> None:
        self.settings = settings
        self.ctx = ctx
        self.provider = provider or make_provider(settings, ctx)
        self.throughput = Throughput(settings.messages_per_second, settings.max_queue_seconds)
        self.sent = 0
        #: texts whose send failed after the request left (to, body) -> when: looked up before a resend
        self.uncertain: dict[tuple[str, str], datetime] = {}

    @property
    def inbound_url(self) -> str:
        """Where the provider posts replies and delivery reports: the hub's public inbound URL."""
        return f"{self.ctx.public_url.rstrip('/')}/inbound/{self.ctx.instance}"

    async def check(self) -> list[CheckResult]:
        """The provider's credentials, and whether the provider can reach the inbound URL at all."""
        results = await self.provider.check(self.inbound_url)
        url = self.inbound_url
        local = url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]"))
        results.append(
            CheckResult(
                name="inbound URL for replies and delivery reports",
                ok=url.startswith("https://") or local,
                detail=url
                if url.startswith("https://") or local
                else f"{url}: the provider calls https only",
            )
        )
        if not self.settings.two_way:
            results.append(
                CheckResult(
                    name="replies",
                    ok=True,
                    detail=f"from_number {self.settings.from_number!r} is an alphanumeric sender: people "
                    "cannot reply, so campaigns must answer by link",
                )
            )
        return results

    def describe(self, message: SurveyMessage) -> list[str]:
        """Warnings about a campaign's text in one language: more than one segment, or reply mode from a
        sender people cannot reply to. ``cxhub check`` shows them; empty when all is well."""
        warnings = describe(message)
        if message.reply_instructions and not self.settings.two_way:
            warnings.append(
                f"campaign {message.campaign} asks for a reply, but {self.settings.from_number!r} is an "
                "alphanumeric sender people cannot reply to"
            )
        return warnings

    async def send(self, message: OutboundMessage) -> Delivery:
        """Text ``message`` to its recipient.

        ``AddressRejected`` (before any API call for a number that is invalid or cannot be a mobile; from the
        provider for 21211/21614): the next channel is tried. ``RecipientOptedOut`` (21610): the person
        opted out with the provider. ``TransientError``: tried again later, honouring Retry-After.
        """
        number = message.recipient.phone
        if not number:
            raise SkippableError("the person has no phone number")
        to = to_e164(number, self.settings.region_of(message.campaign))
        text = message_text(message)
        key = (to, text.body)
        uncertain_since = self.uncertain.get(key)
        if uncertain_since is not None:
            found = await self.provider.find_sent(to, text.body, uncertain_since - CLOCK_SKEW)
            if found is not None:
                del self.uncertain[key]
                return self._delivery(
                    found, text, "; it went out before the connection failed: not sent again"
                )
        await self.throughput.turn()
        started = datetime.now(UTC)
        try:
            sent = await self.provider.send(to, text.body, self.inbound_url)
        except MaybeSent:
            self._remember_uncertain(key, uncertain_since or started)
            raise
        self.uncertain.pop(key, None)
        self.sent += 1
        return self._delivery(sent, text)

    def _remember_uncertain(self, key: tuple[str, str], since: datetime) -> None:
        self.uncertain[key] = since
        while len(self.uncertain) > MAX_UNCERTAIN:  # the oldest are the least likely to be retried
            del self.uncertain[next(iter(self.uncertain))]

    def _delivery(self, sent: SentMessage, text: Text, note: str = "") -> Delivery:
        """What the hub records of a sent text: the provider's id and what the text cost in segments."""
        segments = sent.segments or text.segments.count
        detail = f"{sent.status} at {self.provider.name}: {segments} segment{'s' if segments != 1 else ''}"
        detail += f" ({text.segments.encoding}, {text.segments.units} units)"
        if text.fitted:
            detail += f"; {text.fitted} to fit one segment"
        return Delivery(message_id=sent.message_id, detail=detail + note)

    async def parse_inbound(self, request: WebhookRequest) -> InboundReply:
        """A reply (``answers``) or a delivery report (``statuses``), verified as the provider's."""
        return self.provider.parse(request)

    def diagnostics(self) -> dict[str, Any]:
        """Settings (secrets shown as ``**********``), the inbound URL and the pacing state."""
        return {
            "instance": self.ctx.instance,
            "settings": self.settings.model_dump(mode="json"),
            "inbound_url": self.inbound_url,
            "sent": self.sent,
            **self.throughput.state(),
        }

    async def aclose(self) -> None:
        await self.provider.aclose()
