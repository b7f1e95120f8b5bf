"""Fixtures: the SuperOffice emulator served over real HTTP, a connector pointed at it, and a webhook
receiver the emulator delivers to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hub_superoffice.connector import SuperOfficeConnector
from hub_superoffice.emulator import (
    BackgroundServer,
    DemoSeed,
    SuperOfficeEmulator,
    generate_key_pair,
    serve_in_background,
)
from superoffice_support import (
    SuperOfficeHarness,
    WebhookReceiver,
    make_connector,
    make_emulator,
    make_settings,
)

from hub.app import Hub
from hub.config import parse_config
from hub.testing.databases import fresh_database
from hub.testing.harness import suite_config
from hub.testing.memory import MemoryChannel, memory_channel_plugin


@pytest.fixture(scope="session")
def partner_keys() -> tuple[str, str]:
    """(private PEM, public PEM) of the partner application."""
    return generate_key_pair()


@pytest.fixture
def emulator(partner_keys: tuple[str, str]) -> Iterator[SuperOfficeEmulator]:
    emulator = make_emulator(partner_keys[1])
    yield emulator
    emulator.close()


@pytest.fixture
def seed(emulator: SuperOfficeEmulator) -> DemoSeed:
    return emulator.seed_demo()


@pytest.fixture
def server(emulator: SuperOfficeEmulator) -> Iterator[BackgroundServer]:
    with serve_in_background(emulator.app) as server:
        yield server


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[WebhookReceiver, BackgroundServer]]:
    receiver = WebhookReceiver(asyncio.get_running_loop())
    with serve_in_background(receiver.app) as receiver_server:
        yield receiver, receiver_server


@pytest.fixture
async def connector(
    server: BackgroundServer, partner_keys: tuple[str, str], seed: DemoSeed
) -> AsyncIterator[SuperOfficeConnector]:
    connector = make_connector(make_settings(server, partner_keys[0]))
    yield connector
    await connector.aclose()


@pytest.fixture
async def hooked(
    emulator: SuperOfficeEmulator,
    server: BackgroundServer,
    partner_keys: tuple[str, str],
    seed: DemoSeed,
    receiver: tuple[WebhookReceiver, BackgroundServer],
) -> AsyncIterator[tuple[SuperOfficeConnector, WebhookReceiver]]:
    """A connector whose public URL is the webhook receiver, with its webhook registered."""
    hook_receiver, hook_server = receiver
    connector = make_connector(make_settings(server, partner_keys[0]), public_url=hook_server.url)
    hook_receiver.connector = connector
    await connector.ensure_webhook()
    yield connector, hook_receiver
    await hook_receiver.detach(emulator)
    await connector.aclose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A test that goes through the hub's store runs on SQLite and on PostgreSQL (a fresh database)."""
    with fresh_database(request.param, tmp_path, migrated=True) as url:
        yield url


@pytest.fixture
def so_harness(
    emulator: SuperOfficeEmulator,
    server: BackgroundServer,
    seed: DemoSeed,
    partner_keys: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> SuperOfficeHarness:
    """The emulator as the shared suite drives it (the partner key in a file, secrets in the environment)."""
    key_file = tmp_path / "partner-key.pem"
    key_file.write_text(partner_keys[0], encoding="ascii")
    harness = SuperOfficeHarness(emulator, server, str(key_file))
    for name, value in harness.environment().items():
        monkeypatch.setenv(name, value)
    return harness


@pytest.fixture
async def so_hub(so_harness: SuperOfficeHarness, database_url: str, tmp_path: Path) -> AsyncIterator[Hub]:
    """A hub on ``database_url`` whose connector ``crm`` is SuperOffice (the emulator) and whose channel
    is in memory; one campaign surveys every closed request."""
    data = suite_config(so_harness, tmp_path)
    data["hub"]["database_url"] = database_url
    MemoryChannel.sent.clear()
    running = await Hub.open(
        parse_config(data, tmp_path / "cxhub.toml"), plugin_objects=[memory_channel_plugin()]
    )
    yield running
    await running.close()
