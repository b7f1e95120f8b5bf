"""Settings of one SMS channel instance (``[channels.<name>] plugin = "sms"``).

Validated when the hub loads its config, so a sender that cannot work (no number, two senders, an API key
without its secret) is reported at start-up with the key to fix, not when the first survey goes out.
"""

from __future__ import annotations

import re
from typing import Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hub import EnvStr, Secret

#: an alphanumeric sender ID: up to 11 letters, digits and spaces, at least one letter (carriers' rule)
ALPHANUMERIC_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")


class SmsSettings(BaseModel):
    """How the channel reaches its SMS provider, who the texts come from, and how fast they may go."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["twilio"] = Field(
        "twilio", description="the provider's API: twilio (and providers compatible with it)"
    )
    api_url: EnvStr = Field("https://api.twilio.com", description="base URL of the provider's REST API")
    account_sid: EnvStr = Field(description="the account SID (AC...); it is in every API path")
    auth_token: Secret = Field(
        description="the account's auth token (env:NAME or file:/path): the provider signs its webhooks "
        "with it, so it is needed even when the API is called with an API key"
    )
    api_key_sid: EnvStr | None = Field(
        None, description="an API key SID (SK...) to call the API with instead of the auth token"
    )
    api_key_secret: Secret | None = Field(None, description="the API key's secret (env:NAME or file:/path)")
    from_number: EnvStr | None = Field(
        None,
        description="the sender: a number of the account in E.164 (+4512345678), or an alphanumeric "
        "sender ID (up to 11 characters; people cannot reply to one)",
    )
    messaging_service_sid: EnvStr | None = Field(
        None, description="a Messaging Service SID (MG...) that picks the sender, instead of from_number"
    )
    default_region: str | None = Field(
        None,
        description='country of numbers written without a country code, e.g. "DK"; unset = such numbers '
        "are refused",
    )
    campaign_regions: dict[str, str] = Field(
        default_factory=dict,
        description="per campaign, the country of numbers without a country code when it is not "
        'default_region, e.g. { support_se = "SE" }',
    )
    messages_per_second: float | None = Field(
        1.0,
        gt=0,
        description="send at most this many texts a second (a long code: 1; a short code or a messaging "
        "service: more); unset = no limit",
    )
    max_queue_seconds: float = Field(
        30,
        gt=0,
        description="a send that would wait longer than this for its turn is rescheduled by the hub instead",
    )
    timeout: float = Field(15, gt=0, description="seconds to wait for the provider's API")

    @field_validator("account_sid")
    @classmethod
    def _account(cls, value: str) -> str:
        return _sid(value, "AC", "account_sid")

    @field_validator("api_key_sid")
    @classmethod
    def _api_key(cls, value: str | None) -> str | None:
        return None if value is None else _sid(value, "SK", "api_key_sid")

    @field_validator("messaging_service_sid")
    @classmethod
    def _service(cls, value: str | None) -> str | None:
        return None if value is None else _sid(value, "MG", "messaging_service_sid")

    @field_validator("from_number")
    @classmethod
    def _from(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if value.startswith("+"):
            try:
                parsed = phonenumbers.parse(value, None)
            except phonenumbers.NumberParseException:
                parsed = None
            if parsed is None or not phonenumbers.is_valid_number(parsed):
                raise ValueError(f'"{value}" is not a valid phone number in E.164 form (+4512345678)')
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        if not ALPHANUMERIC_SENDER.match(value):
            raise ValueError(
                f'"{value}" is neither a number in E.164 form (+4512345678) nor an alphanumeric '
                "sender ID (1-11 letters, digits or spaces, with a letter)"
            )
        return value

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return None if value is None else _region(value)

    @field_validator("campaign_regions")
    @classmethod
    def _regions(cls, value: dict[str, str]) -> dict[str, str]:
        return {campaign: _region(region) for campaign, region in value.items()}

    def region_of(self, campaign: str) -> str | None:
        """The country of numbers without a country code in ``campaign``'s texts."""
        return self.campaign_regions.get(campaign, self.default_region)

    @field_validator("api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://127.0.0.1", "http://localhost", "http://[::1]")):
            raise ValueError(
                "the API is reached over https (plain http only on this machine, for an emulator)"
            )
        return value

    @model_validator(mode="after")
    def _sender_and_key(self) -> SmsSettings:
        if (self.from_number is None) == (self.messaging_service_sid is None):
            raise ValueError("set exactly one sender: from_number or messaging_service_sid")
        if (self.api_key_sid is None) != (self.api_key_secret is None):
            raise ValueError("api_key_sid and api_key_secret go together: set both, or neither")
        return self

    @property
    def two_way(self) -> bool:
        """Whether people can reply: an alphanumeric sender cannot receive texts."""
        return self.from_number is None or self.from_number.startswith("+")


def _region(value: str) -> str:
    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f'"{value}" is not a country code such as "DK", "SE" or "DE"')
    return region


def _sid(value: str, prefix: str, key: str) -> str:
    value = value.strip()
    if not re.fullmatch(prefix + r"[0-9a-fA-F]{32}", value):
        raise ValueError(f"{key} is {prefix} followed by 32 hexadecimal digits, not {value[:6]!r}...")
    return value
