"""Outbound Messages as Salesforce sends them: SOAP ``notifications``, at least once, out of order.

Salesforce queues each notification and retries it (for up to 24 hours) until the listener answers an
``Ack`` of true; retries and parallel deliveries mean a listener sees duplicates and a changed order.
``OutboundSender`` plays that: every notification is delivered ``copies`` times, the order shuffled, and
each delivery retried until acknowledged or ``attempts`` run out.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

import httpx

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"


def envelope(org_id: str, action_id: str, notifications: list[tuple[str, str, dict[str, Any]]]) -> bytes:
    """A notifications envelope; each notification is (notification id, sObject type, fields)."""
    items = []
    for notification_id, sobject, fields in notifications:
        values = "".join(
            f"<sf:{name}>{escape(_text(value))}</sf:{name}>"
            for name, value in fields.items()
            if value is not None
        )
        items.append(
            f"<Notification><Id>{escape(notification_id)}</Id>"
            f'<sObject xsi:type="sf:{sobject}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{values}</sObject>'
            "</Notification>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
        f'<notifications xmlns="{OUTBOUND_NS}"><OrganizationId>{org_id}</OrganizationId>'
        f'<ActionId>{action_id}</ActionId><SessionId xsi:nil="true"/>'
        f"{''.join(items)}</notifications></soapenv:Body></soapenv:Envelope>"
    ).encode()


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.endswith("+0000"):
        return value[:-5] + "Z"  # SOAP writes dateTimes in xsd form
    return str(value)


@dataclass
class Delivery:
    notification_id: str
    attempts: list[int] = field(default_factory=list)

    @property
    def acknowledged(self) -> bool:
        return bool(self.attempts) and self.attempts[-1] == 200


@dataclass
class OutboundSender:
    """Delivers to ``url``; ``seed`` makes the shuffled order repeatable."""

    url: str
    org_id: str
    action_id: str = "04k5g000000CXHUBAA"
    copies: int = 2
    attempts: int = 3
    retry_delay: float = 0.05
    seed: int = 7
    deliveries: list[Delivery] = field(default_factory=list)

    def send(self, notifications: list[tuple[str, str, dict[str, Any]]]) -> list[Delivery]:
        queue = [n for n in notifications for _ in range(self.copies)]
        random.Random(self.seed).shuffle(queue)
        with httpx.Client(timeout=10) as client:
            for notification in queue:
                delivery = Delivery(notification[0])
                body = envelope(self.org_id, self.action_id, [notification])
                for _ in range(self.attempts):
                    try:
                        reply = client.post(
                            self.url,
                            content=body,
                            headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'},
                        )
                        acked = reply.status_code == 200 and b"<Ack>true</Ack>" in reply.content
                        delivery.attempts.append(200 if acked else reply.status_code or 500)
                    except httpx.HTTPError:
                        delivery.attempts.append(0)
                    if delivery.acknowledged:
                        break
                    time.sleep(self.retry_delay)
                self.deliveries.append(delivery)
        return self.deliveries
