"""X-Twilio-Signature, proven against Twilio's own published example rather than against our emulator."""

from __future__ import annotations

from hub_sms import signature

# Twilio's documented example (webhook security guide and its request-validation code samples): auth token
# 12345, this URL and these POST parameters are signed GvWf1cFY/Q7PnoempGyD5oXAezc=
TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+14158675310"),
    ("Digits", "1234"),
    ("From", "+14158675310"),
    ("To", "+18005551212"),
]
PUBLISHED = "GvWf1cFY/Q7PnoempGyD5oXAezc="


def test_twilios_published_example_is_computed_exactly() -> None:
    assert signature.compute(TOKEN, URL, PARAMS) == PUBLISHED


def test_parameter_order_of_the_body_does_not_matter() -> None:
    assert signature.compute(TOKEN, URL, list(reversed(PARAMS))) == PUBLISHED
    assert signature.valid(TOKEN, URL, list(reversed(PARAMS)), PUBLISHED)


def test_any_change_breaks_it() -> None:
    changed = [(k, v + "0" if k == "Digits" else v) for k, v in PARAMS]
    assert not signature.valid(TOKEN, URL, changed, PUBLISHED)
    assert not signature.valid(TOKEN, URL.replace("foo=1", "foo=2"), PARAMS, PUBLISHED)
    assert not signature.valid("54321", URL, PARAMS, PUBLISHED)
    assert not signature.valid(TOKEN, URL, [*PARAMS, ("Body", "")], PUBLISHED)


def test_missing_or_garbled_signature_is_refused() -> None:
    assert not signature.valid(TOKEN, URL, PARAMS, None)
    assert not signature.valid(TOKEN, URL, PARAMS, "")
    assert not signature.valid(TOKEN, URL, PARAMS, "GvWf1cFY/Q7PnoempGyD5oXAezc")
    assert not signature.valid(TOKEN, URL, PARAMS, "ünicode")


def test_the_default_port_may_be_spelt_out_or_not() -> None:
    """The provider signs the URL as configured; a hub whose public_url says :443 still recognises it."""
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    assert signature.valid(TOKEN, with_port, PARAMS, PUBLISHED)
    signed_with_port = signature.compute(TOKEN, with_port, PARAMS)
    assert signature.valid(TOKEN, URL, PARAMS, signed_with_port)
    assert not signature.valid(TOKEN, "https://mycompany.com:8443/myapp.php?foo=1&bar=2", PARAMS, PUBLISHED)


def test_a_repeated_parameter_counts_every_value() -> None:
    once = signature.compute(TOKEN, URL, [("MediaUrl", "a")])
    twice = signature.compute(TOKEN, URL, [("MediaUrl", "b"), ("MediaUrl", "a")])
    assert once != twice
    assert signature.valid(TOKEN, URL, [("MediaUrl", "a"), ("MediaUrl", "b")], twice)
