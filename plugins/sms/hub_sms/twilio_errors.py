"""Twilio's error codes the channel acts on, and what an API error reply becomes in the hub.

Twilio answers a refused call with ``{"code", "message", "more_info", "status"}``; the code, not the HTTP
status, says what went wrong (a 400 is a bad number as often as a bad setting).
"""

from __future__ import annotations

import httpx

from hub import (
    AddressRejected,
    AuthError,
    ConfigError,
    HubError,
    RecipientOptedOut,
    SkippableError,
    TransientError,
)
from hub.http import retry_after_seconds

AUTHENTICATE = 20003
TOO_MANY_REQUESTS = 20429
OPTED_OUT = 21610
#: the number can never take a text: invalid, not a mobile, a landline, a short code; and, reported in a
#: status callback, an unknown handset (30005) or a landline / unreachable carrier (30006)
UNREACHABLE_NUMBER = frozenset({21211, 21265, 21614, 21635, 30005, 30006})
#: the sender or the account is set up wrong: the admin must act, the text waits on this channel
SENDER_PROBLEMS = frozenset({21212, 21603, 21606, 21659, 21701, 21703, 21704, 21705, 21708, 21712})

#: what the delivery codes of status callbacks mean, for the admin reading a failed invitation
DELIVERY_ERRORS: dict[int, str] = {
    30001: "queue overflow at the provider",
    30002: "the account was suspended",
    30003: "the handset is unreachable (switched off or out of coverage)",
    30004: "the message was blocked (the recipient blocks the sender)",
    30005: "unknown destination handset (the number does not exist)",
    30006: "a landline or a carrier that cannot take texts",
    30007: "filtered by the carrier (spam filter)",
    30008: "unknown delivery error",
    30034: "the sender is not registered for A2P 10DLC",
    21610: "the recipient opted out (replied STOP)",
    21211: "invalid number",
    21614: "not a mobile number",
    21635: "a landline",
}


def error_body(response: httpx.Response) -> tuple[int | None, str]:
    """The reply's Twilio error code and message (a proxy's HTML page has neither: its start is kept)."""
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200].strip() or f"HTTP {response.status_code}"
    if not isinstance(body, dict):
        return None, str(body)[:200]
    code = body.get("code")
    message = str(body.get("message") or f"HTTP {response.status_code}")[:300]
    return (code if isinstance(code, int) else None), message


def api_error(response: httpx.Response, what: str, address: str | None = None) -> HubError:
    """The hub's error for a refused API call; ``address`` is the recipient's number as the hub has it."""
    code, message = error_body(response)
    status = response.status_code
    said = f"{what}: {message} ({code or status})"
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    if status == 429 or code == TOO_MANY_REQUESTS or status >= 500:
        return TransientError(said, retry_after=retry_after)
    if status in (401, 403) or code == AUTHENTICATE:
        return AuthError(f"{said}: check account_sid and auth_token (or api_key_sid and api_key_secret)")
    if address is not None and code == OPTED_OUT:
        return RecipientOptedOut(address, said)
    if address is not None and code in UNREACHABLE_NUMBER:
        return AddressRejected(address, said)
    if code in SENDER_PROBLEMS or status == 404:
        return ConfigError(f"{said}: check from_number / messaging_service_sid and account_sid")
    return SkippableError(said)
