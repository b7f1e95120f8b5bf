"""Fixtures: the Dataverse emulator served over real HTTPS (a test CA), and a connector pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from dynamics_support import DynamicsHarness, make_connector, make_emulator, make_settings
from hub_dynamics.connector import DynamicsConnector
from hub_dynamics.emulator import DataverseEmulator, serve

from hub.testing.server import TlsServer


@pytest.fixture
def emulator() -> DataverseEmulator:
    return make_emulator()


@pytest.fixture
def server(emulator: DataverseEmulator) -> Iterator[TlsServer]:
    with serve(emulator) as server:
        yield server


@pytest.fixture
async def connector(server: TlsServer) -> AsyncIterator[DynamicsConnector]:
    connector = make_connector(make_settings(server))
    yield connector
    await connector.aclose()


@pytest.fixture
def harness(emulator: DataverseEmulator, server: TlsServer) -> DynamicsHarness:
    return DynamicsHarness(emulator, server)
