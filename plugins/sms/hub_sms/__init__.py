"""SMS channel for CX Hub: two-way surveys by text message through a Twilio-compatible provider.

Only the hooks live here; the channel is ``hub_sms.channel.SmsChannel`` and the local stand-in of the
provider (with a phone that replies) for demos and tests is ``hub_sms.emulator.SmsEmulator``.
"""

from __future__ import annotations

from hub import ChannelEmulator, ChannelType, EmulatorType, RegisterChannel, RegisterEmulator, hookimpl
from hub_sms.channel import SmsChannel
from hub_sms.config import SmsSettings


@hookimpl
def hub_register_channels(register: RegisterChannel) -> None:
    """Offer the ``sms`` channel type; the hub calls ``SmsChannel(settings, ctx)`` once per instance."""
    register(
        ChannelType(
            name="sms",
            settings=SmsSettings,
            factory=SmsChannel,
            description="surveys and alerts by text message (Twilio-compatible), answered by reply or link",
        )
    )


def _emulator() -> ChannelEmulator:
    """Imported only when a demo or a test asks: the emulator is not part of a production install."""
    from hub_sms.emulator import SmsEmulator

    return SmsEmulator()


@hookimpl
def hub_register_emulators(register: RegisterEmulator) -> None:
    """Offer the local SMS provider with its phone as the sms channel's emulator (``cxhub demo``)."""
    register(
        EmulatorType(
            plugin="sms",
            kind="channel",
            factory=_emulator,
            description="local Twilio-like SMS API with a phone that can reply",
        )
    )
