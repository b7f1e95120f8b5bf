"""Entities as the REST API shows them, and the changes it accepts (JSON Patch, merge patch, POST bodies).

A change is validated in full before any of it is applied, as SuperOffice saves an entity as a whole: one
unknown field in a PATCH and nothing of that PATCH is stored.
"""

from __future__ import annotations

import copy
from typing import Any

from hub_superoffice.emulation.store import (
    APPOINTMENT_TYPES,
    COMPLETED_STATES,
    COUNTRIES,
    LANGUAGES,
    TASKS,
    TICKET_STATUSES,
    ApiError,
    Store,
    parse_iso,
)

CUSTOM_BUCKETS = ("userdefinedfields", "extrafields", "customfields")

Operation = tuple[str, list[str], Any]


# --- reading --------------------------------------------------------------------------------------------------


def _associate(store: Store, associate_id: int | None) -> dict[str, Any] | None:
    associate = store.data.associates.get(associate_id or 0)
    return dict(associate) if associate else None


def _person_ref(store: Store, person_id: int | None) -> dict[str, Any] | None:
    person = store.data.persons.get(person_id or 0)
    if person is None:
        return None
    emails = person["Emails"]
    return {
        "PersonId": person["PersonId"],
        "Firstname": person["Firstname"],
        "Lastname": person["Lastname"],
        "FullName": f"{person['Firstname']} {person['Lastname']}",
        "Email": emails[0]["Value"] if emails else "",
        "ContactId": person.get("ContactId") or 0,
    }


def _contact_ref(store: Store, contact_id: int | None) -> dict[str, Any] | None:
    company = store.data.companies.get(contact_id or 0)
    return {"ContactId": company["ContactId"], "Name": company["Name"]} if company else None


def person_json(store: Store, person_id: int) -> dict[str, Any] | None:
    with store.lock:
        person = store.data.persons.get(person_id)
        if person is None:
            return None
        code = person["Country"]
        language_id = person.get("CustomerLanguageId")
        is_associate = any(a["PersonId"] == person_id for a in store.data.associates.values())
        return {
            "PersonId": person_id,
            "Firstname": person["Firstname"],
            "MiddleName": "",
            "Lastname": person["Lastname"],
            "FullName": f"{person['Firstname']} {person['Lastname']}",
            "Emails": copy.deepcopy(person["Emails"]),
            "MobilePhones": copy.deepcopy(person["MobilePhones"]),
            "OfficePhones": [],
            "PrivatePhones": [],
            "Contact": _contact_ref(store, person.get("ContactId")),
            "Country": {
                "CountryId": COUNTRIES[code][0],
                "Name": COUNTRIES[code][1],
                "TwoLetterISOCountry": code,
            },
            "CustomerLanguage": {"Id": language_id, "Value": LANGUAGES[language_id], "Tooltip": ""}
            if language_id
            else None,
            "NoMailing": person["NoMailing"],
            "Retired": person["Retired"],
            "IsAssociate": is_associate,
            "Consents": copy.deepcopy(person["Consents"]),
            "CreatedDate": store.clock.entity(person["CreatedDate"]),
            "UpdatedDate": store.clock.entity(person["UpdatedDate"]),
            **store.custom_values("person", person),
        }


def ticket_json(store: Store, ticket_id: int) -> dict[str, Any] | None:
    with store.lock:
        ticket = store.data.tickets.get(ticket_id)
        if ticket is None:
            return None
        name, base = TICKET_STATUSES[ticket["StatusId"]]
        messages = [m for m in store.data.messages.values() if m["TicketId"] == ticket_id]
        custom = store.custom_values("ticket", ticket)
        return {
            "TicketId": ticket_id,
            "Title": ticket["Title"],
            "CreatedAt": store.clock.entity(ticket["CreatedAt"]),
            "LastChanged": store.clock.entity(ticket["LastChanged"]),
            "ClosedAt": store.clock.entity(ticket["ClosedAt"]),
            "BaseStatus": base,
            "Status": {"TicketStatusId": ticket["StatusId"], "Name": name},
            "Person": _person_ref(store, ticket["PersonId"]),
            "OwnedBy": _associate(store, ticket["OwnerId"]),
            "Category": {"Name": ticket["Category"], "Fullname": ticket["Category"]},
            "Priority": {"Name": ticket["Priority"]},
            "Origin": ticket["Origin"],
            "Slevel": "External",
            "NumMessages": len(messages),
            "Messages": [
                {
                    "TicketMessageId": m["TicketMessageId"],
                    "CreatedAt": store.clock.entity(m["CreatedAt"]),
                    "Slevel": m["Slevel"],
                }
                for m in messages
            ],
            "Tags": [],
            "ExtraFields": custom["ExtraFields"],
            "CustomFields": custom["CustomFields"],
        }


def sale_json(store: Store, sale_id: int) -> dict[str, Any] | None:
    with store.lock:
        sale = store.data.sales.get(sale_id)
        if sale is None:
            return None
        return {
            "SaleId": sale_id,
            "Heading": sale["Heading"],
            "Status": sale["Status"],
            "Saledate": store.clock.entity(sale["Saledate"]),
            "Amount": sale["Amount"],
            "Currency": {"Value": "DKK"},
            "Person": _person_ref(store, sale["PersonId"]),
            "Contact": _contact_ref(store, sale.get("ContactId")),
            "Associate": _associate(store, sale["OwnerId"]),
            "CreatedDate": store.clock.entity(sale["CreatedDate"]),
            "UpdatedDate": store.clock.entity(sale["UpdatedDate"]),
            **store.custom_values("sale", sale),
        }


def appointment_json(store: Store, appointment_id: int) -> dict[str, Any] | None:
    with store.lock:
        appointment = store.data.appointments.get(appointment_id)
        if appointment is None:
            return None
        task_id = appointment.get("TaskId")
        return {
            "AppointmentId": appointment_id,
            "Person": _person_ref(store, appointment["PersonId"]),
            "Contact": _contact_ref(store, appointment.get("ContactId")),
            "Associate": _associate(store, appointment.get("AssociateId")),
            "Task": {"TaskListItemId": task_id, "Value": TASKS[task_id]} if task_id else None,
            "StartDate": store.clock.entity(appointment["StartDate"]),
            "EndDate": store.clock.entity(appointment["EndDate"]),
            "Type": appointment["Type"],
            "Completed": appointment["Completed"],
            "Description": appointment["Description"],
            "Title": appointment.get("Title", ""),
            **store.custom_values("appointment", appointment),
        }


def message_json(store: Store, message_id: int) -> dict[str, Any] | None:
    with store.lock:
        message = store.data.messages.get(message_id)
        if message is None:
            return None
        return {
            "EjMessageId": message_id,
            "Ticket": {"TicketId": message["TicketId"]},
            "CreatedAt": store.clock.entity(message["CreatedAt"]),
            "Author": message["Author"],
            "Slevel": message["Slevel"],
            "Type": message["Type"],
            "Body": message["Body"],
            "HtmlBody": message["HtmlBody"],
            "MessageId": message["MessageId"],
            "Important": message["Important"],
        }


# --- changing ---------------------------------------------------------------------------------------------------


def operations(body: Any) -> list[Operation]:
    """A JSON Patch array or a merge-patch object as (op, path parts, value); paths are case-insensitive."""
    result: list[Operation] = []
    if isinstance(body, list):
        for entry in body:
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                raise ApiError(400, "A JSON Patch operation needs an op and a path")
            op = str(entry.get("op", "")).lower()
            if op not in ("add", "replace", "remove", "test"):
                raise ApiError(400, f"JSON Patch operation '{op}' is not supported")
            parts = [part for part in entry["path"].strip("/").split("/") if part]
            result.append((op, parts, entry.get("value")))
        return result
    if isinstance(body, dict):
        for key, value in body.items():
            if key.lower() in CUSTOM_BUCKETS and isinstance(value, dict):
                result += [("replace", [key, name], item) for name, item in value.items()]
            else:
                result.append(("replace", [key], value))
        return result
    raise ApiError(400, "The body must be a JSON Patch array or a JSON merge-patch object")


def _is_custom(op: Operation) -> bool:
    return len(op[1]) == 2 and op[1][0].lower() in CUSTOM_BUCKETS


def _custom_op(store: Store, entity: str, record: dict[str, Any], op: Operation) -> str | None:
    """Apply a custom-field operation to ``record``: the field's name, or None for a passed ``test``."""
    kind, parts, value = op
    if entity == "ticket" and parts[0].lower() == "userdefinedfields":
        raise ApiError(400, "Unknown property 'UserDefinedFields' on Ticket")
    bucket = parts[0].lower()
    if kind == "test":
        definition = store.field(entity, parts[1], bucket)
        target = "ExtraFields" if definition.name.lower().startswith("x_") else "UserDefinedFields"
        if record.get(target, {}).get(definition.name, "") != definition.normalise(value):
            raise ApiError(409, f"Test of {definition.name} failed", "ConflictException")
        return None
    return store.set_custom(entity, record, bucket, parts[1], "" if kind == "remove" else value)


def patch_person(store: Store, person_id: int, body: Any) -> list[str]:
    """Apply a PATCH to a person; returns the changed field names (for the webhook's Changes)."""
    ops = operations(body)
    with store.lock:
        person = store.data.persons.get(person_id)
        if person is None:
            raise ApiError(404, f"Person {person_id} does not exist", "NotFound")
        draft = copy.deepcopy(person)
        changes: list[str] = []
        for op in ops:
            if _is_custom(op):
                name = _custom_op(store, "person", draft, op)
                if name is not None:
                    changes.append(name.lower())
                continue
            if op[0] == "test" or len(op[1]) != 1:
                raise ApiError(400, f"Unknown property '{'/'.join(op[1])}' on Person")
            changes.append(_person_property(draft, op[1][0], op[2]))
        draft["UpdatedDate"] = store.clock.now()
        store.data.persons[person_id] = draft
        return changes


def _person_property(person: dict[str, Any], name: str, value: Any) -> str:
    key = name.lower()
    if key in ("firstname", "lastname"):
        if not isinstance(value, str):
            raise ApiError(400, f"{name} must be text")
        person["Firstname" if key == "firstname" else "Lastname"] = value
        return key
    if key in ("nomailing", "retired"):
        if not isinstance(value, bool):
            raise ApiError(400, f"{name} must be true or false")
        person["NoMailing" if key == "nomailing" else "Retired"] = value
        return key
    raise ApiError(400, f"Unknown property '{name}' on Person")


def patch_ticket(store: Store, ticket_id: int, body: Any) -> None:
    ops = operations(body)
    with store.lock:
        ticket = store.data.tickets.get(ticket_id)
        if ticket is None:
            raise ApiError(404, f"Ticket {ticket_id} does not exist", "NotFound")
        draft = copy.deepcopy(ticket)
        new_status: int | None = None
        for op in ops:
            if _is_custom(op):
                _custom_op(store, "ticket", draft, op)
                continue
            path = "/".join(op[1]).lower()
            if path == "title" and isinstance(op[2], str):
                draft["Title"] = op[2]
            elif path == "status/ticketstatusid":
                new_status = _status_id(op[2])
            elif path == "status" and isinstance(op[2], dict):
                new_status = _status_id(op[2].get("TicketStatusId"))
            else:
                raise ApiError(400, f"Unknown property '{'/'.join(op[1])}' on Ticket")
        store.data.tickets[ticket_id] = draft
        if new_status is not None and new_status != draft["StatusId"]:
            store.set_ticket_status(ticket_id, new_status)
        draft["LastChanged"] = store.clock.now()


def _status_id(value: Any) -> int:
    if not isinstance(value, int) or value not in TICKET_STATUSES:
        raise ApiError(400, f"Unknown TicketStatusId {value!r}")
    return value


def _custom_members(store: Store, entity: str, record: dict[str, Any], body: dict[str, Any]) -> None:
    for key, value in body.items():
        if key.lower() in CUSTOM_BUCKETS:
            if not isinstance(value, dict):
                raise ApiError(400, f"{key} must be an object")
            for name, item in value.items():
                store.set_custom(entity, record, key.lower(), name, item)


def _ref_id(body: dict[str, Any], member: str, id_key: str) -> int | None:
    ref = body.get(member)
    if ref is None:
        return None
    if not isinstance(ref, dict) or not isinstance(ref.get(id_key), int):
        raise ApiError(400, f"{member}.{id_key} must be a number")
    return int(ref[id_key])


def create_appointment(store: Store, body: Any) -> int:
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be an AppointmentEntity")
    with store.lock:
        person_id = _ref_id(body, "Person", "PersonId")
        person = store.data.persons.get(person_id or 0)
        if person_id is not None and person is None:
            raise ApiError(400, f"Person {person_id} does not exist")
        task_id = _ref_id(body, "Task", "TaskListItemId")
        if task_id is not None and task_id not in TASKS:
            raise ApiError(400, f"Unknown TaskListItemId {task_id}")
        associate_id = _ref_id(body, "Associate", "AssociateId")
        if associate_id is not None and associate_id not in store.data.associates:
            raise ApiError(400, f"Associate {associate_id} does not exist")
        kind = body.get("Type", "InDiary")
        if kind not in APPOINTMENT_TYPES:
            raise ApiError(400, f"Unknown appointment Type {kind!r}")
        completed = body.get("Completed", "NotStarted")
        if completed not in COMPLETED_STATES:
            raise ApiError(400, f"Unknown Completed state {completed!r}")
        try:
            start = parse_iso(str(body["StartDate"])) if body.get("StartDate") else store.clock.now()
            end = parse_iso(str(body["EndDate"])) if body.get("EndDate") else start
        except ValueError:
            raise ApiError(400, "StartDate/EndDate must be ISO 8601 date-times") from None
        record: dict[str, Any] = {
            "PersonId": person_id,
            "ContactId": person.get("ContactId") if person else None,
            "TaskId": task_id or 3,
            "AssociateId": associate_id or 1,
            "StartDate": start,
            "EndDate": end,
            "Type": kind,
            "Completed": completed,
            "Description": str(body.get("Description") or ""),
            "Title": str(body.get("Title") or ""),
            "UserDefinedFields": {},
            "ExtraFields": {},
        }
        _custom_members(store, "appointment", record, body)
        appointment_id = store.new_id("appointment")
        record["AppointmentId"] = appointment_id
        store.data.appointments[appointment_id] = record
        return appointment_id


def patch_appointment(store: Store, appointment_id: int, body: Any) -> None:
    ops = operations(body)
    with store.lock:
        appointment = store.data.appointments.get(appointment_id)
        if appointment is None:
            raise ApiError(404, f"Appointment {appointment_id} does not exist", "NotFound")
        draft = copy.deepcopy(appointment)
        for op in ops:
            if _is_custom(op):
                _custom_op(store, "appointment", draft, op)
            elif len(op[1]) == 1 and op[1][0].lower() in ("description", "title") and isinstance(op[2], str):
                draft["Description" if op[1][0].lower() == "description" else "Title"] = op[2]
            else:
                raise ApiError(400, f"Unknown property '{'/'.join(op[1])}' on Appointment")
        store.data.appointments[appointment_id] = draft


def patch_message(store: Store, message_id: int, body: Any) -> int:
    """Change the text of a ticket message; returns its ticket's id."""
    ops = operations(body)
    with store.lock:
        message = store.data.messages.get(message_id)
        if message is None:
            raise ApiError(404, f"TicketMessage {message_id} does not exist", "NotFound")
        draft = dict(message)
        for kind, parts, value in ops:
            name = "/".join(parts).lower()
            if kind != "test" and name in ("body", "htmlbody") and isinstance(value, str):
                draft["Body" if name == "body" else "HtmlBody"] = value
            elif kind != "test" and name == "important" and isinstance(value, bool):
                draft["Important"] = value
            else:
                raise ApiError(400, f"Unknown property '{'/'.join(parts)}' on TicketMessage")
        store.data.messages[message_id] = draft
        return int(draft["TicketId"])


def create_message(store: Store, body: Any, notify: bool) -> int:
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a TicketMessageEntity")
    with store.lock:
        ticket_id = _ref_id(body, "Ticket", "TicketId")
        if ticket_id is None or ticket_id not in store.data.tickets:
            raise ApiError(400, f"Ticket {ticket_id} does not exist")
        slevel = body.get("Slevel")
        if slevel not in ("Internal", "External"):
            raise ApiError(400, "Slevel must be Internal or External")
        if not (body.get("Body") or body.get("HtmlBody")):
            raise ApiError(400, "A ticket message needs a Body or HtmlBody")
        message_id = store.new_id("message")
        store.data.messages[message_id] = {
            "TicketMessageId": message_id,
            "TicketId": ticket_id,
            "CreatedAt": store.clock.now(),
            "Author": str(body.get("Author") or "API"),
            "Slevel": slevel,
            "Type": str(body.get("Type") or "Plain"),
            "Body": str(body.get("Body") or ""),
            "HtmlBody": str(body.get("HtmlBody") or ""),
            "MessageId": str(body.get("MessageId") or ""),
            "Important": bool(body.get("Important", False)),
            "Notified": notify,
        }
        store.data.tickets[ticket_id]["LastChanged"] = store.clock.now()
        return message_id


def _row_values(store: Store, table: str, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be an object of column values")
    columns = store.table_columns.get(table)
    if columns is None:
        raise ApiError(400, f"Unknown table '{table}'", "UnknownTableException")
    row: dict[str, Any] = {}
    for name, value in body.items():
        definition = columns.get(name.lower())
        if definition is None:
            raise ApiError(400, f"Unknown field '{name}' in table {table}", "UnknownFieldException")
        row[definition.name] = definition.normalise(value)
    return row


def insert_row(store: Store, table: str, body: Any) -> int:
    with store.lock:
        row = _row_values(store, table, body)
        row_id = store.new_id(table)
        row["id"] = row_id
        store.data.extra[table][row_id] = row
        return row_id


def update_row(store: Store, table: str, row_id: int, body: Any) -> None:
    """PUT semantics of the TableRecord endpoint: the given columns are replaced, the others kept."""
    with store.lock:
        values = _row_values(store, table, body)
        row = store.data.extra[table].get(row_id)
        if row is None:
            raise ApiError(404, f"{table} row {row_id} does not exist", "NotFound")
        row.update(values)
