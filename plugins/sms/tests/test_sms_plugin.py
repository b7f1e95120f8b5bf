"""The plugin as the hub loads it, and its settings refused with the key to fix."""

from __future__ import annotations

from typing import Any

import pytest
from hub_sms.config import SmsSettings
from pydantic import ValidationError

from hub.plugins import PluginManager

ACCOUNT = "AC" + "a" * 32


def test_the_hub_finds_the_channel_and_its_emulator() -> None:
    """(That loading it imports no emulator is tests/test_install.py's, in a fresh interpreter.)"""
    manager = PluginManager()
    manager.load()
    assert manager.channel_types["sms"].settings is SmsSettings
    emulator = manager.emulator_types[("channel", "sms")].factory()
    assert type(emulator).__name__ == "SmsEmulator"


def _settings(monkeypatch: pytest.MonkeyPatch, **changes: Any) -> SmsSettings:
    monkeypatch.setenv("SMS_TOKEN", "token")
    values: dict[str, Any] = {
        "account_sid": ACCOUNT,
        "auth_token": "env:SMS_TOKEN",
        "from_number": "+4552512345",
    }
    values.update(changes)
    return SmsSettings.model_validate({k: v for k, v in values.items() if v is not None})


def test_good_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, default_region="dk", from_number="+45 52 51 23 45")
    assert (settings.default_region, settings.from_number, settings.two_way) == ("DK", "+4552512345", True)
    assert settings.messages_per_second == 1
    assert not _settings(monkeypatch, from_number="Acme").two_way


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"account_sid": "AC123"}, "account_sid is AC followed by 32 hexadecimal digits"),
        ({"auth_token": "plain-token"}, "env:NAME or file:/path"),
        ({"from_number": None}, "exactly one sender"),
        ({"messaging_service_sid": "MG" + "b" * 32}, "exactly one sender"),
        ({"from_number": "+45 1234"}, "not a valid phone number"),
        ({"from_number": "Acme Support Team"}, "alphanumeric"),
        ({"api_key_sid": "SK" + "c" * 32}, "go together"),
        ({"default_region": "Denmark"}, "country code"),
        ({"campaign_regions": {"support": "Sverige"}}, "country code"),
        ({"api_url": "http://api.example.com"}, "https"),
        ({"messages_per_second": 0}, "greater than 0"),
    ],
)
def test_bad_settings_name_the_fix(
    monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        _settings(monkeypatch, **changes)
