"""Shared fixtures: a real database (SQLite and PostgreSQL), the fake CRM service, hubs built from config text."""

from __future__ import annotations

import textwrap
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.app import Hub
from hub.config import parse_config
from hub.testing.databases import fresh_database
from hub.testing.server import BackgroundServer
from tests.fakes.crm import TOKEN, FakeState, create_app

WEBHOOK_SECRET = "whsec-test-0123456789"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every test that uses the store runs on SQLite and on PostgreSQL, on a database at the newest
    migration."""
    with fresh_database(request.param, tmp_path, migrated=True) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, for the tests of the migrations themselves."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def crm_state() -> FakeState:
    state = FakeState()
    state.people["P1"] = {"id": "P1", "email": "Ada@Example.com", "first_name": "Ada", "language": "da-DK"}
    state.people["P2"] = {"id": "P2", "email": "bob@example.com", "first_name": "Bob", "no_mail": True}
    state.people["P3"] = {"id": "P3", "phone": "+45 20 30 40 50", "first_name": "Cy"}
    return state


@pytest.fixture
def fake_crm(crm_state: FakeState) -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app(crm_state)) as server:
        yield server


@pytest.fixture(autouse=True)
def _secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CRM_TOKEN", TOKEN)
    monkeypatch.setenv("FAKE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("CXHUB_TEST_API_TOKEN", "api-token-for-tests-42")


def config_text(database_url: str, crm_url: str, extra: str = "", *, sync: str = "") -> str:
    """A complete config using the fake CRM and channel; ``extra`` TOML is appended."""
    return textwrap.dedent(
        f"""
        [hub]
        public_url = "http://127.0.0.1:8000"
        database_url = "{database_url}"
        plugins = []
        plugin_modules = ["tests.fakes.plugin"]
        api_token = "env:CXHUB_TEST_API_TOKEN"

        [policy]
        min_days_between_surveys = 30

        [sync]
        max_attempts = 3
        backoff_base_seconds = 0
        backoff_max_seconds = 0
        prompt_seconds = 0.5
        {sync}

        [connectors.crm]
        plugin = "fakecrm"
        base_url = "{crm_url}"
        token = "env:FAKE_CRM_TOKEN"
        webhook_secret = "env:FAKE_WEBHOOK_SECRET"
        poll_interval_seconds = 0

        [channels.mail]
        plugin = "fakechannel"
        base_url = "{crm_url}"

        [surveys.nps]
        kind = "nps"

        [campaigns.case_closed]
        trigger = {{ connector = "crm", event = "case.closed" }}
        survey = "nps"
        channels = ["mail"]
        alerts = [{{ when = "detractor", channel = "mail", to = "owner" }}]
        """
    ) + textwrap.dedent(extra)


HubFactory = Callable[..., Any]


@pytest.fixture
async def make_hub(
    database_url: str, fake_crm: BackgroundServer, tmp_path: Path
) -> AsyncIterator[HubFactory]:
    hubs: list[Hub] = []

    async def factory(
        extra: str = "", sync: str = "", plugin_objects: list[tuple[str, object]] | None = None
    ) -> Hub:
        text = config_text(database_url, fake_crm.url, extra, sync=sync)
        config = parse_config(tomllib.loads(text), tmp_path / "cxhub.toml")
        hub = await Hub.open(config, plugin_objects=plugin_objects)
        hubs.append(hub)
        return hub

    yield factory
    for hub in hubs:
        await hub.close()
