"""The plugin as the hub loads it: entry point, registration hook, and the Channel contract."""

from __future__ import annotations

from importlib.metadata import entry_points

import hub_email
import pluggy
import pytest
from hub_email.channel import EmailChannel
from hub_email.config import EmailSettings

from hub import BadInput, Channel, ChannelType, WebhookRequest, hookspecs


def test_entry_point_names_the_package() -> None:
    [entry] = [e for e in entry_points(group="cxhub") if e.name == "email"]
    assert entry.value == "hub_email"
    assert entry.load() is hub_email


def test_hook_registers_the_email_channel_type(ctx) -> None:
    manager = pluggy.PluginManager("cxhub")
    manager.add_hookspecs(hookspecs)
    manager.register(hub_email)
    registered: list[ChannelType] = []

    manager.hook.hub_register_channels(register=registered.append)

    [channel_type] = registered
    assert channel_type.name == "email"
    assert channel_type.settings is EmailSettings
    settings = EmailSettings(host="smtp.example.com", from_address="feedback@acme.example")
    channel = channel_type.factory(settings, ctx)
    assert isinstance(channel, EmailChannel)
    assert isinstance(channel, Channel)


async def test_inbound_requests_are_not_found(ctx) -> None:
    channel = EmailChannel(EmailSettings(host="smtp.example.com", from_address="feedback@acme.example"), ctx)
    request = WebhookRequest(method="POST", url="https://hub.example/inbound/mail", headers={}, body=b"hi")

    with pytest.raises(BadInput) as caught:
        await channel.parse_inbound(request)

    assert caught.value.status_code == 404


def test_diagnostics_show_settings_and_state_but_no_password(ctx, monkeypatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret-pass")
    settings = EmailSettings(
        host="smtp.example.com",
        from_address="feedback@acme.example",
        username="hub",
        password="env:SMTP_PASSWORD",
    )
    diagnostics = EmailChannel(settings, ctx).diagnostics()

    assert diagnostics["settings"]["host"] == "smtp.example.com"
    assert diagnostics["settings"]["password"] == "**********"
    assert diagnostics["messages_sent"] == 0 and diagnostics["connected"] is False
    assert "s3cret-pass" not in repr(diagnostics)
