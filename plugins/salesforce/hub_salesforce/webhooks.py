"""Reading the two kinds of webhook Salesforce can send the hub.

- Outbound Messages (SOAP, from a Flow or workflow rule): a ``notifications`` envelope with the org id and up
  to 100 ``Notification`` items. They carry no signature, so the org id must match the configured one; the
  answer is an ``Ack`` of true, which the hub sends only after storing the events (Salesforce retries until
  it gets it, at least once and out of order).
- A JSON callout (Apex or a Flow HTTP action) signed with HMAC-SHA256 over ``{timestamp}.{body}``, sent as
  ``X-CXHub-Timestamp`` and ``X-CXHub-Signature: sha256=<hex>``; compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from hub import BadInput

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
SIGNATURE_HEADER = "x-cxhub-signature"
TIMESTAMP_HEADER = "x-cxhub-timestamp"
MAX_SKEW_SECONDS = 300
MAX_BODY_BYTES = 2_000_000
ACK_MEDIA_TYPE = "text/xml; charset=utf-8"
ACK_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}"><soapenv:Body>'
    f'<notificationsResponse xmlns="{OUTBOUND_NS}"><Ack>true</Ack></notificationsResponse>'
    "</soapenv:Body></soapenv:Envelope>"
)


@dataclass
class Notification:
    """One Outbound Message notification: its id (the dedupe key), the sObject type and its fields."""

    id: str
    sobject_type: str
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class OutboundMessage:
    organization_id: str
    action_id: str
    notifications: list[Notification]


def is_soap(body: bytes, content_type: str | None) -> bool:
    return "xml" in (content_type or "") or body.lstrip().startswith(b"<")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def read_outbound_message(body: bytes) -> OutboundMessage:
    """Parse a notifications envelope; BadInput(400) for anything else. DTDs are refused outright."""
    if len(body) > MAX_BODY_BYTES:
        raise BadInput("Outbound Message too large", 413)
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise BadInput("SOAP messages carry no DTD", 400)
    try:
        root = ET.fromstring(body)  # noqa: S314 - DTDs refused above; no entities can expand
    except ET.ParseError:
        raise BadInput("Outbound Message is not well-formed XML", 400) from None
    notifications = root.find(f"{{{SOAP_ENV}}}Body/{{{OUTBOUND_NS}}}notifications")
    if notifications is None:
        raise BadInput("not a Salesforce Outbound Message (no notifications element)", 400)
    items: list[Notification] = []
    for element in notifications.findall(f"{{{OUTBOUND_NS}}}Notification"):
        notification_id = element.findtext(f"{{{OUTBOUND_NS}}}Id") or ""
        sobject = element.find(f"{{{OUTBOUND_NS}}}sObject")
        if not notification_id or sobject is None:
            raise BadInput("an Outbound Message notification lacks its Id or sObject", 400)
        sobject_type = (sobject.get(f"{{{XSI}}}type") or "").split(":")[-1]
        fields = {_local(child.tag): (child.text or "") for child in sobject}
        items.append(Notification(notification_id, sobject_type, fields))
    return OutboundMessage(
        organization_id=notifications.findtext(f"{{{OUTBOUND_NS}}}OrganizationId") or "",
        action_id=notifications.findtext(f"{{{OUTBOUND_NS}}}ActionId") or "",
        notifications=items,
    )


def same_org(configured: str, received: str) -> bool:
    """Org ids come in 15- and 18-character forms; the first 15 characters are the id (case-sensitive)."""
    return len(received) >= 15 and hmac.compare_digest(configured[:15].encode(), received[:15].encode())


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value of a JSON callout."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_callout(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> None:
    """BadInput(401) unless the callout is signed with ``secret`` within the allowed clock skew."""
    signature = headers.get(SIGNATURE_HEADER, "")
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    if not signature or not timestamp:
        raise BadInput("unsigned callout: X-CXHub-Signature and X-CXHub-Timestamp are required", 401)
    try:
        age = abs((now if now is not None else time.time()) - float(timestamp))
    except ValueError:
        raise BadInput("X-CXHub-Timestamp is not a number", 401) from None
    if age > MAX_SKEW_SECONDS:
        raise BadInput("callout timestamp too old (replayed?)", 401)
    if not hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.strip().encode()):
        raise BadInput("callout signature does not match", 401)


def read_callout(body: bytes) -> tuple[str, list[dict[str, Any]]]:
    """``{"event": "case.closed", "records": [{...}]}`` -> (event, records)."""
    try:
        data = json.loads(body)
    except ValueError:
        raise BadInput("callout body is not JSON", 400) from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise BadInput('callout body must be {"event": ..., "records": [...]}', 400)
    records = [r for r in data["records"] if isinstance(r, dict)]
    return str(data.get("event", "")), records
