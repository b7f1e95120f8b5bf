"""Email channel for CX Hub: survey invitations and alerts over SMTP.

Only the hook lives here; the channel is ``hub_email.channel.EmailChannel`` and the local mail catcher for
demos and tests is ``hub_email.catcher.MailCatcher``.
"""

from __future__ import annotations

from hub import ChannelType, RegisterChannel, hookimpl
from hub_email.channel import EmailChannel
from hub_email.config import EmailSettings


@hookimpl
def hub_register_channels(register: RegisterChannel) -> None:
    """Offer the ``email`` channel type; the hub calls ``EmailChannel(settings, ctx)`` once per instance."""
    register(
        ChannelType(
            name="email",
            settings=EmailSettings,
            factory=EmailChannel,
            description="survey invitations and alerts by email (SMTP with STARTTLS or TLS)",
        )
    )
