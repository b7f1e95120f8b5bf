"""The shared connector suite of ``hub.testing``, run against the Salesforce emulator over real HTTPS."""

from __future__ import annotations

from pathlib import Path

import pytest
from hub_salesforce.emulator import SalesforceEmulator, TlsServer
from salesforce_support import SalesforceHarness

from hub.testing import ConnectorSuite


class TestSalesforceConnectorSuite(ConnectorSuite):
    @pytest.fixture
    def harness(
        self, emulator: SalesforceEmulator, server: TlsServer, app_keys: tuple[str, str], tmp_path: Path
    ) -> SalesforceHarness:
        key_file = tmp_path / "app-key.pem"
        key_file.write_text(app_keys[0], encoding="ascii")
        return SalesforceHarness(emulator, server, str(key_file))
