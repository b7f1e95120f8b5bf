"""The error classes a connector or channel raises, and what the hub does with each.

A plugin never signals failure with a return value: it raises one of these, so the hub can decide
uniformly whether an admin must act, the call should be retried, or one record should be set aside.
"""

from __future__ import annotations


class HubError(Exception):
    """Base of every error the hub classifies."""


class ConfigError(HubError):
    """The configuration is wrong; an admin must fix it before the hub can work.

    ``problems`` holds one human-readable line per problem, each naming the file, the key path and the fix.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]

    def __str__(self) -> str:
        return "\n".join(self.problems)


class AuthError(HubError):
    """Credentials were refused or lack a permission; retrying will not help until an admin acts."""


class TransientError(HubError):
    """The remote side is busy or down; the same call may succeed later.

    ``retry_after`` is the delay in seconds the remote side asked for (Retry-After), if it said one.
    ``sent=False`` says nothing reached the remote side (the hub's own API budget held the call back):
    the sync then counts no attempt, so waiting for a budget never turns items into dead letters.
    """

    def __init__(self, message: str, retry_after: float | None = None, *, sent: bool = True) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.sent = sent


class SkippableError(HubError):
    """This one record cannot be processed (bad data, deleted in the CRM); the rest of the batch goes on."""


class AddressRejected(SkippableError):
    """A channel's provider refused an address for good (a hard bounce, an invalid number).

    The hub flags the address on the person and stops using it, in every campaign, until the CRM gives a
    different one; the campaign's next channel is tried at once.
    """

    def __init__(self, address: str, message: str) -> None:
        super().__init__(message)
        self.address = address


class RecipientOptedOut(SkippableError):
    """The provider refuses to message this person because they opted out with it (an SMS "STOP").

    The hub records the person's opt-out for every channel and campaign, exactly as its own unsubscribe, and
    reports it to the CRMs; no other channel is tried.
    """

    def __init__(self, address: str, message: str) -> None:
        super().__init__(message)
        self.address = address


class BadInput(HubError):
    """An inbound request (webhook, channel reply) is malformed or unverified; answered with a 4xx.

    ``status_code`` is the HTTP status to answer with (400 malformed, 401 bad signature, 413 too large).
    """

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code
