"""Reading a SuperOffice webhook: the signature first, then the payload.

SuperOffice signs the raw body: ``X-SuperOffice-Signature = base64(HMAC-SHA256(secret, body))``. The check
runs on the bytes as received, before any parsing, and compares in constant time. Registration sends a test
POST (``Event: "test"``, header ``X-Hook-Test: true``) that must be answered 200 or the webhook is not saved.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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
    """Parse the JSON body; ``BadInput(400)`` for anything that is not a SuperOffice webhook."""
    try:
        body = json.loads(request.body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInput("webhook body is not JSON") from exc
    if not isinstance(body, dict) or not isinstance(body.get("Event"), str):
        raise BadInput("webhook body has no Event")
    try:
        primary_key = int(body.get("PrimaryKey") or 0)
    except (TypeError, ValueError) as exc:
        raise BadInput("webhook PrimaryKey is not a number") from exc
    changes = body.get("Changes") or []
    field_values = body.get("FieldValues") or {}
    return WebhookPayload(
        event=body["Event"].strip().lower(),
        entity=str(body.get("Entity") or "").lower(),
        primary_key=primary_key,
        event_id=str(body.get("EventId") or request.header("X-SuperOffice-EventId") or ""),
        timestamp=parse_datetime(body.get("Timestamp")) or datetime.now(UTC),
        changes=[str(change) for change in changes] if isinstance(changes, list) else [],
        field_values=field_values if isinstance(field_values, dict) else {},
    )


def is_test_request(request: WebhookRequest) -> bool:
    return (request.header("X-Hook-Test") or "").strip().lower() == "true"
