"""What the channel needs of an SMS provider: one small class per provider implements ``Provider``.

The channel does the rest the same way for every provider: phone numbers, texts and segments, pacing. A
provider speaks its API (send, check the credentials) and reads the requests it makes to the hub (an inbound
text, a delivery report), verifying that it made them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from hub import CheckResult, InboundReply, TransientError, WebhookRequest


class MaybeSent(TransientError):
    """The connection failed after the request left: the provider may have taken the text. Before sending
    the same text again, the channel asks the provider (``Provider.find_sent``), so nobody gets it twice."""


@dataclass(frozen=True)
class SentMessage:
    """The provider's answer to a send: its id of the message, its status, and its count of segments."""

    message_id: str
    status: str
    segments: int | None = None


class Provider(Protocol):
    """An SMS provider's API. Errors are ``hub.errors`` classes, as for a channel's ``send``:
    ``AddressRejected`` for a number it can never reach, ``RecipientOptedOut`` for a person who opted out
    with it, ``TransientError`` (with ``retry_after``) to be tried later, ``AuthError`` / ``ConfigError``
    for the admin, ``SkippableError`` for anything else about this one message."""

    name: str

    async def send(self, to: str, body: str, status_callback: str | None) -> SentMessage:
        """Hand one text to the provider; ``status_callback`` is where it reports on delivery."""
        ...

    async def find_sent(self, to: str, body: str, since: datetime) -> SentMessage | None:
        """The text ``body`` to ``to`` if the provider took it at ``since`` or later; None if it did not."""
        ...

    async def check(self, inbound_url: str) -> list[CheckResult]:
        """Whether the provider takes the credentials (and what it says of the account), and whether texts
        people send to the sender are forwarded to ``inbound_url``."""
        ...

    def parse(self, request: WebhookRequest) -> InboundReply:
        """Verify and read a request the provider made: an inbound text (``answers``) or a delivery report
        (``statuses``). ``BadInput(..., 403)`` when it is not signed by the provider."""
        ...

    async def aclose(self) -> None: ...
