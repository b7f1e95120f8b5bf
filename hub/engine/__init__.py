"""The flow of one piece of feedback: event -> campaign -> policy -> invitation -> send -> response -> queue.

Each stage lives in its own module, so each hot path can be read, measured and tuned alone:

- ``intake``: events in (``receive``) and the decision for each campaign (``process_pending``);
- ``invitations``: due invitations and reminders out through the channels (``dispatch_due``);
- ``answers``: survey pages, answers, replies by channel, alerts, unsubscribes;
- ``writebacks``: what an answer queues for each CRM.

Each step commits before the next begins, so a crash anywhere resumes from the database: unprocessed events
are processed again (one invitation per event and campaign is a unique key), due invitations are claimed
with a lease, and write-backs wait in their queue. ``Engine`` wires the stages to one hub and offers their
entry points in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hub.config import SurveySettings
from hub.engine.answers import Answers, SurveyPage, parse_reply
from hub.engine.common import hash_token, invitation_record, question, response_record
from hub.engine.intake import ACTIVE_STATUSES, EVENT_KEYS, Intake, matches, unstorable
from hub.engine.invitations import Invitations
from hub.engine.writebacks import WriteBackQueue

if TYPE_CHECKING:
    from hub.app import Hub

__all__ = [
    "ACTIVE_STATUSES",
    "EVENT_KEYS",
    "Answers",
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
        # each stage's entry points, where the web, the scheduler, the sync and the plugins' tests call them
        self.receive = self.intake.receive
        self.process_pending = self.intake.process_pending
        self.dispatch_due = self.invitations.dispatch_due
        self.send_reminders = self.invitations.send_reminders
        self.issue_token = self.invitations.issue_token
        self.survey_message = self.invitations.survey_message
        self.page_for_token = self.answers.page_for_token
        self.record_answer = self.answers.record_answer
        self.record_inbound = self.answers.record_inbound
        self.unsubscribe = self.answers.unsubscribe
        self.queue = self.write_backs.queue
        self._queue_write_backs = self.write_backs.queue_answer

    def question(self, survey: SurveySettings, lang: str) -> str:
        """The survey's question in one language (see ``hub.engine.common.question``)."""
        return question(self.hub, survey, lang)
