"""Fixtures of the SMS channel's tests: the Twilio emulator on a free port, channels pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from hub_sms.channel import SmsChannel
from hub_sms.emulator import SmsEmulator
from sms_support import Receiver, settings_for

from hub import PluginContext
from hub.http import make_client


@pytest.fixture
def emulator() -> Iterator[SmsEmulator]:
    with SmsEmulator() as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """Where the channels' status callbacks go: the hub's inbound URL, played by a recorder."""
    running = Receiver()
    with running.server:
        yield running


@pytest.fixture
def ctx(receiver: Receiver) -> PluginContext:
    return PluginContext(instance="sms", public_url=receiver.server.url, http_client=make_client)


@pytest.fixture
async def make_channel(
    emulator: SmsEmulator, ctx: PluginContext, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., SmsChannel]]:
    """Build channels pointed at the emulator (settings keyword arguments replace any); closed after."""
    channels: list[SmsChannel] = []

    def make(**changes: Any) -> SmsChannel:
        channel = SmsChannel(settings_for(emulator, monkeypatch, **changes), ctx)
        channels.append(channel)
        return channel

    yield make
    for channel in channels:
        await channel.aclose()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client
