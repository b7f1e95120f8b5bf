"""Email channel for CX Hub: survey invitations and alerts over SMTP.

Only the hook lives here; the channel is ``hub_email.channel.EmailChannel`` and the local mail catcher for
demos and tests is ``hub_email.catcher.MailCatcher``.
"""

from __future__ import annotations

from hub import ChannelEmulator, ChannelType, EmulatorType, RegisterChannel, RegisterEmulator, hookimpl
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


def _emulator() -> ChannelEmulator:
    """Imported only when a demo asks: the mail catcher needs aiosmtpd, which is not a production dependency."""
    from hub_email.emulator import MailCatcherEmulator

    return MailCatcherEmulator()


@hookimpl
def hub_register_emulators(register: RegisterEmulator) -> None:
    """Offer the local mail catcher as the email channel's emulator (``cxhub demo``)."""
    register(
        EmulatorType(plugin="email", kind="channel", factory=_emulator, description="local SMTP mail catcher")
    )
