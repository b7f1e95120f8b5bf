"""What an SMTP failure means for the hub: retry later, skip this recipient, or stop until an admin acts.

SMTP says it in the reply code (RFC 5321): 4xx is temporary, 5xx permanent. Where the failure happened says
whose problem it is: a 5xx to RCPT TO is this recipient's address, a 5xx to MAIL FROM or to the login is the
configuration's. Messages name the server and the fix, never the password.
"""

from __future__ import annotations

import ssl
from typing import TypeVar

import aiosmtplib

from hub import AddressRejected, AuthError, ConfigError, HubError, SkippableError, TransientError

E = TypeVar("E", bound=BaseException)

#: reply codes of a refused or missing login (RFC 4954): 530 auth required, 534 mechanism too weak,
#: 535 credentials invalid, 538 encryption required
AUTH_CODES = {530, 534, 535, 538}


def find_cause(exc: BaseException, kind: type[E]) -> E | None:
    """``exc`` or the first exception in its chain of causes that is a ``kind``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _reply(code: int, message: str) -> str:
    return f"{code} {' '.join(message.split())}".strip()


def _login_required(server: str, reply: str) -> AuthError:
    return AuthError(f"{server} refuses to send without a valid login ({reply}): set username and password")


def _refused_recipient(code: int, message: str, server: str, recipient: str) -> HubError:
    reply = _reply(code, message)
    if code < 500:
        return TransientError(f"{server} deferred the message to {recipient} ({reply})")
    if code in AUTH_CODES:
        return _login_required(server, reply)
    if "relay" in message.lower():
        return ConfigError(
            f"{server} refuses to relay mail to {recipient} ({reply}): log in (username, password) "
            "or allow this host to relay on the server"
        )
    return AddressRejected(
        recipient,
        f"{server} rejected the address {recipient} for good ({reply}): "
        "the address is wrong or no longer exists; correct it in the CRM",
    )


def classify(
    exc: BaseException, *, server: str, recipient: str | None = None, sender: str = ""
) -> HubError | None:
    """The hub error for ``exc`` raised while connecting to or sending through ``server``.

    None for an exception that is not a failure of SMTP or the network (a bug), which the caller re-raises.
    """
    if isinstance(exc, HubError):
        return exc
    recipient = recipient or "the recipient"

    cert = find_cause(exc, ssl.SSLCertVerificationError)
    if cert is not None:
        return ConfigError(
            f"the TLS certificate of {server} is not trusted ({cert.verify_message}): "
            "set ca_bundle to the CA that signed it, or give the server a valid certificate"
        )
    tls = find_cause(exc, ssl.SSLError)
    if tls is not None:
        return ConfigError(
            f"TLS with {server} failed ({tls.reason or tls}): check security "
            '("tls" for port 465, "starttls" for port 587) and the port'
        )

    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        first = exc.recipients[0]
        return _refused_recipient(first.code, first.message, server, first.recipient or recipient)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return _refused_recipient(exc.code, exc.message, server, exc.recipient or recipient)

    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        if exc.code < 500:
            return TransientError(f"{server} cannot check the login now ({_reply(exc.code, exc.message)})")
        return AuthError(
            f"{server} refused the login ({_reply(exc.code, exc.message)}): check username and password"
        )

    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        reply = _reply(exc.code, exc.message)
        if exc.code < 500:
            return TransientError(f"{server} deferred the message ({reply})")
        if exc.code in AUTH_CODES:
            return _login_required(server, reply)
        return ConfigError(
            f"{server} refuses the sender address {sender or exc.sender} ({reply}): "
            "set from_address to an address this login may send as"
        )

    if isinstance(exc, aiosmtplib.SMTPDataError):
        reply = _reply(exc.code, exc.message)
        if exc.code < 500:
            return TransientError(f"{server} deferred the message to {recipient} ({reply})")
        return SkippableError(f"{server} refused the message to {recipient} for good ({reply})")

    if isinstance(exc, aiosmtplib.SMTPResponseException):
        # a refused greeting, EHLO or STARTTLS, or a 421 "closing connection"
        reply = _reply(exc.code, exc.message)
        if exc.code < 500:
            return TransientError(f"{server} is not available now ({reply})")
        if exc.code in AUTH_CODES:
            return AuthError(f"{server} refused the login ({reply}): check username and password")
        return ConfigError(f"{server} refuses this client ({reply})")

    if isinstance(exc, aiosmtplib.SMTPConnectError):  # refused, unknown host, no greeting in time
        return TransientError(f"cannot reach {server}: {exc}")
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPTimeoutError):
        return TransientError(f"{server} closed the connection or stopped answering: {exc}")
    if isinstance(exc, aiosmtplib.SMTPException):
        # e.g. STARTTLS or AUTH not offered: the server does not work the way the settings say it does
        return ConfigError(f"{server}: {exc}")
    if isinstance(exc, OSError):  # includes TimeoutError and ConnectionError
        return TransientError(f"cannot reach {server}: {exc or type(exc).__name__}")
    return None
