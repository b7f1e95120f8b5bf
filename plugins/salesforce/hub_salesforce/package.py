"""The CX Hub metadata package for Salesforce: what an admin deploys so the connector's defaults just work.

The package is Salesforce DX source (``sfdx/``, shipped inside this distribution): the ``Survey_Response__c``
object, the CX Hub fields on Contact and Case, and two permission sets (``CXHub_Integration`` for the user the
hub logs in as, ``CXHub_Viewer`` for the people who read the feedback). It is deployed with the Salesforce CLI
(``sf project deploy start``), step by step in the plugin's README.

This module reads the package, so that the emulator's schema *is* the package (a field the package lacks is a
field the emulator lacks, with the same length and picklist values) and the tests can prove that every field
the defaults map is in it. ``python -m hub_salesforce.package DIR`` copies the package out of an installed hub,
for admins who installed from a wheel rather than from the source tree.
"""

from __future__ import annotations

import shutil
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

#: the root of the Salesforce DX project (holds sfdx-project.json)
SOURCE = Path(__file__).parent / "sfdx"
_DEFAULT = SOURCE / "force-app" / "main" / "default"
_NS = {"md": "http://soap.sforce.com/2006/04/metadata"}


@dataclass(frozen=True)
class PackageField:
    """One custom field as the package defines it."""

    sobject: str
    name: str
    label: str
    type: str  # the metadata type: Number, Text, LongTextArea, Picklist, DateTime, Lookup
    length: int | None = None
    picklist: tuple[str, ...] = ()
    external_id: bool = False
    unique: bool = False
    reference_to: str | None = None


def _text(node: ET.Element, tag: str) -> str | None:
    found = node.find(f"md:{tag}", _NS)
    return found.text if found is not None else None


def _parse(path: Path) -> ET.Element:
    return ET.parse(path).getroot()  # noqa: S314 - our own packaged file, not input from outside


def custom_fields() -> dict[str, dict[str, PackageField]]:
    """Object name -> field name -> its definition, for every custom field in the package."""
    fields: dict[str, dict[str, PackageField]] = {}
    for path in sorted(_DEFAULT.glob("objects/*/fields/*.field-meta.xml")):
        sobject = path.parent.parent.name
        root = _parse(path)
        length = _text(root, "length")
        values = root.findall("md:valueSet/md:valueSetDefinition/md:value/md:fullName", _NS)
        field = PackageField(
            sobject=sobject,
            name=_text(root, "fullName") or path.name.split(".")[0],
            label=_text(root, "label") or "",
            type=_text(root, "type") or "",
            length=int(length) if length else None,
            picklist=tuple(value.text or "" for value in values),
            external_id=_text(root, "externalId") == "true",
            unique=_text(root, "unique") == "true",
            reference_to=_text(root, "referenceTo"),
        )
        fields.setdefault(sobject, {})[field.name] = field
    return fields


def custom_objects() -> dict[str, dict[str, str]]:
    """Custom object name -> a few of its settings (label, name field type and format, sharing model)."""
    objects: dict[str, dict[str, str]] = {}
    for path in sorted(_DEFAULT.glob("objects/*/*.object-meta.xml")):
        root = _parse(path)
        name_field = root.find("md:nameField", _NS)
        objects[path.parent.name] = {
            "label": _text(root, "label") or "",
            "name_type": (_text(name_field, "type") if name_field is not None else None) or "",
            "name_format": (_text(name_field, "displayFormat") if name_field is not None else None) or "",
            "sharing_model": _text(root, "sharingModel") or "",
        }
    return objects


def permission_set(name: str) -> dict[str, tuple[bool, bool]]:
    """``Object.Field`` -> (readable, editable) as the named permission set grants it."""
    root = _parse(_DEFAULT / "permissionsets" / f"{name}.permissionset-meta.xml")
    return {
        _text(grant, "field") or "": (_text(grant, "readable") == "true", _text(grant, "editable") == "true")
        for grant in root.findall("md:fieldPermissions", _NS)
    }


def object_permissions(name: str) -> dict[str, dict[str, bool]]:
    """Object -> its permissions (allowRead, allowCreate, allowEdit, viewAllRecords, ...) in the set."""
    root = _parse(_DEFAULT / "permissionsets" / f"{name}.permissionset-meta.xml")
    return {
        _text(grant, "object") or "": {
            child.tag.split("}")[1]: child.text == "true"
            for child in grant
            if child.tag.split("}")[1] != "object"
        }
        for grant in root.findall("md:objectPermissions", _NS)
    }


def export(destination: Path) -> Path:
    """Copy the package (a complete Salesforce DX project) to ``destination``, which must not exist yet."""
    shutil.copytree(SOURCE, destination)
    return destination


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(
            "usage: python -m hub_salesforce.package DIRECTORY   (copies the CX Hub Salesforce package there)"
        )
        return 2
    target = Path(args[0])
    if target.exists():
        print(f"{target} exists already; name a new directory")
        return 1
    export(target)
    print(
        f"the package is in {target}; deploy it with: cd {target} && sf project deploy start --target-org <alias>"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
