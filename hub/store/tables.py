"""The hub's tables. Every change goes through an Alembic migration (hub/store/migrations).

Design notes:

* ``events`` is unique per (connector, event_id): duplicates from webhook retries, webhook + poll overlap and
  replays are dropped at insert, which is what makes at-least-once delivery from the CRM safe.
* ``writebacks`` is unique per (connector, key). Queuing an item that exists re-arms it (state ``queued``,
  ``version`` + 1) instead of adding a row: ten answers of one person in a minute leave one summary row to
  write, and a sync that finishes an older version never marks a newer one done.
* Claiming uses a lease (``lease_owner`` / ``lease_until``): a worker killed mid-sync leaves rows that another
  worker claims once the lease runs out, so nothing queued is ever lost.
* Every text column is a ``CleanString`` / ``CleanText`` and every JSON column a ``CleanJSON``: text from
  outside (a comment, a name from a CRM, a webhook's fields) is stored the same way on SQLite and PostgreSQL.
  PostgreSQL refuses a NUL character in text and a value longer than its column, SQLite takes both; so NUL is
  removed and an over-long value is cut to its column, on both, when a value is assigned and again when it is
  bound. Keys that identify something (an event id) are checked where they arrive (``hub.engine``) and
  refused there rather than cut.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy import event as orm_event
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    @staticmethod
    def _utc(value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = self._utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, the text SQLAlchemy's ``DATETIME`` stores (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC) in one
        call: every write-back item binds five datetimes, and the decorator's composition of
        ``process_bind_param`` and the dialect's formatting was a twentieth of an answer's CPU."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        utc = self._utc
        #: the last value bound and its text: a batch binds one moment again and again (every write-back
        #: item's ``now`` three times, its ready and cap times), and a datetime never changes. One tuple,
        #: replaced whole, so threads binding at once never pair a value with another's text.
        last: tuple[datetime | None, str | None] = (None, None)

        def process(value: datetime | None) -> str | None:
            nonlocal last
            if value is None:
                return None
            seen, text = last
            if value is seen:
                return text
            text = utc(value).replace(tzinfo=None).isoformat(" ", "microseconds")
            last = (value, text)
            return text

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NUL = "\x00"


def clean_text(value: str, limit: int | None = None) -> str:
    """``value`` as every database stores it: without NUL characters, a lone surrogate (half of a UTF-16 pair,
    which JSON's ``\\ud800`` escape can carry but UTF-8 cannot encode) replaced by U+FFFD, at most ``limit``
    characters long."""
    if NUL in value:
        value = value.replace(NUL, "")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # through UTF-16: a pair of surrogates becomes its character, a lone one becomes one U+FFFD
            value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value[:limit] if limit is not None and len(value) > limit else value


def clean_json(value: Any) -> Any:
    """A JSON value with NUL removed from every string in it, keys too (PostgreSQL ``jsonb`` refuses them)."""
    if isinstance(value, str):
        return value if NUL not in value and value.isascii() else clean_text(value)
    if isinstance(value, dict):
        # the keys and plain values of an object cleaned here, without a call each: every write-back payload
        # passes through on every answer; a text with nothing to clean is what ``clean_text`` returns for it
        cleaned: dict[Any, Any] = {}
        for key, member in value.items():
            if isinstance(key, str) and (NUL in key or not key.isascii()):
                key = clean_text(key)
            if isinstance(member, str):
                if NUL in member or not member.isascii():
                    member = clean_text(member)
            elif isinstance(member, dict | list | tuple):
                member = clean_json(member)
            cleaned[key] = member
        return cleaned
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    return value


class CleanString(TypeDecorator[str]):
    """``VARCHAR(length)`` that stores what it is given the same way on every backend (see the module doc)."""

    impl = String
    cache_ok = True

    def __init__(self, length: int | None = None) -> None:
        super().__init__(length)
        self.length = length

    def clean(self, value: str | None) -> str | None:
        return None if value is None else clean_text(value, self.length)

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return self.clean(value)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """``process_bind_param`` in one call per value, and a value with nothing to clean (most) bound as it is:
        text is bound on every write, an answer's batch binds dozens. With an inner conversion (a dialect's
        ``String`` that has one) the decorator's usual composition."""
        if self.impl_instance.bind_processor(dialect) is not None:
            return super().bind_processor(dialect)
        limit = self.length

        def process(value: str | None) -> str | None:
            if value is None:
                return None
            if NUL not in value and value.isascii() and (limit is None or len(value) <= limit):
                return value  # what ``clean_text`` returns for it
            return clean_text(value, limit)

        return process


class CleanText(CleanString):
    """``TEXT`` without NUL characters."""

    impl = Text
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(None)


class CleanJSON(TypeDecorator[Any]):
    """JSON whose strings hold no NUL character."""

    impl = JSON
    cache_ok = True

    def clean(self, value: Any) -> Any:
        return clean_json(value)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return clean_json(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: CleanJSON}


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("connector", "event_id", name="uq_events_connector_event"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connector: Mapped[str] = mapped_column(CleanString(100))
    event_id: Mapped[str] = mapped_column(CleanString(300))
    event_type: Mapped[str] = mapped_column(CleanString(100))
    record_id: Mapped[str] = mapped_column(CleanString(200))
    source: Mapped[str] = mapped_column(CleanString(20), doc="webhook | poll")
    payload: Mapped[dict[str, Any]] = mapped_column(doc="the normalised CaseEvent")
    raw: Mapped[bytes | None] = mapped_column(LargeBinary, doc="the webhook body as received")
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(index=True)
    process_error: Mapped[str | None] = mapped_column(CleanText())


class RejectedWebhook(Base):
    """A refused inbound request, kept for inspection: a sample (``hub.web.inbound``), deleted by retention."""

    __tablename__ = "rejected_webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target: Mapped[str] = mapped_column(CleanString(100), doc="connector or channel instance")
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(CleanText())
    headers: Mapped[dict[str, Any]] = mapped_column()
    body: Mapped[bytes] = mapped_column(LargeBinary, doc="the body as received, or its beginning")
    body_size: Mapped[int | None] = mapped_column(Integer, doc="the size of the whole body in bytes")


class Person(Base):
    __tablename__ = "people"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str | None] = mapped_column(CleanString(320), index=True, doc="lower-cased, trimmed")
    phone: Mapped[str | None] = mapped_column(CleanString(32), index=True, doc="E.164")
    name: Mapped[str | None] = mapped_column(CleanString(300))
    language: Mapped[str | None] = mapped_column(CleanString(20))
    timezone: Mapped[str | None] = mapped_column(CleanString(64))
    opted_out_at: Mapped[datetime | None] = mapped_column(
        doc="the hub's own opt-out: an unsubscribe link, an opt-out keyword replied through a channel"
    )
    opt_out_channel: Mapped[str | None] = mapped_column(
        CleanString(100), doc="the channel the opt-out (or its end) came by; None for the link"
    )
    opt_out_reason: Mapped[str | None] = mapped_column(
        CleanString(300), doc='what the person did, e.g. "replied STOPP by sms"'
    )
    email_rejected: Mapped[str | None] = mapped_column(
        CleanText(), doc="why the email address bounced for good"
    )
    phone_rejected: Mapped[str | None] = mapped_column(
        CleanText(), doc="why the phone number was refused for good"
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Identity(Base):
    """A person's record in one connector."""

    __tablename__ = "identities"
    __table_args__ = (
        UniqueConstraint("connector", "crm_id", name="uq_identities_connector_crm"),
        # a person's record ids by connector, read from the index alone: every answer asks for them
        # (``hub.engine.writebacks.identities_of``); with the person alone indexed, SQLite's planner chose
        # the (connector, crm_id) constraint's index and read every identity of the connector
        Index("ix_identities_person", "person_id", "connector", "crm_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))
    connector: Mapped[str] = mapped_column(CleanString(100))
    crm_id: Mapped[str] = mapped_column(CleanString(200))
    crm_opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    crm_opt_out_reason: Mapped[str | None] = mapped_column(CleanString(300))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Invitation(Base):
    __tablename__ = "invitations"
    __table_args__ = (
        UniqueConstraint("event_pk", "campaign", name="uq_invitations_event_campaign"),
        Index("ix_invitations_due", "status", "send_after"),
        # the invitations sent in a period, with what the dashboard's response rate filters on
        Index("ix_invitations_sent", "sent_at", "status", "campaign", "language", "channel", "event_pk"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign: Mapped[str] = mapped_column(CleanString(100))
    event_pk: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id", ondelete="SET NULL"), index=True)
    status: Mapped[str] = mapped_column(
        CleanString(20), doc="scheduled|sent|suppressed|failed|answered|expired"
    )
    reason: Mapped[str | None] = mapped_column(CleanText(), doc="why suppressed or failed")
    channel: Mapped[str | None] = mapped_column(CleanString(100))
    language: Mapped[str] = mapped_column(CleanString(20), default="en")
    send_after: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None] = mapped_column()
    message_id: Mapped[str | None] = mapped_column(CleanString(300), index=True)
    delivery_status: Mapped[str | None] = mapped_column(
        CleanString(30), doc="the provider's most final report on the message: sent, delivered, failed, ..."
    )
    delivery_error: Mapped[str | None] = mapped_column(CleanText(), doc="what the provider said went wrong")
    tried_channels: Mapped[list[str] | None] = mapped_column(
        CleanJSON, doc="channels whose delivery failed for good after the send: not tried again"
    )
    conversation: Mapped[str | None] = mapped_column(
        CleanString(20),
        doc="where a conversation by reply is: asked_again (a non-score was answered once), "
        "awaiting_comment (the follow-up question was sent), commented",
    )
    remind_after: Mapped[datetime | None] = mapped_column(index=True)
    reminded_at: Mapped[datetime | None] = mapped_column()
    expires_at: Mapped[datetime | None] = mapped_column()
    lease_until: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Token(Base):
    """A survey or unsubscribe link. Only the SHA-256 of the random token is kept."""

    __tablename__ = "tokens"

    hash: Mapped[str] = mapped_column(CleanString(64), primary_key=True)
    invitation_id: Mapped[int] = mapped_column(ForeignKey("invitations.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(CleanString(20), doc="survey | unsubscribe")
    expires_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Response(Base):
    __tablename__ = "responses"
    __table_args__ = (
        # by time, and holding what the dashboard counts and filters on: its figures over a year of answers
        # are read from this index alone, without a visit to each row (``hub.web.cockpit.figures``)
        Index(
            "ix_responses_answered",
            "answered_at",
            "survey_kind",
            "rating",
            "campaign",
            "language",
            "channel",
            "invitation_id",
        ),
    )

    id: Mapped[str] = mapped_column(CleanString(36), primary_key=True, doc="a UUID: the key CRMs store")
    invitation_id: Mapped[int] = mapped_column(ForeignKey("invitations.id", ondelete="CASCADE"), unique=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    campaign: Mapped[str] = mapped_column(CleanString(100))
    survey_kind: Mapped[str] = mapped_column(CleanString(20))
    rating: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    category: Mapped[str | None] = mapped_column(CleanString(20))
    comment: Mapped[str | None] = mapped_column(CleanText())
    topic: Mapped[str | None] = mapped_column(CleanString(200))
    language: Mapped[str] = mapped_column(CleanString(20))
    channel: Mapped[str | None] = mapped_column(CleanString(100))
    answered_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class InboundMessage(Base):
    """A reply through a channel, kept: the hub's record of what people texted and what it made of it.

    ``outcome`` says what happened: answer, comment, asked_again, opted_out, opted_in; and, for replies the
    hub could not use (shown to admins at /admin/replies, never guessed): unmatched (no open invitation
    from that sender) and not_a_score (asked once already). Unique per (channel, message id), so a provider
    that delivers a reply twice is answered once.
    """

    __tablename__ = "inbound_messages"
    __table_args__ = (UniqueConstraint("channel", "message_id", name="uq_inbound_messages_channel_message"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(CleanString(100))
    sender: Mapped[str] = mapped_column(CleanString(320), index=True)
    text: Mapped[str] = mapped_column(CleanText())
    received_at: Mapped[datetime] = mapped_column(index=True)
    message_id: Mapped[str | None] = mapped_column(CleanString(300))
    outcome: Mapped[str] = mapped_column(CleanString(20), index=True)
    reason: Mapped[str | None] = mapped_column(CleanText(), doc="why it could not be used")
    invitation_id: Mapped[int | None] = mapped_column(
        ForeignKey("invitations.id", ondelete="SET NULL"), index=True
    )
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeliveryReport(Base):
    """The most final delivery report per (channel, message id), as providers send them: at least once,
    out of order, and sometimes before the send call returned. ``applied_at`` is None while no invitation
    has that message id yet; dispatch applies it once it stores the id."""

    __tablename__ = "delivery_reports"
    __table_args__ = (UniqueConstraint("channel", "message_id", name="uq_delivery_reports_channel_message"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(CleanString(100))
    message_id: Mapped[str] = mapped_column(CleanString(300))
    status: Mapped[str] = mapped_column(CleanString(30))
    outcome: Mapped[str] = mapped_column(CleanString(10), doc="pending | delivered | failed")
    rank: Mapped[int] = mapped_column(Integer, doc="how final the status is; a lower one never replaces it")
    error_code: Mapped[str | None] = mapped_column(CleanString(50))
    error: Mapped[str | None] = mapped_column(CleanText())
    address_rejected: Mapped[bool] = mapped_column(Boolean, default=False)
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    reported_at: Mapped[datetime] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    applied_at: Mapped[datetime | None] = mapped_column()


class WriteBack(Base):
    __tablename__ = "writebacks"
    __table_args__ = (
        UniqueConstraint("connector", "key", name="uq_writebacks_connector_key"),
        # each ends in the id, the claims' tie-break (``SyncService._order``)
        Index("ix_writebacks_due", "connector", "state", "next_attempt_at", "id"),
        Index("ix_writebacks_ready", "connector", "state", "ready_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connector: Mapped[str] = mapped_column(CleanString(100))
    kind: Mapped[str] = mapped_column(CleanString(30), doc="person_summary | timeline_entry | case_feedback")
    key: Mapped[str] = mapped_column(CleanString(200), doc="idempotency key, usable as an external id")
    record_id: Mapped[str] = mapped_column(CleanString(200))
    person_record_id: Mapped[str | None] = mapped_column(CleanString(200))
    person_id: Mapped[int | None] = mapped_column(Integer, index=True)
    response_id: Mapped[str | None] = mapped_column(CleanString(36))
    payload: Mapped[dict[str, Any] | None] = mapped_column(
        CleanJSON, doc="empty for summaries: built at sync"
    )
    state: Mapped[str] = mapped_column(CleanString(10), default="queued", doc="queued | done | dead")
    version: Mapped[int] = mapped_column(Integer, default=1)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    ready_at: Mapped[datetime] = mapped_column(
        default=utcnow,
        doc="when the prompt sync may write it: at once for a complete answer, after the quiet period for a "
        "score that may get its comment, never later than cap_at",
    )
    cap_at: Mapped[datetime] = mapped_column(
        default=utcnow, doc="the latest ready_at while queued: first armed since its last write, plus the cap"
    )
    lease_owner: Mapped[str | None] = mapped_column(CleanString(100))
    lease_until: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(CleanText())
    remote_id: Mapped[str | None] = mapped_column(CleanString(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column()


class SyncRun(Base):
    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connector: Mapped[str] = mapped_column(CleanString(100), index=True)
    kind: Mapped[str] = mapped_column(CleanString(10), doc="sync | poll | full")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    watermark: Mapped[str | None] = mapped_column(CleanText())
    events: Mapped[int] = mapped_column(Integer, default=0)
    written: Mapped[int] = mapped_column(Integer, default=0)
    retried: Mapped[int] = mapped_column(Integer, default=0)
    dead: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(CleanText())


class Cursor(Base):
    __tablename__ = "cursors"

    connector: Mapped[str] = mapped_column(CleanString(100), primary_key=True)
    stream: Mapped[str] = mapped_column(CleanString(100), primary_key=True)
    value: Mapped[str | None] = mapped_column(CleanText())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class JobLock(Base):
    """Guards singleton jobs across processes sharing one database."""

    __tablename__ = "job_locks"

    name: Mapped[str] = mapped_column(CleanString(200), primary_key=True)
    owner: Mapped[str] = mapped_column(CleanString(100))
    expires_at: Mapped[datetime] = mapped_column()


class Usage(Base):
    """Calls a connector instance made to its CRM, per minute, summed over every hub process.

    A CRM's API allowance (Salesforce: per rolling 24 hours, org-wide) is spent by every worker on one
    database, and must still be counted after a restart; see ``hub.store.usage``.
    """

    __tablename__ = "usage"

    connector: Mapped[str] = mapped_column(CleanString(100), primary_key=True)
    meter: Mapped[str] = mapped_column(CleanString(100), primary_key=True)
    minute: Mapped[int] = mapped_column(Integer, primary_key=True, doc="minutes since the Unix epoch")
    count: Mapped[int] = mapped_column(Integer, default=0)


class Setting(Base):
    """Values the hub generates once and keeps (e.g. the CSRF signing key when none is configured)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(CleanString(100), primary_key=True)
    value: Mapped[str] = mapped_column(CleanText())


class AdminUser(Base):
    """A named user of the admin cockpit. ``password_hash`` is an Argon2id hash (None: signs in by single
    sign-on only); ``session_epoch`` goes up with every password change or removal, which ends that user's
    sessions, since each session cookie carries the epoch it was issued under."""

    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(CleanString(200), unique=True)
    role: Mapped[str] = mapped_column(CleanString(10), doc="viewer | admin")
    password_hash: Mapped[str | None] = mapped_column(CleanString(300))
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column()


class AuditEntry(Base):
    """One action taken in the cockpit, the API or the CLI: who, what, on what, when. Never updated."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(CleanString(200), doc="a user name, 'api', or 'cli:<os user>'")
    action: Mapped[str] = mapped_column(CleanString(100), doc="e.g. sync.run, person.erase, user.add")
    target: Mapped[str | None] = mapped_column(CleanString(300))
    detail: Mapped[dict[str, Any] | None] = mapped_column(CleanJSON)


class ConnectorControl(Base):
    """What an admin changed about a connector at run time, kept beside (and winning over) its config:
    paused or not, and the sync and poll schedules. A missing row or a None value means: as configured."""

    __tablename__ = "connector_controls"

    connector: Mapped[str] = mapped_column(CleanString(100), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    sync_seconds: Mapped[int | None] = mapped_column(Integer)
    poll_seconds: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(CleanString(200))


def _clean_on_assignment() -> None:
    """Clean text as it is assigned to a mapped object, so what the code goes on using is what was stored.

    Binding cleans it again for statements that bypass the objects (``insert().values(...)``, ``where``).
    """

    def listen(column_type: CleanString | CleanJSON) -> Any:
        def cleaned(_target: Any, value: Any, _old: Any, _initiator: Any) -> Any:
            return column_type.clean(value)

        return cleaned

    for mapper in Base.registry.mappers:
        for prop in mapper.column_attrs:
            column_type = prop.columns[0].type
            if isinstance(column_type, CleanString | CleanJSON):
                orm_event.listen(getattr(mapper.class_, prop.key), "set", listen(column_type), retval=True)


_clean_on_assignment()
