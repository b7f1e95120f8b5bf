"""The shared connector suite of ``hub.testing``, run against the Dataverse emulator over real HTTPS, with
msal really acquiring the tokens (its requests are in the emulator's call log)."""

from __future__ import annotations

import pytest
from dynamics_support import TENANT, DynamicsHarness

from hub.app import Hub
from hub.testing import ConnectorSuite
from hub.testing.harness import CONNECTOR


class TestDynamicsConnectorSuite(ConnectorSuite):
    """Runs against the ``harness`` fixture of conftest.py: the emulator over HTTPS."""

    @pytest.mark.asyncio
    async def test_tokens_come_from_msal_through_the_authority(
        self, hub: Hub, harness: DynamicsHarness
    ) -> None:
        results = await hub.connectors[CONNECTOR].check()
        assert results and all(r.ok for r in results), results
        login = [(c.method, c.path) for c in harness.emulator.calls_of("login")]
        # msal discovers the authority first, then asks its token endpoint (once: the token is cached)
        assert login == [
            ("GET", f"/{TENANT}/v2.0/.well-known/openid-configuration"),
            ("POST", f"/{TENANT}/oauth2/v2.0/token"),
        ]
        assert all(c.status == 200 for c in harness.emulator.calls_of("api"))
