"""Webhooks from a Dataverse service endpoint: authenticate, then read the ``RemoteExecutionContext``.

A notification is only a hint: the connector reads the record with polling's columns before anyone is
surveyed. So all that is taken from the body is which record and which message. Anything malformed or
hostile (not JSON, deeply nested, over-long ids, NUL) is ``BadInput`` (a 4xx), never an exception.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

from hub import BadInput, WebhookRequest
from hub_dynamics.config import WebhookSettings
from hub_dynamics.mapping import RESOLVED, WON, is_guid

MAX_BODY = 512 * 1024
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
MAX_DEPTH = 32
MAX_TEXT = 200
CASE_MESSAGES = frozenset({"CloseIncident", "Update", "Create"})
OPPORTUNITY_MESSAGES = frozenset({"WinOpportunity", "Update", "Create"})


@dataclass(frozen=True)
class Notification:
    """What a webhook says: ``message`` on ``entity`` ``record_id``; ``hint`` False when it is not news."""

    message: str
    entity: str
    record_id: str | None
    truncated: bool
    hint: bool


def authenticate(settings: WebhookSettings, request: WebhookRequest) -> None:
    """The WebhookKey (``?code=``) or the configured header, compared in constant time; 401 otherwise."""
    if settings.key is None:
        raise BadInput("webhooks are off for this connector: set webhook.key", 401)
    expected = settings.key.get_secret_value().encode("utf-8")
    if settings.auth == "webhook_key":
        given = request.query.get("code", "")
    else:
        given = request.headers.get(settings.header_name.lower(), "")
    if not hmac.compare_digest(given.encode("utf-8", "replace"), expected):
        raise BadInput("webhook key missing or wrong", 401)


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, without recursion (a hostile body cannot blow the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack += [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, depth + 1) for v in item]
    return deepest


def _load(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY:
        raise BadInput("webhook body too large", 413)
    if b"\x00" in body:
        raise BadInput("webhook body holds a NUL byte")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadInput("webhook body is not JSON") from None
    if not isinstance(data, dict):
        raise BadInput("webhook body is not a RemoteExecutionContext object")
    if _depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise BadInput("webhook body nested too deeply")
    return data


def _text(data: dict[str, Any], key: str, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or len(value) > MAX_TEXT or any(ord(c) < 32 for c in value):
        raise BadInput(f"{key} must be a short string")
    return value


def _pairs(value: Any, name: str) -> dict[str, Any]:
    """A DataContract key/value list (``[{"key": k, "value": v}]``) as a dict."""
    if value is None:
        return {}
    if not isinstance(value, list):
        raise BadInput(f"{name} must be a list of key/value pairs")
    pairs: dict[str, Any] = {}
    for entry in value:
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise BadInput(f"{name} must be a list of key/value pairs")
        pairs[entry["key"]] = entry.get("value")
    return pairs


def _option(value: Any) -> int | None:
    """An OptionSetValue as serialised in the context: ``{"Value": 1}`` (or a bare int)."""
    if isinstance(value, dict):
        value = value.get("Value")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read(request: WebhookRequest) -> Notification:
    """The record and message a ``RemoteExecutionContext`` reports."""
    data = _load(request.body)
    message = _text(data, "MessageName")
    entity = _text(data, "PrimaryEntityName")
    record_id = _text(data, "PrimaryEntityId", required=False)
    if record_id and not is_guid(record_id):
        raise BadInput("PrimaryEntityId must be a GUID")
    if record_id == EMPTY_GUID:  # some messages name no primary record: look in the parameters
        record_id = ""
    inputs = _pairs(data.get("InputParameters"), "InputParameters")
    target = inputs.get("Target")
    attributes: dict[str, Any] = {}
    if isinstance(target, dict):
        attributes = _pairs(target.get("Attributes"), "Target.Attributes")
    for image in _pairs(data.get("PostEntityImages"), "PostEntityImages").values():
        if isinstance(image, dict):
            attributes = {**_pairs(image.get("Attributes"), "PostEntityImages.Attributes"), **attributes}
    if not record_id and message == "CloseIncident":
        resolution = inputs.get("IncidentResolution")
        reference = (
            _pairs(resolution.get("Attributes"), "IncidentResolution") if isinstance(resolution, dict) else {}
        )
        incident = reference.get("incidentid")
        record_id = str(incident.get("Id", "")) if isinstance(incident, dict) else ""
        if record_id and not is_guid(record_id):
            raise BadInput("incidentid must be a GUID")
    truncated = "x-ms-dynamics-msg-size-exceeded" in request.headers
    return Notification(
        message=message,
        entity=entity,
        record_id=record_id.lower() or None,
        truncated=truncated,
        hint=_is_hint(message, entity, attributes, truncated),
    )


def _is_hint(message: str, entity: str, attributes: dict[str, Any], truncated: bool) -> bool:
    """Whether the record is worth reading: a resolution, a win, or an update that may be one."""
    if entity == "incident" and message in CASE_MESSAGES:
        if message == "CloseIncident" or truncated:
            return True
        state = _option(attributes.get("statecode"))
        return state is None or state == RESOLVED
    if entity == "opportunity" and message in OPPORTUNITY_MESSAGES:
        if message == "WinOpportunity" or truncated:
            return True
        state = _option(attributes.get("statecode"))
        return state is None or state == WON
    return False
