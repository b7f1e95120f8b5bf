"""Read-only HTML pages of a person and a ticket, to see in a browser what the hub wrote back."""

from __future__ import annotations

from html import escape
from typing import Any

from hub_superoffice.emulation.entities import person_json, ticket_json
from hub_superoffice.emulation.store import Store

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem;color:#222}"
    "table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.3rem .6rem;"
    "text-align:left;vertical-align:top}th{background:#f3f5f8}pre{white-space:pre-wrap;margin:0}"
    ".muted{color:#777}"
)


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><p class='muted'>SuperOffice emulator</p>"
        f"<h1>{escape(title)}</h1>{body}</body></html>"
    )


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "<p class='muted'>none</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td><pre>{escape(str(c))}</pre></td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fields(values: dict[str, str]) -> str:
    return _table(["field", "value"], [[name, value or "—"] for name, value in sorted(values.items())])


def person_page(store: Store, person_id: int) -> str | None:
    person = person_json(store, person_id)
    if person is None:
        return None
    with store.lock:
        activities = [a for a in store.data.appointments.values() if a["PersonId"] == person_id]
        rows = [
            (table, row)
            for table, table_rows in store.data.extra.items()
            for row in table_rows.values()
            if any(str(value) == str(person_id) for name, value in row.items() if name.endswith("person"))
        ]
    emails = ", ".join(e["Value"] for e in person["Emails"]) or "—"
    mobiles = ", ".join(m["Value"] for m in person["MobilePhones"]) or "—"
    language = (person["CustomerLanguage"] or {}).get("Value", "—")
    details = _table(
        ["e-mail", "mobile", "language", "country", "no mailings"],
        [[emails, mobiles, language, person["Country"]["Name"], person["NoMailing"]]],
    )
    timeline = _table(
        ["id", "when", "type", "text", "fields"],
        [
            [
                a["AppointmentId"],
                store.clock.entity(a["StartDate"]),
                a["Type"],
                a["Description"],
                a["ExtraFields"],
            ]
            for a in activities
        ],
    )
    table_rows = _table(["table", "row"], [[table, row] for table, row in rows])
    return _page(
        person["FullName"],
        f"{details}<h2>Custom fields</h2>{_fields(person['CustomFields'])}<h2>Activities</h2>{timeline}"
        f"<h2>Extra table rows</h2>{table_rows}",
    )


def ticket_page(store: Store, ticket_id: int) -> str | None:
    ticket = ticket_json(store, ticket_id)
    if ticket is None:
        return None
    with store.lock:
        messages = [m for m in store.data.messages.values() if m["TicketId"] == ticket_id]
    person = ticket["Person"] or {}
    details = _table(
        ["status", "closed", "person", "owner"],
        [
            [
                f"{ticket['Status']['Name']} ({ticket['BaseStatus']})",
                ticket["ClosedAt"],
                person.get("FullName", "—"),
                (ticket["OwnedBy"] or {}).get("FullName", "—"),
            ]
        ],
    )
    message_rows = _table(
        ["id", "created", "level", "author", "text"],
        [
            [m["TicketMessageId"], store.clock.entity(m["CreatedAt"]), m["Slevel"], m["Author"], m["Body"]]
            for m in messages
        ],
    )
    return _page(
        f"Request {ticket_id}: {ticket['Title']}",
        f"{details}<h2>Custom fields</h2>{_fields(ticket['CustomFields'])}<h2>Messages</h2>{message_rows}",
    )
