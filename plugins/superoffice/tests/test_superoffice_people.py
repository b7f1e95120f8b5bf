"""Finding and reading people: the hub decides whom to survey, in which language, from what this returns."""

from __future__ import annotations

from hub_superoffice.connector import SuperOfficeConnector
from hub_superoffice.emulator import DemoSeed, SuperOfficeEmulator


async def test_find_by_email_ignores_case_and_by_mobile_matches_e164(
    connector: SuperOfficeConnector, seed: DemoSeed
) -> None:
    by_email = await connector.find_person("  Karen.Jensen@Nordlys.example ", None)
    by_mobile = await connector.find_person(None, "+4531224466")
    uk_mobile = await connector.find_person(None, "+447700900456")
    assert by_email is not None and by_email.crm_id == str(seed.persons["karen"])
    assert by_mobile is not None and by_mobile.crm_id == str(seed.persons["søren"])
    assert uk_mobile is not None and uk_mobile.crm_id == str(seed.persons["oliver"])


async def test_nobody_is_none(connector: SuperOfficeConnector) -> None:
    assert await connector.find_person("nobody@nowhere.example", "+4599999999") is None
    assert await connector.get_person("999999") is None
    assert await connector.get_person("not-an-id") is None


async def test_danish_and_english_people_get_their_language_and_e164_phone(
    connector: SuperOfficeConnector, seed: DemoSeed
) -> None:
    karen = await connector.get_person(str(seed.persons["karen"]))
    emma = await connector.get_person(str(seed.persons["emma"]))
    oliver = await connector.get_person(str(seed.persons["oliver"]))  # no CustomerLanguage: from country
    assert karen is not None and (karen.language, karen.phone, karen.first_name) == (
        "da",
        "+4520123456",
        "Karen",
    )
    assert emma is not None and (emma.language, emma.phone) == ("en", "+61491570156")
    assert oliver is not None and (oliver.language, oliver.phone) == ("en", "+447700900456")
    assert not karen.opted_out


async def test_no_mailings_and_withdrawn_consent_opt_people_out(
    connector: SuperOfficeConnector, emulator: SuperOfficeEmulator, seed: DemoSeed
) -> None:
    withdrawn = emulator.add_person(
        "Freja",
        "Madsen",
        email="freja@nordlys.example",
        consents=[{"ConsentPurposeKey": "EMARKETING", "LegalBaseKey": "WITHDRAWN"}],
    )
    lars = await connector.get_person(str(seed.persons["lars"]))
    freja = await connector.get_person(str(withdrawn))
    assert lars is not None and lars.opted_out and "No Mailings" in (lars.opt_out_reason or "")
    assert freja is not None and freja.opted_out and "consent" in (freja.opt_out_reason or "")
