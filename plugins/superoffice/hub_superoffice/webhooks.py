"""Reading a SuperOffice webhook: the signature first, then the payload.

SuperOffice signs the raw body: ``X-SuperOffice-Signature = base64(HMAC-SHA256(secret, body))``. The check
runs on the bytes as received, before any parsing, and compares in constant time. Registration sends a test
POST (``Event: "test"``, header ``X-Hook-Test: true``) that must be answered 200 or the webhook is not saved.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

from hub import BadInput, WebhookRequest
from hub_superoffice.mapping import parse_datetime

SIGNATURE_HEADER = "X-SuperOffice-Signature"


def signature(secret: str, body: bytes) -> str:
    """What SuperOffice puts in ``X-SuperOffice-Signature`` for ``body``."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_signature(secret: str, request: WebhookRequest) -> None:
    """Raise ``BadInput(401)`` unless the request carries the signature of its exact body."""
    given = request.header(SIGNATURE_HEADER)
    if not given:
        raise BadInput("missing X-SuperOffice-Signature", 401)
    if not hmac.compare_digest(
        given.strip().encode("utf-8"), signature(secret, request.body).encode("ascii")
    ):
        raise BadInput("X-SuperOffice-Signature does not match the body", 401)


#: the hub's limit for an event id (``events.event_id``); the longest id this connector builds from a webhook
#: is ``person:{PrimaryKey}:changed:{EventId}``
MAX_EVENT_ID_LENGTH = 300
#: SuperOffice's EventId is a GUID (36 characters); this leaves room for other formats and still fits the
#: hub's event id with the longest prefix (``person:2147483647:changed:``, 26 characters)
MAX_WEBHOOK_EVENT_ID_LENGTH = 200
#: SuperOffice's primary keys are 32-bit integers
MAX_PRIMARY_KEY = 2**31 - 1


def _printable(value: str) -> str:
    """Refuse control characters: they cannot be stored (PostgreSQL refuses NUL) or shown safely."""
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ValueError("holds control characters")
    return value


Text = Annotated[StrictStr, AfterValidator(_printable)]
ShortText = Annotated[StrictStr, Field(max_length=200), AfterValidator(_printable)]
EventIdText = Annotated[StrictStr, Field(max_length=MAX_WEBHOOK_EVENT_ID_LENGTH), AfterValidator(_printable)]


_EVENT_ID: TypeAdapter[str] = TypeAdapter(EventIdText)


class _Body(BaseModel):
    """The members of a webhook body the connector reads, with the types SuperOffice sends; others ignored."""

    model_config = ConfigDict(extra="ignore")

    Event: ShortText
    EventId: EventIdText | None = None
    PrimaryKey: Annotated[StrictInt, Field(ge=0, le=MAX_PRIMARY_KEY)] = 0
    Entity: ShortText | None = None
    Timestamp: ShortText | None = None
    Changes: list[Text] | None = None
    FieldValues: dict[str, Any] | None = None


@dataclass(frozen=True)
class WebhookPayload:
    """The parts of a SuperOffice webhook body the connector acts on."""

    event: str
    entity: str
    primary_key: int
    event_id: str
    timestamp: datetime
    changes: list[str] = field(default_factory=list)
    field_values: dict[str, Any] = field(default_factory=dict)

    @property
    def is_test(self) -> bool:
        return self.event == "test"


def read_payload(request: WebhookRequest) -> WebhookPayload:
    """Parse the body; ``BadInput(400)`` naming the member for anything that is not a SuperOffice webhook.

    Every way a body can be wrong (not JSON, nested too deep, a number too large, a member of the wrong type,
    an event id the hub could not store) must end here as a 400: anything else is a 500, which SuperOffice
    retries and, after nine, answers by switching the webhook off.
    """
    try:
        body = _Body.model_validate_json(request.body)
    except ValidationError as exc:
        raise BadInput(f"not a SuperOffice webhook: {_describe(exc)}") from None
    header_id = request.header("X-SuperOffice-EventId")
    event_id = body.EventId or _header_event_id(header_id)
    timestamp = parse_datetime(body.Timestamp) if body.Timestamp else datetime.now(UTC)
    if timestamp is None:
        raise BadInput("not a SuperOffice webhook: Timestamp: not an ISO 8601 date-time in range")
    return WebhookPayload(
        event=body.Event.strip().lower(),
        entity=(body.Entity or "").lower(),
        primary_key=body.PrimaryKey,
        event_id=event_id,
        timestamp=timestamp,
        changes=list(body.Changes or []),
        field_values=dict(body.FieldValues or {}),
    )


def _header_event_id(value: str | None) -> str:
    """The ``X-SuperOffice-EventId`` header, held to the same rules as the body's EventId."""
    if not value:
        return ""
    try:
        return _EVENT_ID.validate_python(value.strip())
    except ValidationError as exc:
        raise BadInput(f"X-SuperOffice-EventId: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    """Which member is wrong and how, without echoing the value (it may hold anything, NUL included)."""
    parts: list[str] = []
    for error in exc.errors(include_input=False, include_url=False)[:3]:
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"])
        if error["type"] == "json_invalid":
            message = "the body is not valid JSON (" + message.removeprefix("Invalid JSON: ") + ")"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def is_test_request(request: WebhookRequest) -> bool:
    return (request.header("X-Hook-Test") or "").strip().lower() == "true"
