"""Salesforce records -> the hub's models (events and people), in one place.

Webhooks and polling both build events here, so a closure seen both ways has the same event id
(``case:{Id}:closed:{ClosedDate}``) and the hub keeps one copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hub import CaseEvent, PersonRecord
from hub_salesforce.config import SalesforceSettings
from hub_salesforce.soql import parse_datetime, quote_list, select

CASE_FIELDS = (
    "Id",
    "CaseNumber",
    "Subject",
    "Status",
    "Origin",
    "Priority",
    "Type",
    "IsClosed",
    "ClosedDate",
    "ContactId",
    "OwnerId",
    "Owner.Name",
    "Owner.Email",
)
OPPORTUNITY_FIELDS = (
    "Id",
    "Name",
    "StageName",
    "Amount",
    "IsWon",
    "CloseDate",
    "LastModifiedDate",
    "ContactId",
    "OwnerId",
    "Owner.Name",
    "Owner.Email",
)
#: an opportunity's contact roles: the primary one names the person to survey
PRIMARY_ROLE_FIELDS = ("OpportunityId", "ContactId")
CONTACT_FIELDS = (
    "Id",
    "FirstName",
    "LastName",
    "Email",
    "MobilePhone",
    "Phone",
    "HasOptedOutOfEmail",
    "DoNotCall",
)
#: the case values campaign filters may match on
FILTER_FIELDS = (
    "CaseNumber",
    "Subject",
    "Status",
    "Origin",
    "Priority",
    "Type",
    "StageName",
    "Amount",
    "Name",
)


def contact_fields(settings: SalesforceSettings) -> tuple[str, ...]:
    extra = (settings.person.language_field,) if settings.person.language_field else ()
    return CONTACT_FIELDS + extra


def canonical_time(value: object) -> str | None:
    """One spelling of a Salesforce dateTime, whatever API it came from (REST JSON or SOAP)."""
    moment = parse_datetime(value)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def case_event_id(case_id: str, closed_date: object) -> str | None:
    when = canonical_time(closed_date)
    return f"case:{case_id}:closed:{when}" if when else None


def _owner(record: dict[str, Any]) -> tuple[str | None, str | None]:
    owner = record.get("Owner")
    if isinstance(owner, dict):
        return owner.get("Email"), owner.get("Name")
    return None, None


def _record_url(settings: SalesforceSettings, instance_url: str | None, record_id: str) -> str | None:
    base = settings.instance_url or instance_url
    return f"{base}/lightning/r/{record_id}/view" if base else None


def case_event(
    record: dict[str, Any], settings: SalesforceSettings, instance_url: str | None = None
) -> CaseEvent | None:
    """The ``case.closed`` event of a Case, or None when it is not closed (or has no ClosedDate)."""
    case_id = str(record.get("Id") or "")
    closed = parse_datetime(record.get("ClosedDate"))
    event_id = case_event_id(case_id, record.get("ClosedDate"))
    if (
        not case_id
        or closed is None
        or event_id is None
        or str(record.get("IsClosed", "true")).lower() == "false"
    ):
        return None
    owner_email, owner_name = _owner(record)
    return CaseEvent(
        event_id=event_id,
        event_type="case.closed",
        occurred_at=closed,
        record_type="Case",
        record_id=case_id,
        person_id=record.get("ContactId") or None,
        owner_email=owner_email,
        owner_name=owner_name,
        record_url=_record_url(settings, instance_url, case_id),
        fields={k: record[k] for k in FILTER_FIELDS if record.get(k) is not None},
    )


def opportunity_event(
    record: dict[str, Any], settings: SalesforceSettings, instance_url: str | None = None
) -> CaseEvent | None:
    """The ``opportunity.won`` event of an Opportunity (one per opportunity), or None when not won.

    Its person is Opportunity.ContactId here; the connector replaces it with the primary contact role's
    contact when the opportunity has one (``primary_role_query``).
    """
    opp_id = str(record.get("Id") or "")
    if not opp_id or str(record.get("IsWon", "")).lower() != "true":
        return None
    when = parse_datetime(record.get("LastModifiedDate")) or parse_datetime(
        f"{record.get('CloseDate')}T00:00:00Z"
    )
    if when is None:
        return None
    owner_email, owner_name = _owner(record)
    return CaseEvent(
        event_id=f"opportunity:{opp_id}:won",
        event_type="opportunity.won",
        occurred_at=when,
        record_type="Opportunity",
        record_id=opp_id,
        person_id=record.get("ContactId") or None,
        owner_email=owner_email,
        owner_name=owner_name,
        record_url=_record_url(settings, instance_url, opp_id),
        fields={k: record[k] for k in FILTER_FIELDS if record.get(k) is not None},
    )


def primary_role_query(opportunity_ids: Sequence[str]) -> str:
    """The primary OpportunityContactRole of each opportunity (ids escaped; at most one per opportunity)."""
    return select(
        PRIMARY_ROLE_FIELDS,
        "OpportunityContactRole",
        f"IsPrimary = true AND OpportunityId IN {quote_list(opportunity_ids)}",
    )


def person_record(record: dict[str, Any], settings: SalesforceSettings) -> PersonRecord:
    """A Contact as the hub sees it; HasOptedOutOfEmail and DoNotCall become ``opted_out``."""
    reasons = [flag for flag in ("HasOptedOutOfEmail", "DoNotCall") if record.get(flag) is True]
    language_field = settings.person.language_field
    language = record.get(language_field) if language_field else None
    return PersonRecord(
        crm_id=str(record["Id"]),
        email=(record.get("Email") or None),
        phone=record.get("MobilePhone") or record.get("Phone") or None,
        first_name=record.get("FirstName"),
        last_name=record.get("LastName"),
        language=(str(language).lower()[:2] if language else settings.person.default_language),
        opted_out=bool(reasons),
        opt_out_reason=", ".join(reasons) or None,
    )
