"""Dataverse rows -> the hub's models. Polling and webhooks both read the row and build the event here, with
the same columns, so a resolution seen both ways has one event id and the hub keeps one copy."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from hub import CaseEvent, PersonRecord
from hub_dynamics.config import DynamicsSettings

#: incident.statecode 1 = Resolved; opportunity.statecode 1 = Won
RESOLVED = 1
WON = 1
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
#: the namespace of the hub's deterministic record ids (uuid5 of the hub's idempotency key)
HUB_NAMESPACE = uuid.UUID("5b0c2f5e-8a73-4f0e-9d7e-0c1d2e3f4a5b")

INCIDENT_COLUMNS = [
    "incidentid",
    "title",
    "ticketnumber",
    "statecode",
    "statuscode",
    "modifiedon",
    "_customerid_value",
    "_primarycontactid_value",
    "_ownerid_value",
]
OPPORTUNITY_COLUMNS = [
    "opportunityid",
    "name",
    "statecode",
    "actualclosedate",
    "modifiedon",
    "_parentcontactid_value",
    "_ownerid_value",
]
CONTACT_COLUMNS = [
    "contactid",
    "firstname",
    "lastname",
    "emailaddress1",
    "mobilephone",
    "donotemail",
    "donotbulkemail",
    "donotsms",
]
LOOKUP_TABLE = "@Microsoft.Dynamics.CRM.lookuplogicalname"
OPPORTUNITY_PREFIX = "opportunity:"
ENTITY_SETS = {"incident": "incidents", "opportunity": "opportunities", "contact": "contacts"}


def is_guid(value: object) -> bool:
    return isinstance(value, str) and GUID.match(value) is not None


def hub_id(key: str) -> str:
    """The deterministic Dataverse id of what the hub writes for ``key``: a retry finds the same row."""
    return str(uuid.uuid5(HUB_NAMESPACE, key))


def parse_datetime(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def odata_datetime(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def incident_person(row: dict[str, Any]) -> str | None:
    """The contact to survey: the customer when it is a contact, else the case's primary contact."""
    customer = row.get("_customerid_value")
    if is_guid(customer) and row.get(f"_customerid_value{LOOKUP_TABLE}", "contact") == "contact":
        return str(customer).lower()
    contact = row.get("_primarycontactid_value")
    return str(contact).lower() if is_guid(contact) else None


def incident_event(
    row: dict[str, Any], settings: DynamicsSettings, owner_email: str | None
) -> CaseEvent | None:
    """``case.closed`` for a resolved incident; None for any other."""
    incident_id = row.get("incidentid")
    if not is_guid(incident_id) or row.get("statecode") != RESOLVED:
        return None
    incident_id = str(incident_id).lower()
    return CaseEvent(
        event_id=f"incident:{incident_id}:resolved",
        event_type="case.closed",
        occurred_at=parse_datetime(row.get("modifiedon")) or datetime.now(UTC),
        record_type="incident",
        record_id=incident_id,
        person_id=incident_person(row),
        owner_email=owner_email,
        record_url=f"{settings.url}/main.aspx?etn=incident&pagetype=entityrecord&id={incident_id}",
        fields={
            "title": row.get("title"),
            "ticketnumber": row.get("ticketnumber"),
            "statuscode": row.get("statuscode"),
        },
    )


def opportunity_event(
    row: dict[str, Any], settings: DynamicsSettings, owner_email: str | None
) -> CaseEvent | None:
    """``opportunity.won`` for a won opportunity; None for any other."""
    opportunity_id = row.get("opportunityid")
    if not is_guid(opportunity_id) or row.get("statecode") != WON:
        return None
    opportunity_id = str(opportunity_id).lower()
    contact = row.get("_parentcontactid_value")
    occurred = parse_datetime(row.get("actualclosedate")) or parse_datetime(row.get("modifiedon"))
    return CaseEvent(
        event_id=f"opportunity:{opportunity_id}:won",
        event_type="opportunity.won",
        occurred_at=occurred or datetime.now(UTC),
        record_type="opportunity",
        record_id=f"{OPPORTUNITY_PREFIX}{opportunity_id}",
        person_id=str(contact).lower() if is_guid(contact) else None,
        owner_email=owner_email,
        record_url=f"{settings.url}/main.aspx?etn=opportunity&pagetype=entityrecord&id={opportunity_id}",
        fields={"name": row.get("name")},
    )


def contact_columns(settings: DynamicsSettings) -> list[str]:
    return CONTACT_COLUMNS + ([settings.language_column] if settings.language_column else [])


def person_record(row: dict[str, Any], settings: DynamicsSettings) -> PersonRecord:
    """A contact as the hub sees it; any of the three do-not flags opts the person out."""
    flags = [name for name in ("donotemail", "donotbulkemail", "donotsms") if row.get(name) is True]
    language = None
    if settings.language_column:
        lcid = row.get(settings.language_column)
        language = settings.language_codes.get(lcid) if isinstance(lcid, int) else None
    email = row.get("emailaddress1")
    phone = row.get("mobilephone")
    return PersonRecord(
        crm_id=str(row.get("contactid", "")).lower(),
        email=str(email).strip().lower() if email else None,
        phone=str(phone).strip() if phone else None,
        first_name=row.get("firstname") or None,
        last_name=row.get("lastname") or None,
        language=language,
        opted_out=bool(flags),
        opt_out_reason=f"Dynamics: {', '.join(flags)}" if flags else None,
    )


def record_ref(record_id: str) -> tuple[str, str] | None:
    """(table, id) of a case record id: a bare GUID is an incident, ``opportunity:<GUID>`` an opportunity.

    Dataverse ids carry no table, and a write-back item carries only the id the event named: so an
    opportunity's id says what it is, and its feedback never lands on ``incidents(<opportunity id>)``.
    """
    if record_id.startswith(OPPORTUNITY_PREFIX) and is_guid(record_id[len(OPPORTUNITY_PREFIX) :]):
        return "opportunity", record_id[len(OPPORTUNITY_PREFIX) :].lower()
    return ("incident", record_id.lower()) if is_guid(record_id) else None


def odata_string(value: str) -> str:
    """A string literal for $filter: single quotes doubled."""
    return "'" + value.replace("'", "''") + "'"
