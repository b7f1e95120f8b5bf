"""Dataverse rows -> the hub's models. Polling and webhooks both read the row and build the event here, with
the same columns, so a resolution seen both ways has one event id and the hub keeps one copy."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any, NamedTuple

from hub import CaseEvent, PersonRecord
from hub_dynamics.config import DynamicsSettings

#: incident.statecode 1 = Resolved; opportunity.statecode 1 = Won
RESOLVED = 1
WON = 1
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
#: the namespace of the hub's deterministic record ids (uuid5 of the hub's idempotency key)
HUB_NAMESPACE = uuid.UUID("5b0c2f5e-8a73-4f0e-9d7e-0c1d2e3f4a5b")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

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
#: per table: the activity Dataverse creates at each closing (CloseIncident, WinOpportunity), its entity set
#: and the logical name of its lookup to the record it closes. Its activityid names one resolution (win): the
#: record's ``modifiedon`` cannot, as any later change (the hub's own feedback columns) moves it.
CLOSINGS = {
    "incident": ("incidentresolutions", "incidentid"),
    "opportunity": ("opportunitycloses", "opportunityid"),
}
LOOKUP_TABLE = "@Microsoft.Dynamics.CRM.lookuplogicalname"
OPPORTUNITY_PREFIX = "opportunity:"
ENTITY_SETS = {"incident": "incidents", "opportunity": "opportunities", "contact": "contacts"}


class Closing(NamedTuple):
    """The newest closing activity of a record: its id and when it was created."""

    activity_id: str
    created: datetime | None


def newest_closings(rows: list[dict[str, Any]], lookup: str) -> dict[str, Closing]:
    """Per closed record, its newest closing activity (the latest ``createdon``; the greater activityid on a
    tie, so every reader of the same rows picks the same one)."""
    newest: dict[str, tuple[datetime, str]] = {}
    for row in rows:
        record, activity = row.get(f"_{lookup}_value"), row.get("activityid")
        if not is_guid(record) or not is_guid(activity):
            continue
        candidate = (parse_datetime(row.get("createdon")) or EPOCH, str(activity).lower())
        if candidate > newest.get(str(record).lower(), (EPOCH, "")):
            newest[str(record).lower()] = candidate
    return {
        record: Closing(activity, None if created == EPOCH else created)
        for record, (created, activity) in newest.items()
    }


def closed_event_id(table: str, record_id: str, closing: Closing | None) -> str:
    """``incident:<id>:resolved:<case resolution id>`` (``opportunity:<id>:won:<opportunity close id>``): a
    case resolved again after a reopening is a new event. A record closed without its activity (its state
    set by a plain Update) falls back to ``incident:<id>:resolved`` (``opportunity:<id>:won``): stable, so
    webhook and polling agree, but once per record."""
    base = f"{table}:{record_id}:{'resolved' if table == 'incident' else 'won'}"
    return f"{base}:{closing.activity_id}" if closing else base


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


def closed_id(table: str, row: dict[str, Any]) -> str | None:
    """The id of a resolved incident (won opportunity) row; None for any other row."""
    record_id = row.get(f"{table}id")
    if not is_guid(record_id) or row.get("statecode") != (RESOLVED if table == "incident" else WON):
        return None
    return str(record_id).lower()


def incident_event(
    row: dict[str, Any], settings: DynamicsSettings, owner_email: str | None, closing: Closing | None = None
) -> CaseEvent | None:
    """``case.closed`` for a resolved incident (``closing`` its newest case resolution); None for any other."""
    incident_id = closed_id("incident", row)
    if incident_id is None:
        return None
    occurred = (closing.created if closing else None) or parse_datetime(row.get("modifiedon"))
    return CaseEvent(
        event_id=closed_event_id("incident", incident_id, closing),
        event_type="case.closed",
        occurred_at=occurred or datetime.now(UTC),
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
    row: dict[str, Any], settings: DynamicsSettings, owner_email: str | None, closing: Closing | None = None
) -> CaseEvent | None:
    """``opportunity.won`` for a won opportunity (``closing`` its newest close activity); None for any other."""
    opportunity_id = closed_id("opportunity", row)
    if opportunity_id is None:
        return None
    contact = row.get("_parentcontactid_value")
    occurred = parse_datetime(row.get("actualclosedate")) or parse_datetime(row.get("modifiedon"))
    return CaseEvent(
        event_id=closed_event_id("opportunity", opportunity_id, closing),
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
