"""``EmailChannel``: the hub's ``Channel`` for email, gluing message building to the SMTP client."""

from __future__ import annotations

from typing import Any

from hub import (
    AlertMessage,
    BadInput,
    CheckResult,
    Delivery,
    InboundReply,
    OutboundMessage,
    PluginContext,
    SurveyMessage,
    WebhookRequest,
)
from hub_email.client import SmtpClient
from hub_email.compose import alert_email, survey_email
from hub_email.config import EmailSettings


class EmailChannel:
    """Sends survey invitations, reminders and alerts by email through one SMTP server.

    Replies are not read: a customer answers on the survey page, whose link is in the mail.
    """

    def __init__(self, settings: EmailSettings, ctx: PluginContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self.client = SmtpClient(settings)

    async def check(self) -> list[CheckResult]:
        """Connect, log in and offer the sender address; one ``CheckResult`` per step."""
        return await self.client.check()

    async def send(self, message: OutboundMessage) -> Delivery:
        """Build the mail for ``message`` and hand it to the server.

        ``SkippableError``: no or a bad address (the hub tries the next channel); ``TransientError``: the
        server is unreachable or deferred it; ``AuthError`` / ``ConfigError``: the settings need fixing.
        """
        if isinstance(message, SurveyMessage):
            outgoing = survey_email(message, self.settings)
        elif isinstance(message, AlertMessage):
            outgoing = alert_email(message, self.settings)
        else:
            raise TypeError(f"the email channel cannot send a {type(message).__name__}")
        reply = await self.client.send(outgoing.message, outgoing.recipient)
        detail = f"accepted by {self.client.server}: {reply}".strip()
        return Delivery(message_id=outgoing.message_id, detail=detail[:500])

    async def parse_inbound(self, request: WebhookRequest) -> InboundReply:
        """Email replies are not read, so nothing should post here."""
        raise BadInput("the email channel takes no inbound requests", 404)

    def diagnostics(self) -> dict[str, Any]:
        """Settings (password shown as ``**********``) and the connection's counters."""
        return {
            "instance": self.ctx.instance,
            "settings": self.settings.model_dump(mode="json"),
            **self.client.state(),
        }

    async def aclose(self) -> None:
        """End the SMTP session."""
        await self.client.aclose()
