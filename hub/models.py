"""The domain, as pydantic models: what flows between the CRM, the hub and the channels.

These are the public shapes a plugin sees. ``schemas/`` holds their JSON Schema, generated from this module
(``make schemas``), so partners in other languages can rely on them too. Fields are only ever added.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    """Base of the domain models: unknown fields are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


# --- survey scales --------------------------------------------------------------------------------------------


class SurveyKind(StrEnum):
    """The question asked. NPS is 0-10; CSAT 1-5; CES 1-7; smiley is sad / neutral / happy (1-3)."""

    NPS = "nps"
    CSAT = "csat"
    CES = "ces"
    SMILEY = "smiley"


SCALES: dict[SurveyKind, tuple[int, int]] = {
    SurveyKind.NPS: (0, 10),
    SurveyKind.CSAT: (1, 5),
    SurveyKind.CES: (1, 7),
    SurveyKind.SMILEY: (1, 3),
}


class NpsCategory(StrEnum):
    """The NPS bucket of one answer: 9-10 promoter, 7-8 passive, 0-6 detractor."""

    PROMOTER = "promoter"
    PASSIVE = "passive"
    DETRACTOR = "detractor"


def nps_category(rating: int) -> NpsCategory:
    """The category of one NPS rating (0-10)."""
    if not 0 <= rating <= 10:
        raise ValueError(f"an NPS rating is 0-10, not {rating}")
    if rating >= 9:
        return NpsCategory.PROMOTER
    if rating >= 7:
        return NpsCategory.PASSIVE
    return NpsCategory.DETRACTOR


def net_promoter_score(ratings: Iterable[int]) -> float | None:
    """NPS of a group: % promoters minus % detractors, from -100 to 100; None for no answers."""
    categories = [nps_category(r) for r in ratings]
    if not categories:
        return None
    promoters = sum(c is NpsCategory.PROMOTER for c in categories)
    detractors = sum(c is NpsCategory.DETRACTOR for c in categories)
    return round(100.0 * (promoters - detractors) / len(categories), 1)


# --- what a connector reports -----------------------------------------------------------------------------------


class CaseEvent(Model):
    """Something happened in the CRM that may deserve a survey: a case closed, a deal won, a person changed.

    ``event_id`` is unique per connector and stable across webhook retries and polling, so the hub can drop
    duplicates. ``fields`` carries the record's values that campaign filters match on.
    """

    event_id: str
    event_type: str = Field(description='e.g. "case.closed", "opportunity.won", "person.changed"')
    occurred_at: datetime
    record_type: str = Field(description='the CRM\'s own name of the record, e.g. "ticket", "Case"')
    record_id: str
    person_id: str | None = Field(default=None, description="the CRM id of the person to survey")
    owner_email: str | None = None
    owner_name: str | None = None
    record_url: str | None = Field(default=None, description="a link to the record in the CRM, for alerts")
    language: str | None = None
    fields: dict[str, Any] = Field(default_factory=dict)


class PersonRecord(Model):
    """A person as one CRM knows them. ``opted_out`` reflects the CRM's do-not-contact / no-mailing flags."""

    crm_id: str
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    language: str | None = None
    timezone: str | None = None
    opted_out: bool = False
    opt_out_reason: str | None = None


class FetchResult(Model):
    """One page of polled events and the cursor to resume from; ``has_more`` asks the hub to call again."""

    events: list[CaseEvent]
    next_cursor: str | None
    has_more: bool = False


class WebhookRequest(Model):
    """An inbound HTTP request as the hub received it, body untouched so signatures can be checked."""

    method: str
    url: str
    headers: dict[str, str] = Field(description="header names lower-cased")
    query: dict[str, str] = Field(default_factory=dict)
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class WebhookReply(Model):
    """What a connector made of a webhook: the events in it and the answer the sender expects.

    The hub sends the answer only after the events are stored, so a sender that retries until it gets its
    answer (Salesforce Outbound Messages) never loses one.
    """

    events: list[CaseEvent] = Field(default_factory=list)
    status_code: int = 200
    body: str = ""
    media_type: str = "application/json"


class CheckResult(Model):
    """One line of ``cxhub check``: what was checked, whether it passed, and what to do if not."""

    name: str
    ok: bool
    detail: str = ""


# --- what the hub writes back -------------------------------------------------------------------------------------


class PersonSummary(Model):
    """The person's feedback at a glance, written to fields on the CRM person.

    Ratings are on the survey's own scale (NPS 0-10); ``*_score`` values are normalised to 0-100 so CSAT,
    CES and smiley answers can be averaged together with NPS.
    """

    kind: Literal["person_summary"] = "person_summary"
    latest_rating: int
    latest_score: float
    latest_category: NpsCategory | None
    latest_date: datetime
    latest_comment: str | None
    average_rating: float
    average_rating_30_days: float | None
    average_score: float
    count: int


class TimelineEntry(Model):
    """One response as an entry on the person's timeline (and the case's, if the connector links them)."""

    kind: Literal["timeline_entry"] = "timeline_entry"
    response_id: str
    campaign: str
    survey_kind: SurveyKind
    rating: int
    score: float
    category: NpsCategory | None
    comment: str | None
    topic: str | None = None
    answered_at: datetime
    channel: str | None
    case_id: str | None
    language: str | None


class CaseFeedback(Model):
    """The answer as fields on the case that triggered the survey, plus an optional status change and note."""

    kind: Literal["case_feedback"] = "case_feedback"
    response_id: str
    rating: int
    score: float
    category: NpsCategory | None
    comment: str | None
    processed_at: datetime
    set_status: str | None = None
    internal_comment: bool = False


class PersonOptOut(Model):
    """The hub's own opt-out of a person (an unsubscribe link, an SMS "STOP"), or its end ("START").

    Written to the CRM person so the people who work there see that the customer asked the hub not to
    survey them, and why; the hub honours it in every campaign and channel whatever the CRM does with it.
    """

    kind: Literal["person_opt_out"] = "person_opt_out"
    opted_out: bool
    changed_at: datetime
    channel: str | None = Field(None, description="the channel the person used, e.g. sms; None for a link")
    reason: str = Field(description='what the person did, e.g. "replied STOPP by SMS"')

    def shown(self) -> dict[str, Any]:
        """What the CRM person's opt-out fields show after this change, by name: ``opted_out``,
        ``changed_at`` and ``reason``. An opt-in clears the date and the reason, so nobody reads an old
        STOP as current; the values depend on the change alone, so a retried write writes them again."""
        if not self.opted_out:
            return {"opted_out": False, "changed_at": None, "reason": None}
        return {"opted_out": True, "changed_at": self.changed_at, "reason": self.reason}


WriteBackPayload = Annotated[
    PersonSummary | TimelineEntry | CaseFeedback | PersonOptOut, Field(discriminator="kind")
]


class WriteBackItem(Model):
    """One unit of write-back work handed to ``Connector.write_back``.

    ``key`` is the hub's idempotency key: the same item retried always has the same key, so a connector that
    stores it as an external id (or finds it before creating) never creates a second record.
    """

    id: int
    key: str
    record_id: str = Field(description="the CRM id of the person (summary, timeline) or the case (feedback)")
    person_record_id: str | None = None
    attempt: int = 1
    payload: WriteBackPayload


class WriteBackResult(Model):
    """The outcome of one item: ``ok``; ``transient`` (retry later); ``failed`` (this item is bad, dead-letter)."""

    item_id: int
    status: Literal["ok", "transient", "failed"]
    remote_id: str | None = None
    error: str | None = None
    retry_after: float | None = None
    #: False when the item never reached the CRM (held back by the hub's own budget): no attempt is counted
    sent: bool = True

    @classmethod
    def ok(cls, item: WriteBackItem, remote_id: str | None = None) -> WriteBackResult:
        return cls(item_id=item.id, status="ok", remote_id=remote_id)

    @classmethod
    def transient(
        cls, item: WriteBackItem, error: str, retry_after: float | None = None, *, sent: bool = True
    ) -> WriteBackResult:
        return cls(item_id=item.id, status="transient", error=error, retry_after=retry_after, sent=sent)

    @classmethod
    def failed(cls, item: WriteBackItem, error: str) -> WriteBackResult:
        return cls(item_id=item.id, status="failed", error=error)


# --- what the hub sends through a channel ----------------------------------------------------------------------


class Recipient(Model):
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    language: str = "en"


class Branding(Model):
    company_name: str = "CX Hub"
    logo_url: str | None = None
    colour: str = "#1f5fa8"


class ScaleOption(Model):
    value: int
    label: str
    url: str = Field(description="opens the survey with this value pre-selected (never records it)")


class SurveyMessage(Model):
    """An invitation (or reminder) to answer a survey, for a channel to format in its own way."""

    kind: Literal["survey", "reminder"] = "survey"
    invitation_id: int
    campaign: str
    recipient: Recipient
    language: str
    branding: Branding
    survey_kind: SurveyKind
    subject: str
    intro: str
    question: str
    low_label: str
    high_label: str
    options: list[ScaleOption]
    survey_url: str
    unsubscribe_url: str
    unsubscribe_text: str
    reply_instructions: str = Field(
        "",
        description='how to answer by replying, in the language (e.g. "Reply with a number from 0 to 10.")',
    )


class AlertMessage(Model):
    """A notice to a colleague (e.g. the case owner) that an answer needs attention."""

    kind: Literal["alert"] = "alert"
    invitation_id: int
    campaign: str
    recipient: Recipient
    subject: str
    text: str
    link: str | None = None


class ReplyMessage(Model):
    """A message in a conversation the person started by replying: the follow-up question after a texted
    score, or a request to answer with a number. Only channels that read replies are sent these."""

    kind: Literal["reply"] = "reply"
    invitation_id: int
    campaign: str
    recipient: Recipient
    language: str
    text: str


OutboundMessage = SurveyMessage | AlertMessage | ReplyMessage


class Delivery(Model):
    """What a channel knows of a message it handed over: its id at the provider, for tracing."""

    message_id: str | None = None
    detail: str = ""


class InboundAnswer(Model):
    """A customer's reply through a channel (an SMS "9 quick and friendly", a chat message)."""

    sender: str = Field(description="the address it came from: E.164 phone, email or chat user id")
    text: str
    received_at: datetime
    message_id: str | None = None


class DeliveryStatus(Model):
    """A provider's report on a message the hub sent (an SMS status callback).

    Providers report at least once and out of order, sometimes before the send call has returned: the hub
    keeps the most final report per message and applies it once it knows which invitation the message was.
    """

    message_id: str = Field(
        description="the provider's id of the message, as ``Delivery.message_id`` gave it"
    )
    status: str = Field(
        description="the provider's own word: queued, sent, delivered, undelivered, failed, ..."
    )
    outcome: Literal["pending", "delivered", "failed"]
    error_code: str | None = None
    error: str | None = Field(None, description="what the provider said went wrong, for the admin")
    address_rejected: bool = Field(
        False,
        description="the address can never be reached (invalid, a landline): flagged like a hard bounce",
    )
    opted_out: bool = Field(
        False, description="the recipient opted out with the provider (e.g. replied STOP)"
    )
    reported_at: datetime


class InboundReply(Model):
    """A channel's reading of an inbound request, and the answer its provider expects."""

    answers: list[InboundAnswer] = Field(default_factory=list)
    statuses: list[DeliveryStatus] = Field(default_factory=list)
    status_code: int = 200
    body: str = ""
    media_type: str = "text/plain"


class ResponseRecord(Model):
    """A stored answer, as the hooks and the admin API see it."""

    id: str
    invitation_id: int
    campaign: str
    person_id: int
    survey_kind: SurveyKind
    rating: int
    score: float
    category: NpsCategory | None
    comment: str | None
    topic: str | None
    language: str
    channel: str | None
    answered_at: datetime
    updated_at: datetime


class InvitationRecord(Model):
    """An invitation as the hooks and the admin API see it: who, why, and what became of it."""

    id: int
    campaign: str
    person_id: int | None
    connector: str
    event_id: str
    record_id: str
    status: Literal["scheduled", "sent", "suppressed", "failed", "answered", "expired"]
    channel: str | None = None
    reason: str | None = None
    send_after: datetime | None = None
    sent_at: datetime | None = None
    created_at: datetime
