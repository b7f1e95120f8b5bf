"""The flow of one piece of feedback: event -> campaign -> policy -> invitation -> send -> response -> queue.

Each stage lives in its own module, so each hot path can be read, measured and tuned alone:

- ``intake``: events in (``receive``) and the decision for each campaign (``process_pending``);
- ``invitations``: due invitations and reminders out through the channels (``dispatch_due``);
- ``answers``: survey pages, answers, alerts, unsubscribes;
- ``conversations``: replies through a channel (scores, the follow-up, opt-out keywords);
- ``deliveries``: providers' delivery reports, applied to invitations whichever comes first;
- ``optouts``: the hub's opt-out of a person, and its report to the CRMs;
- ``writebacks``: what an answer queues for each CRM.

Each step commits before the next begins, so a crash anywhere resumes from the database: unprocessed events
are processed again (one invitation per event and campaign is a unique key), due invitations are claimed
with a lease, and write-backs wait in their queue. ``Engine`` wires the stages to one hub and offers their
entry points in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hub.config import SurveySettings
from hub.engine.answers import Answers, SurveyPage
from hub.engine.common import hash_token, invitation_record, question, response_record
from hub.engine.conversations import Conversations, parse_reply
from hub.engine.deliveries import Deliveries
from hub.engine.intake import ACTIVE_STATUSES, EVENT_KEYS, Intake, matches, unstorable
from hub.engine.invitations import Invitations
from hub.engine.writebacks import WriteBackQueue
from hub.models import InboundReply, ResponseRecord

if TYPE_CHECKING:
    from hub.app import Hub

__all__ = [
    "ACTIVE_STATUSES",
    "EVENT_KEYS",
    "Answers",
    "Conversations",
    "Deliveries",
    "Engine",
    "Intake",
    "Invitations",
    "SurveyPage",
    "WriteBackQueue",
    "hash_token",
    "invitation_record",
    "matches",
    "parse_reply",
    "response_record",
    "unstorable",
]


class Engine:
    """Moves feedback through its steps. Stateless: every step reads and writes the store."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.write_backs = WriteBackQueue(hub)
        self.intake = Intake(hub)
        self.invitations = Invitations(hub)
        self.answers = Answers(hub, self.write_backs)
        self.optouts = self.answers.optouts
        self.conversations = Conversations(hub, self.answers, self.optouts)
        self.deliveries = Deliveries(hub, self.optouts)
        # each stage's entry points, where the web, the scheduler, the sync and the plugins' tests call them
        self.receive = self.intake.receive
        self.process_pending = self.intake.process_pending
        self.dispatch_due = self.invitations.dispatch_due
        self.send_reminders = self.invitations.send_reminders
        self.issue_token = self.invitations.issue_token
        self.survey_message = self.invitations.survey_message
        self.page_for_token = self.answers.page_for_token
        self.record_answer = self.answers.record_answer
        self.answer_link = self.answers.answer_link
        self.record_inbound = self.conversations.record_inbound
        self.unsubscribe = self.answers.unsubscribe
        self.queue = self.write_backs.queue
        self._queue_write_backs = self.write_backs.queue_answer

    async def receive_inbound(self, channel: str, reply: InboundReply) -> list[ResponseRecord | None]:
        """What a channel read from one inbound request: its delivery reports first (a reply may be about a
        message whose report came with it), then its replies; returns what each reply recorded."""
        if reply.statuses:
            await self.deliveries.record(channel, reply.statuses)
        return [await self.record_inbound(channel, answer) for answer in reply.answers]

    def question(self, survey: SurveySettings, lang: str) -> str:
        """The survey's question in one language (see ``hub.engine.common.question``)."""
        return question(self.hub, survey, lang)
