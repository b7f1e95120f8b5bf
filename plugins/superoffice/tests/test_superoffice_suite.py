"""The shared connector suite of ``hub.testing``, run against SuperOffice: the connector inside a real hub."""

from __future__ import annotations

from pathlib import Path

import pytest
from hub_superoffice.emulator import BackgroundServer, DemoSeed, SuperOfficeEmulator
from superoffice_support import WEBHOOK_SECRET, SuperOfficeHarness

from hub.testing import ConnectorSuite
from hub.testing.harness import CONNECTOR

#: the public URL the suite's hub is configured with
HUB_URL = "http://127.0.0.1:9"


class TestSuperOfficeConnectorSuite(ConnectorSuite):
    @pytest.fixture
    def harness(
        self,
        emulator: SuperOfficeEmulator,
        server: BackgroundServer,
        seed: DemoSeed,
        partner_keys: tuple[str, str],
        tmp_path: Path,
    ) -> SuperOfficeHarness:
        key_file = tmp_path / "partner-key.pem"
        key_file.write_text(partner_keys[0], encoding="ascii")
        # the tenant's administrator registered the hub's webhook (nothing listens there in the suite)
        emulator.register_webhook(
            f"{HUB_URL}/hooks/{CONNECTOR}", WEBHOOK_SECRET, ["ticket.changed"], test=False
        )
        return SuperOfficeHarness(emulator, server, str(key_file))
