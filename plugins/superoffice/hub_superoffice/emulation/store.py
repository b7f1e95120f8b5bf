"""The emulated tenant: companies, persons, associates, tickets, sales, activities, extra tables.

Records are kept in the shape SuperOffice's REST API returns (``PersonId``, ``Emails: [{"Value"}]``,
``BaseStatus``, ...) and every change goes through the same validation the real service applies to the
parts CX Hub uses: a custom field that does not exist, a value of the wrong type, a record that does not
exist are refused with a JSON error body rather than stored. The store is thread-safe: the API runs in the
server's thread while tests and the demo change records from theirs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

FIELD_TYPES = ("string", "text", "int", "decimal", "date", "datetime", "bool")
ENTITIES = ("person", "ticket", "appointment", "sale")

#: TicketStatusId -> (name, base status)
TICKET_STATUSES: dict[int, tuple[str, str]] = {
    1: ("Open", "Active"),
    2: ("Closed", "Closed"),
    3: ("Postponed", "Postponed"),
    4: ("Deleted", "Deleted"),
    5: ("Merged", "Merged"),
    6: ("Waiting for customer", "Active"),
}
SALE_STATUSES = ("Open", "Sold", "Lost", "Stalled")
APPOINTMENT_TYPES = (
    "InDiary",
    "InChecklist",
    "Note",
    "BookingForDiary",
    "BookingForChecklist",
    "Document",
    "Email",
)
COMPLETED_STATES = ("NotStarted", "Started", "Completed")
TASKS: dict[int, str] = {1: "Phone", 2: "Meeting", 3: "Follow-up", 4: "Customer feedback"}
COUNTRIES: dict[str, tuple[int, str]] = {
    "DK": (45, "Denmark"),
    "NO": (47, "Norway"),
    "SE": (46, "Sweden"),
    "GB": (44, "United Kingdom"),
    "US": (1, "United States"),
}
LANGUAGES: dict[int, str] = {1: "English", 2: "Dansk", 3: "Norsk", 4: "Svenska", 5: "Deutsch"}
NO_DATE = "0001-01-01T00:00:00"


class ApiError(Exception):
    """A refusal, answered as ``{"Error": message, "ErrorType": kind}`` with ``status``."""

    def __init__(self, status: int, message: str, kind: str = "ValidationError") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind

    def body(self) -> dict[str, str]:
        return {"Error": self.message, "ErrorType": self.kind, "ErrorSource": "SuperOffice WebAPI emulator"}


@dataclass(frozen=True)
class FieldDef:
    """A user-defined field (by ProgId) or an extra field (``x_...``) / extra-table column."""

    name: str
    type: str = "string"
    label: str = ""
    max_length: int = 254

    def normalise(self, value: Any) -> str:
        """The stored text of ``value``; ``ApiError(400)`` when it does not fit the field's type."""
        if value is None or value == "":
            return ""
        try:
            return _NORMALISERS[self.type](value, self)
        except (TypeError, ValueError):
            raise ApiError(400, f"Value {value!r} is not valid for {self.name} ({self.type})") from None


def _as_string(value: Any, field_def: FieldDef) -> str:
    if not isinstance(value, str | int | float):
        raise TypeError("not text")
    text = str(value)
    if field_def.type == "string" and len(text) > field_def.max_length:
        raise ValueError("too long")
    return text


def _as_int(value: Any, _: FieldDef) -> str:
    if isinstance(value, bool):
        raise TypeError("bool")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("fraction")
    return str(int(str(value).strip()) if isinstance(value, str) else int(value))


def _as_decimal(value: Any, _: FieldDef) -> str:
    if isinstance(value, bool):
        raise TypeError("bool")
    if isinstance(value, str) and "," in value:
        raise ValueError("not invariant culture")
    return repr(float(value))


def _as_datetime(value: Any, field_def: FieldDef) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    moment = parse_iso(value)
    return moment.date().isoformat() if field_def.type == "date" else moment.isoformat()


def _as_bool(value: Any, _: FieldDef) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return "True"
    if text in ("false", "0"):
        return "False"
    raise ValueError("not a boolean")


_NORMALISERS: dict[str, Callable[[Any, FieldDef], str]] = {
    "string": _as_string,
    "text": _as_string,
    "int": _as_int,
    "decimal": _as_decimal,
    "date": _as_datetime,
    "datetime": _as_datetime,
    "bool": _as_bool,
}


def parse_iso(value: str) -> datetime:
    """An ISO 8601 timestamp (``Z`` allowed, naive = UTC) as aware UTC; ValueError otherwise."""
    moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


@dataclass
class Clock:
    """Now, and how the tenant writes dates: entities with an offset and 7 decimals, archives naive local."""

    zone: tzinfo = field(default_factory=lambda: ZoneInfo("Europe/Oslo"))

    def now(self) -> datetime:
        return datetime.now(UTC)

    def entity(self, moment: datetime | None) -> str:
        if moment is None:
            return NO_DATE
        local = moment.astimezone(self.zone)
        offset = local.strftime("%z")
        return f"{local:%Y-%m-%dT%H:%M:%S}.{local.microsecond:06d}0{offset[:3]}:{offset[3:]}"

    def archive(self, moment: datetime | None) -> str:
        return "" if moment is None else moment.astimezone(self.zone).strftime("%Y-%m-%dT%H:%M:%S")

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.zone)


@dataclass
class Tables:
    """Every record of the tenant, by id (plain dicts in the REST shape, dates as aware datetimes)."""

    companies: dict[int, dict[str, Any]] = field(default_factory=dict)
    persons: dict[int, dict[str, Any]] = field(default_factory=dict)
    associates: dict[int, dict[str, Any]] = field(default_factory=dict)
    tickets: dict[int, dict[str, Any]] = field(default_factory=dict)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    sales: dict[int, dict[str, Any]] = field(default_factory=dict)
    appointments: dict[int, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)


class Store:
    """The tenant and its rules. ``on_change(event, entity, id, changes)`` feeds webhooks."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.lock = threading.RLock()
        self.clock = clock or Clock()
        self.data = Tables()
        self.fields: dict[str, dict[str, FieldDef]] = {entity: {} for entity in ENTITIES}
        self.table_columns: dict[str, dict[str, FieldDef]] = {}
        self._next: dict[str, int] = {}
        self.on_change: Callable[[str, str, int, list[str]], None] = lambda *_: None

    def new_id(self, kind: str) -> int:
        self._next[kind] = self._next.get(kind, 0) + 1
        return self._next[kind]

    # -- schema

    def define_field(self, entity: str, name: str, type_: str = "string", label: str = "") -> None:
        """Add a custom field: a ProgId (user-defined) or ``x_...`` (extra field) on an entity."""
        if entity not in ENTITIES or type_ not in FIELD_TYPES:
            raise ValueError(f"unknown entity {entity!r} or field type {type_!r}")
        with self.lock:
            self.fields[entity][name.lower()] = FieldDef(name=name, type=type_, label=label or name)

    def define_table(self, table: str, columns: dict[str, str]) -> None:
        """Add an extra table ``y_...`` with ``x_...`` columns (plus its ``id``)."""
        if not table.startswith("y_") or not all(column.startswith("x_") for column in columns):
            raise ValueError("extra tables are named y_..., their columns x_...")
        with self.lock:
            self.table_columns[table] = {
                name.lower(): FieldDef(name=name, type=type_, label=name) for name, type_ in columns.items()
            }
            self.data.extra.setdefault(table, {})

    def field(self, entity: str, name: str, bucket: str) -> FieldDef:
        """The definition of ``name`` in ``bucket`` (UserDefinedFields/ExtraFields/CustomFields)."""
        found = self.fields[entity].get(name.lower())
        is_extra = name.lower().startswith("x_")
        if (
            found is None
            or (bucket == "userdefinedfields" and is_extra)
            or (bucket == "extrafields" and not is_extra)
        ):
            raise ApiError(400, f"Unknown field '{name}' on {entity.capitalize()}", "UnknownFieldException")
        return found

    def set_custom(self, entity: str, record: dict[str, Any], bucket: str, name: str, value: Any) -> str:
        """Validate and store one custom field value; returns the field's canonical name."""
        definition = self.field(entity, name, bucket.lower())
        target = "ExtraFields" if definition.name.lower().startswith("x_") else "UserDefinedFields"
        record.setdefault(target, {})[definition.name] = definition.normalise(value)
        return definition.name

    def custom_values(self, entity: str, record: dict[str, Any]) -> dict[str, dict[str, str]]:
        """UserDefinedFields, ExtraFields and CustomFields as GET shows them: every field, set or not."""
        udef = {
            d.name: record.get("UserDefinedFields", {}).get(d.name, "") for d in self._defs(entity, False)
        }
        extra = {d.name: record.get("ExtraFields", {}).get(d.name, "") for d in self._defs(entity, True)}
        return {"UserDefinedFields": udef, "ExtraFields": extra, "CustomFields": udef | extra}

    def _defs(self, entity: str, extra: bool) -> list[FieldDef]:
        return [d for d in self.fields[entity].values() if d.name.lower().startswith("x_") == extra]

    # -- records created by tests and the demo

    def add_company(self, name: str, country: str = "DK") -> int:
        with self.lock:
            company_id = self.new_id("contact")
            self.data.companies[company_id] = {"ContactId": company_id, "Name": name, "Country": country}
            return company_id

    def add_person(
        self,
        first_name: str,
        last_name: str,
        *,
        email: str | None = None,
        mobile: str | None = None,
        company_id: int | None = None,
        country: str = "DK",
        language: str | None = None,
        no_mailing: bool = False,
        retired: bool = False,
        consents: list[dict[str, Any]] | None = None,
    ) -> int:
        if country not in COUNTRIES:
            raise ValueError(f"unknown country {country}")
        with self.lock:
            if company_id is not None and company_id not in self.data.companies:
                raise ValueError(f"no company {company_id}")
            person_id = self.new_id("person")
            now = self.clock.now()
            language_id = next((i for i, n in LANGUAGES.items() if n == language), None)
            self.data.persons[person_id] = {
                "PersonId": person_id,
                "Firstname": first_name,
                "Lastname": last_name,
                "Emails": [_phone_or_mail(email)] if email else [],
                "MobilePhones": [_phone_or_mail(mobile)] if mobile else [],
                "ContactId": company_id,
                "Country": country,
                "CustomerLanguageId": language_id,
                "NoMailing": no_mailing,
                "Retired": retired,
                "Consents": list(consents or []),
                "UserDefinedFields": {},
                "ExtraFields": {},
                "CreatedDate": now,
                "UpdatedDate": now,
            }
            return person_id

    def add_associate(self, first_name: str, last_name: str, email: str) -> int:
        with self.lock:
            person_id = self.add_person(first_name, last_name, email=email)
            associate_id = self.new_id("associate")
            self.data.associates[associate_id] = {
                "AssociateId": associate_id,
                "Name": (first_name[:1] + last_name[:3]).upper(),
                "FullName": f"{first_name} {last_name}",
                "PersonId": person_id,
            }
            return associate_id

    def add_ticket(
        self,
        title: str,
        person_id: int,
        *,
        owner_id: int | None = None,
        category: str = "Support",
        priority: str = "Medium",
    ) -> int:
        with self.lock:
            self._require(self.data.persons, person_id, "Person")
            if owner_id is not None:
                self._require(self.data.associates, owner_id, "Associate")
            ticket_id = self.new_id("ticket")
            now = self.clock.now()
            self.data.tickets[ticket_id] = {
                "TicketId": ticket_id,
                "Title": title,
                "CreatedAt": now,
                "LastChanged": now,
                "ClosedAt": None,
                "StatusId": 1,
                "PersonId": person_id,
                "OwnerId": owner_id,
                "Category": category,
                "Priority": priority,
                "Origin": "Email",
                "ExtraFields": {},
            }
            return ticket_id

    def set_ticket_status(self, ticket_id: int, status_id: int, at: datetime | None = None) -> None:
        """Change a ticket's status; moving to a Closed status stamps ClosedAt."""
        if status_id not in TICKET_STATUSES:
            raise ApiError(400, f"Unknown TicketStatusId {status_id}")
        with self.lock:
            ticket = self._require(self.data.tickets, ticket_id, "Ticket")
            now = at or self.clock.now()
            was_closed = TICKET_STATUSES[ticket["StatusId"]][1] == "Closed"
            ticket["StatusId"] = status_id
            if TICKET_STATUSES[status_id][1] == "Closed" and not was_closed:
                ticket["ClosedAt"] = now
            ticket["LastChanged"] = now

    def add_sale(
        self, heading: str, person_id: int, *, owner_id: int | None = None, amount: float = 0.0
    ) -> int:
        with self.lock:
            person = self._require(self.data.persons, person_id, "Person")
            sale_id = self.new_id("sale")
            now = self.clock.now()
            self.data.sales[sale_id] = {
                "SaleId": sale_id,
                "Heading": heading,
                "Status": "Open",
                "Saledate": now,
                "Amount": amount,
                "PersonId": person_id,
                "ContactId": person.get("ContactId"),
                "OwnerId": owner_id,
                "CreatedDate": now,
                "UpdatedDate": now,
                "UserDefinedFields": {},
                "ExtraFields": {},
            }
            return sale_id

    def set_sale_status(self, sale_id: int, status: str, at: datetime | None = None) -> None:
        if status not in SALE_STATUSES:
            raise ValueError(f"unknown sale status {status}")
        with self.lock:
            sale = self._require(self.data.sales, sale_id, "Sale")
            now = at or self.clock.now()
            sale["Status"] = status
            sale["Saledate"] = now
            sale["UpdatedDate"] = now

    def _require(self, table: dict[int, dict[str, Any]], record_id: int, kind: str) -> dict[str, Any]:
        record = table.get(record_id)
        if record is None:
            raise ApiError(404, f"{kind} {record_id} does not exist", "NotFound")
        return record


def _phone_or_mail(value: str) -> dict[str, str]:
    stripped = "".join(ch for ch in value if ch.isdigit() or ch == "+") if "@" not in value else value.lower()
    return {"Value": value, "StrippedValue": stripped, "Description": ""}
