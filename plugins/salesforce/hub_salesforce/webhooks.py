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
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import cast

from hub import BadInput
from hub_salesforce.soql import is_record_id

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
SIGNATURE_HEADER = "x-cxhub-signature"
TIMESTAMP_HEADER = "x-cxhub-timestamp"
MAX_SKEW_SECONDS = 300
MAX_BODY_BYTES = 2_000_000
#: a notifications envelope is six elements deep (Envelope, Body, notifications, Notification, sObject,
#: field); anything much deeper is no Outbound Message
MAX_XML_DEPTH = 16
#: characters handed to the XML parser at a time, so that too deep a body is refused as it is read
XML_CHUNK = 65536
#: the objects whose events the hub reads, and the object a callout's event names by default
SURVEYED_OBJECTS = frozenset({"Case", "Opportunity"})
CALLOUT_EVENTS = {"case.closed": "Case", "opportunity.won": "Opportunity"}
#: unix seconds as a callout sends them: ASCII digits, perhaps with a fraction
_SECONDS = re.compile(r"^[0-9]{1,12}(?:\.[0-9]{1,9})?$")
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


def _parse_xml(body: bytes) -> ET.Element:
    """The document's root, read safely whatever the body holds.

    Salesforce sends UTF-8, so anything else is refused before parsing: that makes the DTD check below hold
    (a ``<!DOCTYPE`` in UTF-16 has no ``<!DOCTYPE`` bytes), and no DTD means no entity can expand or be
    fetched. Elements nested deeper than ``MAX_XML_DEPTH`` are refused while the parser reads them, before
    a hostile body builds a tree 100,000 levels deep.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("Outbound Message is not UTF-8", 400) from None
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise BadInput("SOAP messages carry no DTD", 400)
    text = text.removeprefix("\ufeff")  # a str: the parser reads it as the UTF-8 it was
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
    root: ET.Element | None = None
    depth = 0
    try:
        pieces: list[str | None] = [text[i : i + XML_CHUNK] for i in range(0, len(text), XML_CHUNK)]
        for piece in [*pieces, None]:  # None: the end of the body
            if piece is None:
                parser.close()
            else:
                parser.feed(piece)
            for event in parser.read_events():
                depth += 1 if event[0] == "start" else -1
                if depth > MAX_XML_DEPTH:
                    raise BadInput(f"Outbound Message nested deeper than {MAX_XML_DEPTH} elements", 400)
                if root is None and event[0] == "start":
                    root = cast("ET.Element", event[-1])
    except ET.ParseError:
        raise BadInput("Outbound Message is not well-formed XML", 400) from None
    if root is None:
        raise BadInput("Outbound Message is empty", 400)
    return root


def read_outbound_message(body: bytes) -> OutboundMessage:
    """Parse a notifications envelope; BadInput(400) for anything else. DTDs are refused outright."""
    if len(body) > MAX_BODY_BYTES:
        raise BadInput("Outbound Message too large", 413)
    root = _parse_xml(body)
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


def records_of(message: OutboundMessage) -> list[tuple[str, str]]:
    """``(sObject type, record id)`` of each notification; BadInput(400) unless every one names a record.

    Salesforce fills the notification Id and the sObject's Id with record ids. Anything else (an id of 300
    characters, a missing Id field, an object the hub does not survey) is no message of the org's: it is
    refused, and kept for inspection, rather than acknowledged and lost.
    """
    records = []
    for notification in message.notifications:
        record_id = notification.fields.get("Id", "")
        if not is_record_id(notification.id) or not is_record_id(record_id):
            raise BadInput("an Outbound Message notification whose Id or sObject Id is no record id", 400)
        if notification.sobject_type not in SURVEYED_OBJECTS:
            raise BadInput("an Outbound Message about an object other than Case or Opportunity", 400)
        records.append((notification.sobject_type, record_id))
    return records


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
    if not _SECONDS.match(timestamp):  # float() would read "nan", which passes any age test
        raise BadInput("X-CXHub-Timestamp is not a number of seconds", 401)
    age = abs((now if now is not None else time.time()) - float(timestamp))
    if age > MAX_SKEW_SECONDS:
        raise BadInput("callout timestamp too old (replayed?)", 401)
    if not hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.strip().encode()):
        raise BadInput("callout signature does not match", 401)


def read_callout(body: bytes) -> list[tuple[str, str]]:
    """``{"event": "case.closed", "records": [{"Id": ...}, ...]}`` -> ``(sObject type, record id)`` pairs.

    The shape is checked whole: a body the sender did not mean (nested thousands deep, a record that is not
    an object, an id that is no record id, an event the hub does not know) is BadInput(400), never a crash.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise BadInput("callout body is not JSON", 400) from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise BadInput('callout body must be {"event": ..., "records": [...]}', 400)
    event = data.get("event", "case.closed")
    if not isinstance(event, str) or event not in CALLOUT_EVENTS:
        raise BadInput(f"callout event must be one of {', '.join(sorted(CALLOUT_EVENTS))}", 400)
    default = CALLOUT_EVENTS[event]
    wanted = []
    for record in data["records"]:
        attributes = record.get("attributes", {}) if isinstance(record, dict) else None
        if not isinstance(attributes, dict) or not is_record_id(record.get("Id")):
            raise BadInput('each callout record must be an object {"Id": "<record id>"}', 400)
        sobject = attributes.get("type") or default
        if not isinstance(sobject, str) or sobject not in SURVEYED_OBJECTS:
            raise BadInput("a callout record whose attributes.type is not Case or Opportunity", 400)
        wanted.append((sobject, record["Id"]))
    return wanted
