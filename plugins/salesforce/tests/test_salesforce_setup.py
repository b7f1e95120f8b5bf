"""Admin setup: the metadata package holds what the defaults map, and ``cxhub check`` finds what an org lacks.

The emulator's schema is read from the package, so an org "with the package deployed" is the emulator as
it starts; the tests then take fields away or lock them, as an admin's org might.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hub_salesforce import package
from hub_salesforce.config import SalesforceSettings
from hub_salesforce.connector import SalesforceConnector
from hub_salesforce.emulation.org import RecordError
from hub_salesforce.emulator import SalesforceEmulator, TlsServer
from hub_salesforce.setup_check import budget_line, needs
from pydantic import SecretStr, ValidationError
from salesforce_support import make_connector, make_settings

DEFAULTS = SalesforceSettings.model_validate(
    {"auth": {"type": "client_credentials", "client_id": "x", "client_secret": SecretStr("not-used")}}
)


def by_name(results: list) -> dict[str, object]:
    return {result.name: result for result in results}


def test_the_package_holds_every_field_the_defaults_write_with_a_type_that_takes_the_value() -> None:
    fields = package.custom_fields()
    written = [need for need in needs(DEFAULTS) if need.access != "read"]
    custom = [need for need in written if need.field.endswith("__c")]
    assert {need.sobject for need in custom} == {"Contact", "Case", "Survey_Response__c"}
    for need in custom:
        assert need.field in fields[need.sobject], (
            f"{need.sobject}.{need.field} ({need.key}) is not in the package"
        )
    types = {(sobject, name): spec.type for sobject, specs in fields.items() for name, spec in specs.items()}
    assert types[("Contact", "CXHub_Latest_Rating__c")] == "Number"
    assert types[("Contact", "CXHub_Latest_Response_Date__c")] == "DateTime"
    assert types[("Survey_Response__c", "Answered_At__c")] == "DateTime"
    # every value the hub can write fits: categories and survey kinds are the picklists' values
    assert fields["Contact"]["CXHub_Latest_Category__c"].picklist == ("promoter", "passive", "detractor")
    assert fields["Survey_Response__c"]["Survey_Kind__c"].picklist == ("nps", "csat", "ces", "smiley")
    for sobject, name in [("Contact", "CXHub_Latest_Comment__c"), ("Case", "CXHub_Comment__c")]:
        assert fields[sobject][name].length == DEFAULTS.comment_max_length  # no comment is ever cut short


def test_the_response_object_is_keyed_by_a_unique_external_id_and_looks_up_contact_and_case() -> None:
    fields = package.custom_fields()["Survey_Response__c"]
    key = fields["Response_Id__c"]
    assert (key.type, key.external_id, key.unique) == ("Text", True, True)
    assert fields["Contact__c"].reference_to == "Contact" and fields["Case__c"].reference_to == "Case"
    settings = package.custom_objects()["Survey_Response__c"]
    assert settings["name_type"] == "AutoNumber" and settings["name_format"] == "SR-{000000}"


def test_the_integration_permission_set_may_edit_every_package_field_and_the_viewer_only_read() -> None:
    fields = [f"{sobject}.{name}" for sobject, specs in package.custom_fields().items() for name in specs]
    integration = package.permission_set("CXHub_Integration")
    viewer = package.permission_set("CXHub_Viewer")
    for name in fields:
        assert integration.get(name) == (True, True), f"CXHub_Integration cannot edit {name}"
        assert viewer.get(name) == (True, False), f"CXHub_Viewer should read, not edit, {name}"
    objects = package.object_permissions("CXHub_Integration")
    assert objects["Survey_Response__c"]["allowCreate"] and objects["Survey_Response__c"]["allowEdit"]
    assert not objects["Survey_Response__c"]["allowDelete"], "the hub never deletes answers"
    assert objects["Case"]["allowEdit"] and objects["Contact"]["allowEdit"]
    assert objects["Case"]["viewAllRecords"], "polling must see every closed case, whoever owns it"


def test_the_package_is_a_deployable_dx_project_and_can_be_copied_out(tmp_path: Path) -> None:
    project = json.loads((package.SOURCE / "sfdx-project.json").read_text())
    assert project["packageDirectories"] == [{"path": "force-app", "default": True}]
    assert project["sourceApiVersion"] == DEFAULTS.api_version
    target = tmp_path / "cxhub-package"
    assert package.main([str(target)]) == 0
    copied = sorted(p.relative_to(target) for p in target.rglob("*") if p.is_file())
    assert copied == sorted(p.relative_to(package.SOURCE) for p in package.SOURCE.rglob("*") if p.is_file())
    assert package.main([str(target)]) == 1, "an existing directory is never overwritten"


def test_the_emulator_enforces_the_package_lengths_and_picklists(emulator: SalesforceEmulator) -> None:
    contact = emulator.add_contact("Kari", "Dahl", email="kari@nordlys.example")
    describe = emulator.org.describe("Survey_Response__c")
    key = next(f for f in describe["fields"] if f["name"] == "Response_Id__c")
    assert (key["externalId"], key["length"]) == (True, 64)
    with pytest.raises(RecordError, match=r"data value too large: r+ \(max length=64\)") as too_long:
        emulator.org.create("Survey_Response__c", {"Response_Id__c": "r" * 65, "Contact__c": contact})
    assert (too_long.value.code, too_long.value.fields) == ("STRING_TOO_LONG", ["Response_Id__c"])
    with pytest.raises(RecordError, match="bad value for restricted picklist field: fan") as bad_value:
        emulator.org.update("Contact", contact, {"CXHub_Latest_Category__c": "fan"})
    assert bad_value.value.code == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"


async def test_check_passes_on_an_org_with_the_package_and_shows_the_budget(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    results = await connector.check()
    assert all(result.ok for result in results), [r for r in results if not r.ok]
    lines = by_name(results)
    assert {"credentials", "Contact", "Case", "Survey_Response__c", "CaseComment", "api budget"} <= set(lines)
    budget = lines["api budget"].detail
    assert f"/{emulator.daily_limit} calls in 24 h" in budget
    assert f"of its {int(emulator.daily_limit * 0.10)}" in budget


async def test_check_names_missing_and_read_only_fields_with_their_config_keys_and_the_fix(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    emulator.drop_field("Contact", "CXHub_Average_Score__c")
    emulator.lock_field("Case", "CXHub_Comment__c")
    results = by_name(await connector.check())
    contact, case = results["Contact"], results["Case"]
    assert not contact.ok and not case.ok
    assert "missing: CXHub_Average_Score__c (contact.average_score)" in contact.detail
    assert "Deploy the CX Hub package" in contact.detail and 'set them to ""' in contact.detail
    assert "read-only for the integration user: CXHub_Comment__c (case.comment_field)" in case.detail
    assert "permission set CXHub_Integration" in case.detail
    assert results["Survey_Response__c"].ok, "an object with all its fields is not blamed"


async def test_check_names_a_missing_response_object_and_the_switch_that_turns_it_off(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    del emulator.org.schema["Survey_Response__c"]
    result = by_name(await connector.check())["Survey_Response__c"]
    assert not result.ok
    assert "object Survey_Response__c is missing or not visible" in result.detail
    assert "response_object.external_id_field" in result.detail


async def test_check_names_a_comment_field_shorter_than_the_comments_the_hub_writes(
    server: TlsServer, app_keys: tuple[str, str], emulator: SalesforceEmulator
) -> None:
    spec = emulator.org.schema["Contact"]["CXHub_Latest_Comment__c"]
    emulator.org.schema["Contact"]["Short_Comment__c"] = type(spec)(type="string", length=255)
    settings = make_settings(server, app_keys[0], emulator, contact={"latest_comment": "Short_Comment__c"})
    connector = make_connector(settings)
    try:
        result = by_name(await connector.check())["Contact"]
    finally:
        await connector.aclose()
    assert not result.ok
    assert (
        "Short_Comment__c (contact.latest_comment) holds 255 characters, fewer than comment_max_length = 32768: "
        "set comment_max_length = 255" in result.detail
    )


async def test_check_verifies_the_chatter_feed_only_when_posts_are_on(
    server: TlsServer, app_keys: tuple[str, str], emulator: SalesforceEmulator
) -> None:
    emulator.lock_field("FeedItem", "Body")
    quiet = make_connector(make_settings(server, app_keys[0], emulator))
    posting = make_connector(make_settings(server, app_keys[0], emulator, case={"chatter_post": "contact"}))
    try:
        assert "FeedItem" not in by_name(await quiet.check())
        feed = by_name(await posting.check())["FeedItem"]
    finally:
        await quiet.aclose()
        await posting.aclose()
    assert not feed.ok and "Body (case.chatter_post)" in feed.detail


def test_the_budget_line_fails_when_the_share_is_spent_or_salesforce_refused() -> None:
    state = {"org_used": 500, "org_max": 1000, "hub_spent_in_window": 9, "hub_allowance": 10}
    assert budget_line({**state, "paused_for_seconds": 0}).ok
    spent = budget_line({**state, "hub_spent_in_window": 10, "paused_for_seconds": 0})
    assert not spent.ok and "share is spent" in spent.detail and "api_budget_share" in spent.detail
    refused = budget_line({**state, "paused_for_seconds": 600.0})
    assert not refused.ok and "REQUEST_LIMIT_EXCEEDED" in refused.detail and "600 s" in refused.detail


def _settings(**extra: object) -> SalesforceSettings:
    auth = {"type": "client_credentials", "client_id": "x", "client_secret": SecretStr("not-used")}
    return SalesforceSettings.model_validate({"auth": auth, **extra})


@pytest.mark.parametrize("secret", ["", "short-but-not-empty"])
def test_a_webhook_secret_anyone_could_guess_is_refused_with_the_fix(secret: str) -> None:
    with pytest.raises(
        ValidationError, match=re.escape("at least 32 characters, e.g. the output of `openssl rand -hex 32`")
    ):
        _settings(webhook_secret=SecretStr(secret))


def test_notes_without_their_marker_field_are_refused_because_a_retry_would_note_twice() -> None:
    with pytest.raises(ValidationError, match=re.escape("case.response_id_field is empty")):
        _settings(case={"response_id_field": ""})
    with pytest.raises(ValidationError, match=re.escape("case.response_id_field is empty")):
        _settings(case={"response_id_field": "", "internal_comment": False, "chatter_post": "case"})
    quiet = _settings(case={"response_id_field": "", "internal_comment": False})
    assert "response_id" not in quiet.case.mapped()


#: fields every user who can read the object sees: ids, names, system and required fields, which a
#: permission set cannot grant or withhold
ALWAYS_VISIBLE = {
    "Contact": {"Id", "FirstName", "LastName", "OwnerId"},
    "Case": {"Id", "CaseNumber", "Status", "IsClosed", "ClosedDate", "OwnerId"},
    "Opportunity": {
        "Id",
        "Name",
        "StageName",
        "IsWon",
        "CloseDate",
        "LastModifiedDate",
        "OwnerId",
        "ContactId",
    },
    "OpportunityContactRole": {"OpportunityId", "ContactId"},
}


def test_the_integration_permission_set_lets_the_connector_read_every_standard_field_it_selects() -> None:
    """An API-only integration user sees no optional field unless a permission set grants it."""
    granted = package.permission_set("CXHub_Integration")
    reads = [need for need in needs(DEFAULTS) if need.access == "read"]
    assert {need.sobject for need in reads} == set(ALWAYS_VISIBLE)
    for need in reads:
        if need.field not in ALWAYS_VISIBLE[need.sobject]:
            readable, _ = granted.get(f"{need.sobject}.{need.field}", (False, False))
            assert readable, f"CXHub_Integration does not grant read on {need.sobject}.{need.field}"


#: what the Metadata API requires of each field type (CustomField reference), beyond fullName, label, type
REQUIRED_BY_TYPE = {
    "Number": {"precision", "scale"},
    "Text": {"length"},
    "LongTextArea": {"length", "visibleLines"},
    "Picklist": {"valueSet"},
    "DateTime": set(),
    "Lookup": {"referenceTo", "relationshipName", "deleteConstraint"},
    "Checkbox": {"defaultValue"},
}
#: CustomField elements this package may use; anything else is a typo the deploy would refuse
CUSTOM_FIELD_ELEMENTS = {
    "fullName", "caseSensitive", "defaultValue", "deleteConstraint", "description", "externalId", "inlineHelpText", "label",
    "length", "precision", "referenceTo", "relationshipLabel", "relationshipName", "required", "scale",
    "trackHistory", "type", "unique", "valueSet", "visibleLines",
}  # fmt: skip


def test_every_field_file_has_what_its_type_needs_and_nothing_the_metadata_api_does_not_know() -> None:
    import xml.etree.ElementTree as ET

    files = sorted((package.SOURCE / "force-app").rglob("*.field-meta.xml"))
    assert len(files) == sum(len(f) for f in package.custom_fields().values()) > 0
    for path in files:
        root = ET.parse(path).getroot()
        assert root.tag == "{http://soap.sforce.com/2006/04/metadata}CustomField", path
        elements = {child.tag.split("}")[1] for child in root}
        assert elements <= CUSTOM_FIELD_ELEMENTS, f"{path.name}: unknown {elements - CUSTOM_FIELD_ELEMENTS}"
        kind = root.findtext("{http://soap.sforce.com/2006/04/metadata}type")
        assert kind in REQUIRED_BY_TYPE, f"{path.name}: type {kind}"
        assert {"fullName", "label", "type"} | REQUIRED_BY_TYPE[kind] <= elements, path.name
        assert root.findtext("{http://soap.sforce.com/2006/04/metadata}fullName") == path.name.split(".")[0]


async def test_check_says_a_hidden_standard_field_needs_the_permission_set_not_the_package(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    emulator.drop_field("Case", "Origin")  # what describe shows when field-level security hides it
    case = by_name(await connector.check())["Case"]
    assert not case.ok
    assert (
        "not visible to the integration user: Origin. Assign it the permission set CXHub_Integration"
        in case.detail
    )
    assert "Deploy the CX Hub package" not in case.detail


async def test_check_names_a_marker_field_too_short_for_the_noted_answer(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    spec = emulator.org.schema["Case"]["CXHub_Response_Id__c"]
    emulator.org.schema["Case"]["CXHub_Response_Id__c"] = type(spec)(type="string", length=36)
    case = by_name(await connector.check())["Case"]
    assert not case.ok
    assert "CXHub_Response_Id__c (case.response_id_field) holds 36 characters; it needs 44" in case.detail


async def test_an_unreadable_contact_role_is_a_warning_because_opportunities_fall_back(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    del emulator.org.schema["OpportunityContactRole"]
    role = by_name(await connector.check())["OpportunityContactRole"]
    assert role.ok and "optional: won opportunities then survey Opportunity.ContactId" in role.detail
