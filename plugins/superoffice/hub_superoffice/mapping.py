"""SuperOffice JSON <-> CX Hub models, as pure functions (no I/O), so each rule is testable on its own.

The event ids built here are the dedupe keys of the hub: a webhook and a poll that see the same closure must
produce the same id, so both paths build events from the same entity (``GET /Ticket/{id}``) with these
functions, and the id contains the closure's own timestamp rather than anything about how it was seen.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import phonenumbers

from hub import CaseEvent, PersonOptOut, PersonRecord
from hub_superoffice.config import SuperOfficeSettings

CLOSED_BASE_STATUSES = {"closed", "2"}
SOLD_STATUSES = {"sold", "2"}

_ENCODED = re.compile(r"^\[(?P<marker>[A-Z]+):(?P<data>.*)\]$")


def parse_datetime(value: Any) -> datetime | None:
    """A SuperOffice date-time as an aware UTC datetime.

    Entities carry ISO 8601 with an offset and seven fractional digits; archive values may come encoded as
    ``[DT:MM/dd/yyyy HH:mm:ss.fffffff]``. A value without an offset is taken as UTC. Year 1 means "no date".
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value).strip()
        encoded = _ENCODED.match(text)
        if encoded:
            text = encoded.group("data")
            try:
                moment = datetime.strptime(text[:19], "%m/%d/%Y %H:%M:%S")
            except ValueError:
                return None
        else:
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return None
    if moment.year <= 1:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:30-01:00 is past the last datetime in UTC
        return None


def compact(moment: datetime) -> str:
    """``20240501T101500Z``: second precision, UTC, no punctuation - for event ids."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def ticket_event_id(ticket_id: int, closed_at: datetime) -> str:
    return f"ticket:{ticket_id}:closed:{compact(closed_at)}"


def sale_event_id(sale_id: int, sold_at: datetime) -> str:
    return f"sale:{sale_id}:sold:{compact(sold_at)}"


def person_event_id(person_id: int, webhook_event_id: str) -> str:
    return f"person:{person_id}:changed:{webhook_event_id}"


def message_id_for(key: str) -> str:
    """A Message-Id derived from the hub's key: what an internal ticket message is found by on a retry."""
    return f"<cxhub-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:40]}@cxhub.invalid>"


def is_closed(ticket: dict[str, Any]) -> bool:
    return str(ticket.get("BaseStatus", "")).strip().lower() in CLOSED_BASE_STATUSES


def is_sold(sale: dict[str, Any]) -> bool:
    return str(sale.get("Status", "")).strip().lower() in SOLD_STATUSES


def _nested_id(entity: dict[str, Any], key: str, id_key: str) -> int | None:
    nested = entity.get(key)
    if isinstance(nested, dict):
        value = nested.get(id_key)
        if isinstance(value, int) and value > 0:
            return value
        if isinstance(value, str) and value.isdigit() and int(value) > 0:
            return int(value)
    return None


def _name(entity: dict[str, Any], key: str, *names: str) -> str | None:
    nested = entity.get(key)
    if isinstance(nested, dict):
        for name in names:
            if nested.get(name):
                return str(nested[name])
    return None


def owner_person_id(entity: dict[str, Any], key: str) -> int | None:
    """The person id of the associate in ``entity[key]`` (OwnedBy of a ticket, Associate of a sale)."""
    return _nested_id(entity, key, "PersonId")


def ticket_event(
    ticket: dict[str, Any], settings: SuperOfficeSettings, owner_email: str | None
) -> CaseEvent | None:
    """A ``case.closed`` event for a ticket whose base status is Closed; None for any other ticket."""
    ticket_id = ticket.get("TicketId")
    closed_at = parse_datetime(ticket.get("ClosedAt"))
    if not isinstance(ticket_id, int) or not is_closed(ticket) or closed_at is None:
        return None
    tags = [
        str(tag.get("Name")) for tag in ticket.get("Tags") or [] if isinstance(tag, dict) and tag.get("Name")
    ]
    fields = {
        "title": ticket.get("Title"),
        "category": _name(ticket, "Category", "Fullname", "FullName", "Name"),
        "priority": _name(ticket, "Priority", "Name"),
        "status": _name(ticket, "Status", "Name"),
        "origin": ticket.get("Origin"),
        "ticket_type": _name(ticket, "TicketType", "Name"),
        "tags": tags,
    }
    return CaseEvent(
        event_id=ticket_event_id(ticket_id, closed_at),
        event_type="case.closed",
        occurred_at=closed_at,
        record_type="ticket",
        record_id=str(ticket_id),
        person_id=_optional_str(_nested_id(ticket, "Person", "PersonId")),
        owner_email=owner_email,
        owner_name=_name(ticket, "OwnedBy", "FullName", "Name"),
        record_url=settings.ticket_url_template.format(base_url=settings.base_url, id=ticket_id),
        fields={key: value for key, value in fields.items() if value not in (None, "", [])},
    )


def sale_event(
    sale: dict[str, Any], settings: SuperOfficeSettings, owner_email: str | None
) -> CaseEvent | None:
    """An ``opportunity.won`` event for a sale whose status is Sold; None otherwise."""
    sale_id = sale.get("SaleId")
    sold_at = parse_datetime(sale.get("Saledate"))
    if not isinstance(sale_id, int) or not is_sold(sale) or sold_at is None:
        return None
    fields = {
        "heading": sale.get("Heading"),
        "amount": sale.get("Amount"),
        "currency": _name(sale, "Currency", "Value", "Name"),
        "sale_type": _name(sale, "SaleType", "Value", "Name"),
    }
    return CaseEvent(
        event_id=sale_event_id(sale_id, sold_at),
        event_type="opportunity.won",
        occurred_at=sold_at,
        record_type="sale",
        record_id=str(sale_id),
        person_id=_optional_str(_nested_id(sale, "Person", "PersonId")),
        owner_email=owner_email,
        owner_name=_name(sale, "Associate", "FullName", "Name"),
        record_url=settings.sale_url_template.format(base_url=settings.base_url, id=sale_id),
        fields={key: value for key, value in fields.items() if value not in (None, "")},
    )


def _optional_str(value: int | None) -> str | None:
    return None if value is None else str(value)


# --- people -------------------------------------------------------------------------------------


def first_email(person: dict[str, Any]) -> str | None:
    """The person's first e-mail address, normalised to lower case."""
    for item in person.get("Emails") or []:
        if isinstance(item, dict) and item.get("Value"):
            return str(item["Value"]).strip().lower()
    return None


def _country_code(person: dict[str, Any]) -> str | None:
    country = person.get("Country")
    if isinstance(country, dict):
        for key in ("TwoLetterISOCountry", "TwoLetterIsoCountry"):
            if country.get(key):
                return str(country[key]).upper()
    return None


def e164(number: str, region: str | None) -> str | None:
    """A phone number in E.164, read in the person's country when it has no country code."""
    try:
        parsed = phonenumbers.parse(number, region or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def mobile_numbers(person: dict[str, Any]) -> list[str]:
    """Every mobile number of the person that reads as a phone number, in E.164."""
    region = _country_code(person)
    numbers: list[str] = []
    for item in person.get("MobilePhones") or []:
        if isinstance(item, dict) and item.get("Value"):
            number = e164(str(item["Value"]), region)
            if number:
                numbers.append(number)
    return numbers


def language(person: dict[str, Any], settings: SuperOfficeSettings) -> str | None:
    """ISO 639-1: the person's CustomerLanguage by name, else the language of the person's country."""
    names = {name.lower(): code for name, code in settings.language_names.items()}
    customer_language = person.get("CustomerLanguage")
    if isinstance(customer_language, dict):
        value = str(customer_language.get("Value") or "").strip().lower()
        if value in names:
            return names[value]
        if len(value) == 2 and value.isalpha():
            return value
    country = _country_code(person)
    return settings.country_languages.get(country) if country else None


def opt_out(person: dict[str, Any]) -> str | None:
    """Why the person must not be surveyed, or None: No Mailings, a withdrawn e-marketing consent, retired."""
    if person.get("NoMailing"):
        return "No Mailings is ticked on the person"
    for consent in person.get("Consents") or []:
        if not isinstance(consent, dict):
            continue
        purpose = str(consent.get("ConsentPurposeKey") or "").upper()
        legal_base = str(consent.get("LegalBaseKey") or "").upper()
        if purpose == "EMARKETING" and legal_base == "WITHDRAWN":
            return "e-marketing consent withdrawn"
    if person.get("Retired"):
        return "the person has left the company (Retired)"
    return None


def person_record(person: dict[str, Any], settings: SuperOfficeSettings) -> PersonRecord:
    mobiles = mobile_numbers(person)
    reason = opt_out(person)
    return PersonRecord(
        crm_id=str(person.get("PersonId")),
        email=first_email(person),
        phone=mobiles[0] if mobiles else None,
        first_name=person.get("Firstname") or None,
        last_name=person.get("Lastname") or None,
        language=language(person, settings),
        opted_out=reason is not None,
        opt_out_reason=reason,
    )


# --- values written back ------------------------------------------------------------------------


def field_value(value: Any) -> str:
    """A custom field value as SuperOffice's REST API carries them: invariant-culture text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, float):
        return f"{value:.2f}"
    if hasattr(value, "value") and isinstance(value.value, str):  # enums
        return value.value
    return str(value)


def field_operations(values: dict[str, Any]) -> list[dict[str, Any]]:
    """JSON Patch operations setting custom fields: ``x_...`` are extra fields, the rest user-defined."""
    operations = []
    for field, value in values.items():
        bucket = "ExtraFields" if field.startswith("x_") else "UserDefinedFields"
        operations.append({"op": "replace", "path": f"/{bucket}/{field}", "value": field_value(value)})
    return operations


def custom_fields_body(values: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The ``ExtraFields`` / ``UserDefinedFields`` members of a new entity."""
    body: dict[str, dict[str, str]] = {}
    for field, value in values.items():
        bucket = "ExtraFields" if field.startswith("x_") else "UserDefinedFields"
        body.setdefault(bucket, {})[field] = field_value(value)
    return body


def opt_out_values(opt_out: PersonOptOut, reason_length: int) -> dict[str, Any]:
    """What an opt-out writes (tick, date, reason) by ``OptOutFields`` name; an opt-in clears each one."""
    values = opt_out.shown()
    return values | {"reason": truncate(values["reason"], reason_length)}


_PLACEHOLDER = re.compile(r"\[\[(\w+)\]\]")
_EMPTY_PARENS = re.compile(r"\s*\(\s*\)")


def render(template: str, values: dict[str, Any]) -> str:
    """Fill ``[[name]]`` placeholders; an unknown or empty one becomes empty, and blank lines are dropped."""
    text = _PLACEHOLDER.sub(lambda match: field_value(values.get(match.group(1))), template)
    lines = [_EMPTY_PARENS.sub("", line).rstrip() for line in text.splitlines()]
    return "\n".join(line for line in lines if line.strip()).strip()


def truncate(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + "…"
