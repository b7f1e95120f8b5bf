"""Numbers in E.164, and those no text can reach refused before the provider is called."""

from __future__ import annotations

import pytest
from hub_sms.numbers import sender_e164, to_e164

from hub import AddressRejected


@pytest.mark.parametrize(
    ("written", "region", "e164"),
    [
        ("+45 20 30 40 50", None, "+4520304050"),
        ("0045 2030 4050", None, "+4520304050"),
        ("20 30 40 50", "DK", "+4520304050"),
        ("070-123 45 67", "SE", "+46701234567"),
        ("0151 23456789", "DE", "+4915123456789"),
        ("+1 201-555-0123", "DK", "+12015550123"),  # US: fixed line or mobile cannot be told apart: kept
    ],
)
def test_normalised_to_e164(written: str, region: str | None, e164: str) -> None:
    assert to_e164(written, region) == e164


def test_a_landline_is_rejected() -> None:
    with pytest.raises(AddressRejected, match="fixed line") as refused:
        to_e164("+44 121 234 5678")
    assert refused.value.address == "+44 121 234 5678"


@pytest.mark.parametrize("written", ["12345", "+45 1234", "not a number", "+999 123 456"])
def test_an_invalid_number_is_rejected(written: str) -> None:
    with pytest.raises(AddressRejected):
        to_e164(written, "DK")


def test_a_local_number_without_a_region_says_what_is_missing() -> None:
    with pytest.raises(AddressRejected, match="default_region"):
        to_e164("20304050")


def test_an_inbound_sender_is_read_as_e164_and_a_short_code_kept() -> None:
    assert sender_e164("+4520304050") == "+4520304050"
    assert sender_e164("004520304050") == "+4520304050"
    assert sender_e164("1212") == "1212"
