"""The emulated org's schema and records: what describe reports and what queries and writes act on.

The schema is strict like an org's: unknown fields are INVALID_FIELD, read-only fields cannot be written,
lookups must point at existing records, external ids are matched exactly.
"""

from __future__ import annotations

import html
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hub_salesforce.package import custom_fields


@dataclass(frozen=True)
class FieldSpec:
    type: str = "string"
    createable: bool = True
    updateable: bool = True
    external_id: bool = False
    reference_to: str | None = None
    #: the most characters a text value may have, in UTF-16 code units as Salesforce counts (None: no limit)
    length: int | None = None
    #: the length is in bytes of the HTML-encoded UTF-8 text (CaseComment.CommentBody through the API)
    length_in_bytes: bool = False
    #: the values of a restricted picklist (empty: any value)
    picklist: tuple[str, ...] = ()
    label: str = ""


RO = FieldSpec(createable=False, updateable=False)
ID = FieldSpec(type="id", createable=False, updateable=False)


def _ref(target: str) -> FieldSpec:
    return FieldSpec(type="reference", reference_to=target)


#: metadata field types -> the ``type`` describe reports
_DESCRIBE_TYPES = {
    "Number": "double",
    "Text": "string",
    "LongTextArea": "textarea",
    "Picklist": "picklist",
    "DateTime": "datetime",
    "Lookup": "reference",
    "Checkbox": "boolean",
}


def _package_fields(sobject: str) -> dict[str, FieldSpec]:
    """The custom fields the CX Hub package defines on ``sobject``: an org where it was deployed."""
    return {
        name: FieldSpec(
            type=_DESCRIBE_TYPES[spec.type],
            external_id=spec.external_id,
            reference_to=spec.reference_to,
            length=spec.length,
            picklist=spec.picklist,
            label=spec.label,
        )
        for name, spec in custom_fields().get(sobject, {}).items()
    }


def _schema() -> dict[str, dict[str, FieldSpec]]:
    return {
        "User": {"Id": ID, "Name": RO, "Email": RO, "Username": RO},
        "Contact": {
            "Id": ID,
            "FirstName": FieldSpec(),
            "LastName": FieldSpec(),
            "Email": FieldSpec(type="email"),
            "MobilePhone": FieldSpec(type="phone"),
            "Phone": FieldSpec(type="phone"),
            "HasOptedOutOfEmail": FieldSpec(type="boolean"),
            "DoNotCall": FieldSpec(type="boolean"),
            "Language__c": FieldSpec(type="picklist"),
            "OwnerId": _ref("User"),
            "LastModifiedDate": FieldSpec(type="datetime", createable=False, updateable=False),
            **_package_fields("Contact"),
        },
        "Case": {
            "Id": ID,
            "CaseNumber": RO,
            "Subject": FieldSpec(),
            "Status": FieldSpec(type="picklist"),
            "Origin": FieldSpec(type="picklist"),
            "Priority": FieldSpec(type="picklist"),
            "Type": FieldSpec(type="picklist"),
            "IsClosed": FieldSpec(type="boolean", createable=False, updateable=False),
            "ClosedDate": FieldSpec(type="datetime", createable=False, updateable=False),
            "ContactId": _ref("Contact"),
            "OwnerId": _ref("User"),
            "LastModifiedDate": FieldSpec(type="datetime", createable=False, updateable=False),
            **_package_fields("Case"),
        },
        "Opportunity": {
            "Id": ID,
            "Name": FieldSpec(),
            "StageName": FieldSpec(type="picklist"),
            "Amount": FieldSpec(type="currency"),
            "IsWon": FieldSpec(type="boolean", createable=False, updateable=False),
            "CloseDate": FieldSpec(type="date"),
            "ContactId": _ref("Contact"),
            "OwnerId": _ref("User"),
            "LastModifiedDate": FieldSpec(type="datetime", createable=False, updateable=False),
        },
        "CaseComment": {
            "Id": ID,
            "ParentId": FieldSpec(type="reference", reference_to="Case", updateable=False),
            "CommentBody": FieldSpec(type="textarea", length=4000, length_in_bytes=True, label="Body"),
            "IsPublished": FieldSpec(type="boolean"),
        },
        # ParentId is polymorphic (a Case, a Contact, ...): the emulator checks it on create
        "FeedItem": {
            "Id": ID,
            "ParentId": FieldSpec(type="reference", updateable=False),
            "Body": FieldSpec(type="textarea", length=10000, length_in_bytes=True, label="Body"),
            "Type": FieldSpec(type="picklist", updateable=False),
            "CreatedDate": FieldSpec(type="datetime", createable=False, updateable=False),
        },
        "OpportunityContactRole": {
            "Id": ID,
            "OpportunityId": FieldSpec(type="reference", reference_to="Opportunity", updateable=False),
            "ContactId": _ref("Contact"),
            "IsPrimary": FieldSpec(type="boolean"),
            "Role": FieldSpec(type="picklist"),
        },
        "Survey_Response__c": {
            "Id": ID,
            "Name": RO,
            **_package_fields("Survey_Response__c"),
        },
    }


PREFIXES = {
    "User": "005",
    "Contact": "003",
    "Case": "500",
    "Opportunity": "006",
    "CaseComment": "00a",
    "Survey_Response__c": "a0X",
    "FeedItem": "0D5",
    "OpportunityContactRole": "00K",
}


def _measure(value: str, spec: FieldSpec) -> int:
    """A text's length as Salesforce checks it for this field."""
    if spec.length_in_bytes:
        return len(html.escape(value).encode("utf-8"))
    return len(value.encode("utf-16-le")) // 2


def now_text(moment: datetime | None = None) -> str:
    """A dateTime as the REST API writes it: ``2024-05-01T10:00:00.000+0000``."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


class RecordError(Exception):
    """One record refused: ``code`` and ``fields`` as the API reports them."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.fields = fields or []


@dataclass
class Org:
    """Records per object, keyed by 18-character id."""

    org_id: str = "00D5g000004CXHUBAA"
    schema: dict[str, dict[str, FieldSpec]] = field(default_factory=_schema)
    records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        for sobject in self.schema:
            self.records.setdefault(sobject, {})
        self.records.setdefault("FeedItem", {})

    def new_id(self, sobject: str) -> str:
        return f"{PREFIXES.get(sobject, 'a0Z')}5g{next(self._counter):010d}AAA"

    def find(self, record_id: str) -> tuple[str, dict[str, Any]] | None:
        for sobject, table in self.records.items():
            if record_id in table:
                return sobject, table[record_id]
        return None

    def check_fields(self, sobject: str, values: dict[str, Any], creating: bool) -> None:
        """INVALID_FIELD for unknown names, INVALID_FIELD_FOR_INSERT_UPDATE for read-only ones."""
        spec = self.schema[sobject]
        for name, value in values.items():
            if name not in spec:
                raise RecordError(
                    "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}", [name]
                )
            allowed = spec[name].createable if creating else spec[name].updateable
            if not allowed:
                raise RecordError(
                    "INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: {name}", [name]
                )
            self._check_value(spec[name], name, value)
            target = spec[name].reference_to
            if target and value is not None and str(value) not in self.records.get(target, {}):
                raise RecordError(
                    "FIELD_INTEGRITY_EXCEPTION", f"{name}: id value of incorrect type: {value}", [name]
                )

    @staticmethod
    def _check_value(spec: FieldSpec, name: str, value: Any) -> None:
        """STRING_TOO_LONG past the field's length; a restricted picklist takes only its own values."""
        label = spec.label or name
        if isinstance(value, str) and spec.length is not None and _measure(value, spec) > spec.length:
            raise RecordError(
                "STRING_TOO_LONG",
                f"{label}: data value too large: {value[:40]} (max length={spec.length})",
                [name],
            )
        if spec.picklist and value is not None and value not in spec.picklist:
            raise RecordError(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{label}: bad value for restricted picklist field: {value}",
                [name],
            )

    def create(self, sobject: str, values: dict[str, Any], system: bool = False) -> str:
        if not system:
            self.check_fields(sobject, values, creating=True)
        record_id = self.new_id(sobject)
        record: dict[str, Any] = dict.fromkeys(self.schema.get(sobject, {}))
        record.update(values, Id=record_id)
        if "LastModifiedDate" in record:
            record["LastModifiedDate"] = now_text()
        if sobject == "Case" and not record.get("CaseNumber"):
            record["CaseNumber"] = f"{len(self.records['Case']) + 1:08d}"
        if sobject == "Survey_Response__c":
            record["Name"] = f"SR-{len(self.records[sobject]) + 1:06d}"
        self.records[sobject][record_id] = record
        return record_id

    def update(self, sobject: str, record_id: str, values: dict[str, Any], system: bool = False) -> None:
        table = self.records[sobject]
        if record_id not in table:
            raise RecordError("ENTITY_IS_DELETED", "entity is deleted", [])
        if not system:
            self.check_fields(sobject, values, creating=False)
        table[record_id].update(values)
        if "LastModifiedDate" in table[record_id]:
            table[record_id]["LastModifiedDate"] = now_text()

    def by_external_id(self, sobject: str, field_name: str, value: str) -> list[str]:
        spec = self.schema[sobject].get(field_name)
        if spec is None or not (spec.external_id or field_name == "Id"):
            raise RecordError(
                "INVALID_FIELD", f"{field_name} is not an External ID or indexed field for {sobject}"
            )
        return [rid for rid, record in self.records[sobject].items() if record.get(field_name) == value]

    def resolve(self, record: dict[str, Any], path: str) -> Any:
        """``Owner.Email`` -> the Email of the record OwnerId points at (one level, like the subset needs)."""
        if "." not in path:
            return record.get(path)
        relation, name = path.split(".", 1)
        key = relation[:-3] + "__c" if relation.endswith("__r") else relation + "Id"
        found = self.find(str(record.get(key) or ""))
        return None if found is None else found[1].get(name)

    def describe(self, sobject: str) -> dict[str, Any]:
        return {
            "name": sobject,
            "custom": sobject.endswith("__c"),
            "createable": True,
            "updateable": True,
            "fields": [
                {
                    "name": name,
                    "type": spec.type,
                    "createable": spec.createable,
                    "updateable": spec.updateable,
                    "externalId": spec.external_id,
                    "referenceTo": [spec.reference_to] if spec.reference_to else [],
                    "label": spec.label or name,
                    "length": spec.length or 0,
                    "restrictedPicklist": bool(spec.picklist),
                    "picklistValues": [
                        {"value": value, "label": value, "active": True, "defaultValue": False}
                        for value in spec.picklist
                    ],
                }
                for name, spec in self.schema[sobject].items()
            ],
        }
