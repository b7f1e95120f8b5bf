"""What ``cxhub check`` says about campaigns' texts before any is sent.

A channel that implements ``hub.MessageDescriber`` is handed the very survey message the hub would send, built
by the same code as a real invitation, for every enabled campaign and every language the hub ships (a person's
CRM language picks it, so any of them may go out). Its warnings (an SMS that costs several segments, a reply
asked from a sender people cannot reply to) are shown, not failed: the hub still sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hub.contracts import MessageDescriber
from hub.store.tables import Invitation, Person
from hub.texts import LANGUAGES

if TYPE_CHECKING:
    from hub.app import Hub

#: the person a sample message is addressed to: a name and both addresses, so no part of the text is left out
SAMPLE_PERSON = {"name": "Alex Sample", "email": "alex@example.com", "phone": "+4520304050"}
#: a survey token as long as a real one (16 random bytes, URL-safe): the link costs what a real link costs
SAMPLE_TOKEN = "x" * 22


@dataclass(frozen=True)
class TextWarning:
    """One warning of one channel about one campaign's text in one language."""

    campaign: str
    channel: str
    language: str
    warning: str


def text_warnings(hub: Hub) -> list[TextWarning]:
    """The warnings of every describing channel about every enabled campaign, in every shipped language."""
    found: list[TextWarning] = []
    for name, campaign in hub.config.campaigns.items():
        if not campaign.enabled:
            continue
        describers: list[tuple[str, MessageDescriber]] = []
        for channel in campaign.channels:
            instance = hub.channels.get(channel)
            if isinstance(instance, MessageDescriber):
                describers.append((channel, instance))
        if not describers:
            continue
        for language in LANGUAGES:
            invitation = Invitation(id=0, campaign=name, language=language)
            message = hub.engine.survey_message(
                invitation, campaign, Person(**SAMPLE_PERSON), SAMPLE_TOKEN, SAMPLE_TOKEN, reminder=False
            )
            for channel, describer in describers:
                found += [
                    TextWarning(name, channel, language, warning) for warning in describer.describe(message)
                ]
    return found
