"""The shared connector suite of ``hub.testing``, run against the Salesforce emulator over real HTTPS."""

from __future__ import annotations

from hub.testing import ConnectorSuite


class TestSalesforceConnectorSuite(ConnectorSuite):
    """Runs against the ``harness`` fixture of conftest.py: the emulator over HTTPS."""
