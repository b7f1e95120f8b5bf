"""Signed webhooks of the built-in SuperOffice and Salesforce connectors with random and hostile bodies.

The signature is always computed over the exact bytes sent (so the connectors' parsers, not their signature
checks, meet the input), except where a test forges it on purpose. No request may get a 5xx; every refused
one (4xx) must be kept in rejected_webhooks with its body, so an admin can see what was sent and why.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

import httpx
import pytest
from hub_salesforce.webhooks import OUTBOUND_NS, SOAP_ENV, XSI
from hub_salesforce.webhooks import sign as salesforce_signature
from hub_superoffice.webhooks import signature as superoffice_signature
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import SF_WEBHOOK_SECRET, SO_WEBHOOK_SECRET, FuzzHub, Probe, examples
from tests.fuzz.strategies import (
    HUGE_NUMBERS,
    header_text,
    hostile_text,
    json_body,
    json_values,
    numbers,
    raw_bodies,
)

pytestmark = pytest.mark.fuzz


def check(probe: Probe, target: str, reply: httpx.Response, body: bytes) -> None:
    """No 5xx (Probe.send checks that); a refusal is a 4xx with a reason, kept with its body."""
    assert reply.status_code < 300 or 400 <= reply.status_code < 500, reply.text[:300]
    if reply.status_code >= 400:
        probe.assert_kept(target, reply, body)


# --- SuperOffice ---------------------------------------------------------------------------------------------

SO_EVENTS = [
    "ticket.changed",
    "ticket.created",
    "sale.sold",
    "sale.changed",
    "person.changed",
    "test",
    "TEST ",
]


def superoffice_payload(ticket_id: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "Event": st.one_of(st.sampled_from(SO_EVENTS), json_values),
            "Entity": st.one_of(st.sampled_from(["ticket", "sale", "person"]), json_values),
            "PrimaryKey": st.one_of(
                st.just(ticket_id), st.integers(), st.sampled_from(HUGE_NUMBERS), numbers, json_values
            ),
            "EventId": st.one_of(hostile_text, json_values),
            "Timestamp": st.one_of(
                st.sampled_from(
                    [
                        "2026-01-01T00:00:00Z",
                        "/Date(1700000000000)/",
                        "9999-12-31T23:59:59",
                        "0000-00-00",
                        "-1",
                    ]
                ),
                hostile_text,
                numbers,
            ),
            "Changes": st.one_of(st.lists(hostile_text, max_size=5), json_values),
            "FieldValues": json_values,
            "ContextIdentifier": st.one_of(st.just("Cust12345"), hostile_text),
        },
    )


@st.composite
def superoffice_bodies(draw: st.DrawFn, ticket_id: int) -> bytes:
    return draw(st.one_of(json_body(superoffice_payload(ticket_id)), json_body(json_values), raw_bodies))


@given(data=st.data())
@examples(120)
def test_superoffice_webhooks_with_hostile_bodies(fuzz_hub: FuzzHub, data: st.DataObject) -> None:
    probe = fuzz_hub.probe
    body = data.draw(superoffice_bodies(fuzz_hub.so_ticket_id), label="body")
    signed = data.draw(st.sampled_from(["right", "right", "right", "forged", "none"]), label="signature")
    headers = {"content-type": "application/json"}
    if signed != "none":
        headers["X-SuperOffice-Signature"] = superoffice_signature(
            SO_WEBHOOK_SECRET, body if signed == "right" else body + b" "
        )
    extra = data.draw(
        st.dictionaries(
            st.sampled_from(["X-Hook-Test", "X-SuperOffice-EventId", "X-SuperOffice-Event"]), header_text
        ),
        label="extra headers",
    )
    headers.update(extra)
    reply = probe.send("POST", "/hooks/so", content=body, headers=headers)
    check(probe, "so", reply, body)
    if signed != "right":
        assert reply.status_code == 401


# --- Salesforce: JSON callouts -----------------------------------------------------------------------------


def salesforce_records(case: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    record_ids = st.one_of(
        st.just(case["Id"]),
        st.just(case["Id"][:15]),
        st.from_regex(r"\A[a-zA-Z0-9]{15}([a-zA-Z0-9]{3})?\Z"),
        hostile_text,
        json_values,
    )
    return st.fixed_dictionaries(
        {"Id": record_ids},
        optional={
            "attributes": st.one_of(
                st.fixed_dictionaries(
                    {"type": st.one_of(st.sampled_from(["Case", "Opportunity"]), json_values)}
                ),
                json_values,
            ),
            "ClosedDate": st.one_of(st.just(case.get("ClosedDate")), hostile_text, json_values),
            "ContactId": st.one_of(st.just(case.get("ContactId")), hostile_text, json_values),
            "Subject": hostile_text,
            "IsWon": json_values,
            "StageName": json_values,
        },
    )


@st.composite
def callout_bodies(draw: st.DrawFn, case: dict[str, Any]) -> bytes:
    payload = st.fixed_dictionaries(
        {},
        optional={
            "event": st.one_of(st.sampled_from(["case.closed", "opportunity.won"]), json_values),
            "records": st.one_of(st.lists(salesforce_records(case), max_size=4), json_values),
        },
    )
    return draw(
        st.one_of(json_body(payload), json_body(json_values), raw_bodies.filter(lambda b: b[:1] != b"<"))
    )


@given(data=st.data())
@examples(100)
def test_salesforce_callouts_with_hostile_bodies(fuzz_hub: FuzzHub, data: st.DataObject) -> None:
    probe = fuzz_hub.probe
    body = data.draw(callout_bodies(fuzz_hub.sf_case), label="body")
    now = str(int(time.time()))
    timestamp = data.draw(
        st.one_of(
            st.just(now),
            st.just(now),
            st.sampled_from(["nan", "inf", "-inf", "1e400", "", "0x10"]),
            header_text,
        ),
        label="timestamp",
    )
    signed = data.draw(st.sampled_from(["right", "right", "forged", "none"]), label="signature")
    headers = {"content-type": "application/json", "x-cxhub-timestamp": timestamp}
    if signed != "none":
        headers["x-cxhub-signature"] = salesforce_signature(
            SF_WEBHOOK_SECRET, timestamp, body if signed == "right" else body + b" "
        )
    reply = probe.send("POST", "/hooks/sf", content=body, headers=headers)
    check(probe, "sf", reply, body)
    if signed != "right" or timestamp != now:
        assert reply.status_code >= 400, f"accepted with signature {signed} and timestamp {timestamp!r}"


# --- Salesforce: Outbound Messages (SOAP) ------------------------------------------------------------------


def envelope(org_id: str, notifications: list[tuple[str, str, dict[str, str]]]) -> bytes:
    items = "".join(
        f"<Notification><Id>{escape(nid)}</Id>"
        f'<sObject xsi:type="sf:{escape(kind, {chr(34): "&quot;"})}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
        + "".join(f"<sf:{name}>{escape(value)}</sf:{name}>" for name, value in fields.items())
        + "</sObject></Notification>"
        for nid, kind, fields in notifications
    )
    text = (
        f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" '
        f'xmlns:xsi="{XSI}"><soapenv:Body><notifications xmlns="{OUTBOUND_NS}">'
        f"<OrganizationId>{escape(org_id)}</OrganizationId><ActionId>04k000000000001</ActionId>"
        f"{items}</notifications></soapenv:Body></soapenv:Envelope>"
    )
    return text.encode("utf-8", errors="surrogatepass")


@st.composite
def outbound_messages(draw: st.DrawFn, org_id: str, case: dict[str, Any]) -> bytes:
    field_names = st.sampled_from(["Id", "ClosedDate", "ContactId", "IsClosed", "Subject", "Amount"])
    values = st.one_of(st.just(case["Id"]), st.from_regex(r"\A[a-zA-Z0-9]{18}\Z"), hostile_text)
    notification = st.tuples(
        st.one_of(st.from_regex(r"\A04l[0-9A-Za-z]{15}\Z"), hostile_text),
        st.one_of(st.sampled_from(["Case", "Opportunity"]), hostile_text),
        st.dictionaries(field_names, values, max_size=4),
    )
    org = draw(st.one_of(st.just(org_id), st.just(org_id[:15]), hostile_text), label="org")
    built = envelope(org, draw(st.lists(notification, max_size=5), label="notifications"))
    deep = b"<a>" * 100_000 + b"</a>" * 100_000
    return draw(st.one_of(st.just(built), st.just(deep), raw_bodies.map(lambda b: b"<" + b)))


@given(data=st.data())
@examples(80)
def test_salesforce_outbound_messages_with_hostile_bodies(fuzz_hub: FuzzHub, data: st.DataObject) -> None:
    probe = fuzz_hub.probe
    body = data.draw(outbound_messages(fuzz_hub.sf_org_id, fuzz_hub.sf_case), label="body")
    headers = {
        "content-type": data.draw(st.sampled_from(["text/xml; charset=utf-8", "application/xml", "xml"]))
    }
    reply = probe.send("POST", "/hooks/sf", content=body, headers=headers)
    check(probe, "sf", reply, body)


# --- any connector name, any body ------------------------------------------------------------------------------


@given(
    connector=st.one_of(st.sampled_from(["crm", "so", "sf"]), st.text(max_size=30)),
    body=raw_bodies,
    content_type=st.one_of(header_text, st.sampled_from(["application/json", "text/xml"])),
)
@examples(60)
def test_unsigned_webhooks_to_any_name(
    fuzz_hub: FuzzHub, connector: str, body: bytes, content_type: str
) -> None:
    probe = fuzz_hub.probe
    path = "/hooks/" + quote(connector, safe="")
    reply = probe.send("POST", path, content=body, headers={"content-type": content_type})
    assert reply.status_code < 500
