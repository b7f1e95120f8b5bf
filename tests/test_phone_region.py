"""``hub.phone_region``: numbers a CRM keeps without a country code ("31 22 44 66") become E.164 in the hub,
so the SMS channel can text them and a reply from +4531224466 finds its person."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from sqlalchemy import select

from hub.config import parse_config
from hub.errors import ConfigError
from hub.models import PersonRecord
from hub.people import upsert_person
from hub.store.db import Store
from hub.store.tables import Person
from tests.conftest import config_text

BASE = config_text("sqlite+aiosqlite:///x.db", "http://127.0.0.1:1")


def with_region(value: str) -> str:
    return BASE.replace("[hub]\n", f'[hub]\nphone_region = "{value}"\n', 1)


def test_the_region_is_a_country_code_in_any_case() -> None:
    config = parse_config(tomllib.loads(with_region("dk")), Path("cxhub.toml"))
    assert config.hub.phone_region == "DK"


def test_an_unknown_region_names_the_key_and_the_fix() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(tomllib.loads(with_region("Denmark")), Path("cxhub.toml"))
    [problem] = caught.value.problems
    assert "hub.phone_region" in problem and '"Denmark" is no country code' in problem and '"DK"' in problem


@pytest.mark.parametrize(
    ("region", "crm_number", "stored"),
    [
        ("DK", "31 22 44 66", "+4531224466"),  # a local number, read in the hub's region
        ("DK", "+46 70 123 45 67", "+46701234567"),  # a full number keeps its own country
        (None, "31 22 44 66", None),  # without a region a local number cannot be read: not guessed
    ],
)
async def test_a_crm_number_is_stored_in_e164(
    database_url: str, region: str | None, crm_number: str, stored: str | None
) -> None:
    store = Store(database_url)
    await store.upgrade()
    try:
        async with store.session() as s:
            await s.run_sync(upsert_person, "crm", PersonRecord(crm_id="P1", phone=crm_number), region)
        async with store.session() as s:
            assert await s.scalar(select(Person.phone)) == stored
    finally:
        await store.dispose()
