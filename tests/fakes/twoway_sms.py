"""The two-way test channel registered under the SMS plugin's name, for the demo's ``--channel sms`` run."""

from __future__ import annotations

from hub import hookimpl
from hub.contracts import ChannelType, RegisterChannel
from tests.fakes.twoway import TwoWayChannel, TwoWaySettings


@hookimpl
def hub_register_channels(register: RegisterChannel) -> None:
    register(ChannelType(name="sms", settings=TwoWaySettings, factory=TwoWayChannel))
