"""``cxhub check`` for an SMS channel: credentials, the sender, where replies go, and the text's segments."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from hub_sms.channel import SmsChannel
from hub_sms.config import SmsSettings
from hub_sms.emulator import SmsEmulator
from sms_support import settings_for, survey

from hub import PluginContext

MakeChannel = Callable[..., SmsChannel]


def _failed(results: list[object]) -> dict[str, str]:
    return {r.name: r.detail for r in results if not r.ok}  # type: ignore[attr-defined]


async def test_all_is_well_when_the_number_forwards_to_the_hub(
    make_channel: MakeChannel, emulator: SmsEmulator
) -> None:
    channel = make_channel()
    emulator.forward_to(channel.ctx.public_url, "sms")
    results = await channel.check()
    assert _failed(results) == {}
    assert [r.name for r in results] == [
        "Twilio account and auth token",
        f"sender {emulator.state.number}",
        "inbound URL for replies and delivery reports",
    ]


async def test_a_number_that_forwards_elsewhere_is_named_with_the_fix(
    make_channel: MakeChannel, emulator: SmsEmulator
) -> None:
    channel = make_channel()
    emulator.forward_to("https://old-hub.example", "sms")
    failed = _failed(await channel.check())
    assert list(failed) == [f"sender {emulator.state.number}"]
    detail = failed[f"sender {emulator.state.number}"]
    assert "https://old-hub.example/inbound/sms" in detail and channel.inbound_url in detail


async def test_a_sender_that_is_not_the_accounts_fails_the_check(make_channel: MakeChannel) -> None:
    failed = _failed(await make_channel(from_number="+4540123456").check())
    assert "not a number of this account" in failed["sender +4540123456"]


async def test_an_api_key_is_checked_without_the_account_resource(
    make_channel: MakeChannel, emulator: SmsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMS_KEY_SECRET", emulator.state.api_key_secret)
    channel = make_channel(api_key_sid=emulator.state.api_key_sid, api_key_secret="env:SMS_KEY_SECRET")
    emulator.forward_to(channel.ctx.public_url, "sms")
    results = await channel.check()
    assert results[0].name == "Twilio API key" and _failed(results) == {}
    monkeypatch.setenv("SMS_KEY_SECRET", "wrong")
    failed = _failed(
        await make_channel(
            api_key_sid=emulator.state.api_key_sid, api_key_secret="env:SMS_KEY_SECRET"
        ).check()
    )
    assert "20003" in failed["Twilio API key"]


async def test_an_alphanumeric_sender_says_people_cannot_reply(make_channel: MakeChannel) -> None:
    channel = make_channel(from_number="Acme")
    results = await channel.check()
    assert _failed(results) == {}
    assert any("cannot reply" in r.detail for r in results)
    warnings = channel.describe(survey(reply_instructions="Reply with a number from 0 to 10."))
    assert any("alphanumeric" in w for w in warnings)


async def test_an_inbound_url_the_provider_cannot_call(
    emulator: SmsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = PluginContext(
        instance="sms", public_url="http://feedback.example.com", http_client=httpx.AsyncClient
    )
    channel = SmsChannel(settings_for(emulator, monkeypatch), ctx)
    try:
        failed = _failed(await channel.check())
    finally:
        await channel.aclose()
    assert "https only" in failed["inbound URL for replies and delivery reports"]


def test_describe_is_the_hubs_way_to_warn_of_a_long_text(
    emulator: SmsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings: SmsSettings = settings_for(emulator, monkeypatch)
    ctx = PluginContext(instance="sms", public_url="https://hub.example", http_client=httpx.AsyncClient)
    channel = SmsChannel(settings, ctx)
    assert channel.describe(survey()) == []
    polish = survey(
        language="pl",
        reply_instructions="Odpowiedz liczbą od 0 (mało prawdopodobne) do 10 (bardzo prawdopodobne).",
    )
    [warning] = channel.describe(polish)
    assert "3 segments" in warning and "campaign support" in warning and "pl" in warning


async def test_diagnostics_show_the_settings_without_secrets(
    make_channel: MakeChannel, emulator: SmsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMS_KEY_SECRET", emulator.state.api_key_secret)
    channel = make_channel(api_key_sid=emulator.state.api_key_sid, api_key_secret="env:SMS_KEY_SECRET")
    await channel.send(survey())
    shown = str(channel.diagnostics())
    assert emulator.state.auth_token not in shown and emulator.state.api_key_secret not in shown
    assert emulator.state.account_sid in shown and "'sent': 1" in shown and channel.inbound_url in shown
