"""Fixtures: the SuperOffice emulator served over real HTTP, a connector pointed at it, and a webhook
receiver the emulator delivers to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from hub_superoffice.connector import SuperOfficeConnector
from hub_superoffice.emulator import (
    BackgroundServer,
    DemoSeed,
    SuperOfficeEmulator,
    generate_key_pair,
    serve_in_background,
)
from superoffice_support import WebhookReceiver, make_connector, make_emulator, make_settings


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
