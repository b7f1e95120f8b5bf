"""Phone numbers as the provider wants them (E.164), and the ones no text can ever reach.

Checked before any API call: a landline or a malformed number is refused here as ``AddressRejected``, so the
campaign's next channel is tried at once and the provider is never paid for a text that cannot arrive.
"""

from __future__ import annotations

import phonenumbers
from phonenumbers import PhoneNumberType

from hub import AddressRejected
from hub.people import normalise_phone

#: types no text can reach. FIXED_LINE_OR_MOBILE is not among them (the US, Canada and others cannot tell
#: the two apart), nor VOIP or UNKNOWN (some take texts; metadata lags new ranges): the provider decides those
NOT_TEXTABLE = frozenset(
    {
        PhoneNumberType.FIXED_LINE,
        PhoneNumberType.TOLL_FREE,
        PhoneNumberType.PREMIUM_RATE,
        PhoneNumberType.SHARED_COST,
        PhoneNumberType.UAN,
        PhoneNumberType.VOICEMAIL,
    }
)


def to_e164(number: str, region: str | None = None) -> str:
    """``number`` in E.164 (``+4520304050``); ``AddressRejected`` when it is no valid number or cannot be a
    mobile. ``region`` (e.g. ``"DK"``) reads numbers written without a country code."""
    candidate = number.strip()
    if candidate.startswith("00"):
        candidate = "+" + candidate[2:]
    hint = "" if candidate.startswith("+") or region else " (no country code, and no default_region is set)"
    try:
        parsed = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException:
        raise AddressRejected(number, f"{number!r} is not a phone number{hint}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise AddressRejected(number, f"{number!r} is not a valid phone number{hint}")
    kind = phonenumbers.number_type(parsed)
    if kind in NOT_TEXTABLE:
        raise AddressRejected(
            number, f"{number!r} cannot receive texts: it is a {kind_name(kind)} number, not a mobile"
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def kind_name(kind: int) -> str:
    """``FIXED_LINE`` -> ``"fixed line"``: the type as the admin reads it."""
    for name, value in vars(PhoneNumberType).items():
        if value == kind and name.isupper():
            return name.lower().replace("_", " ")
    return "unknown"


def sender_e164(value: str) -> str:
    """The ``From`` of an inbound text in E.164 (the provider sends E.164; tolerate spaces or ``00``). A short
    code or an alphanumeric sender is kept as it came: it matches no person."""
    return normalise_phone(value) or value.strip()
