"""Fixtures: the Salesforce emulator served over real HTTPS (a test CA), and a connector pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hub_salesforce.connector import SalesforceConnector
from hub_salesforce.emulator import SalesforceEmulator, TlsServer, generate_key_pair, serve_tls
from salesforce_support import SalesforceHarness, make_connector, make_emulator, make_settings


@pytest.fixture(scope="session")
def app_keys() -> tuple[str, str]:
    """(private PEM, public PEM) of the connected app's certificate."""
    return generate_key_pair()


@pytest.fixture
def emulator(app_keys: tuple[str, str]) -> SalesforceEmulator:
    return make_emulator(app_keys[1])


@pytest.fixture
def server(emulator: SalesforceEmulator) -> Iterator[TlsServer]:
    with serve_tls(emulator.app) as server:
        yield server


@pytest.fixture
async def connector(
    server: TlsServer, app_keys: tuple[str, str], emulator: SalesforceEmulator
) -> AsyncIterator[SalesforceConnector]:
    connector = make_connector(make_settings(server, app_keys[0], emulator))
    yield connector
    await connector.aclose()


@pytest.fixture
def harness(
    emulator: SalesforceEmulator, server: TlsServer, app_keys: tuple[str, str], tmp_path: Path
) -> SalesforceHarness:
    """The shared connector suite's view of the emulator, with the app's private key in a file as an admin
    would keep it."""
    key_file = tmp_path / "app-key.pem"
    key_file.write_text(app_keys[0], encoding="ascii")
    return SalesforceHarness(emulator, server, str(key_file))
