"""Salesforce connector for CX Hub: hook implementations only.

The connector is ``hub_salesforce.connector.SalesforceConnector``; ``hub_salesforce.emulator`` is a local
stand-in of the Salesforce REST API served over TLS.
"""

from __future__ import annotations

from hub import (
    ConnectorEmulator,
    ConnectorType,
    EmulatorType,
    PluginContext,
    RegisterConnector,
    RegisterEmulator,
    hookimpl,
)
from hub_salesforce.config import SalesforceSettings
from hub_salesforce.connector import SalesforceConnector


def _create(settings: SalesforceSettings, ctx: PluginContext) -> SalesforceConnector:
    return SalesforceConnector(settings, ctx)


def _emulator() -> ConnectorEmulator:
    """Imported only when a demo asks: the emulator (and its test CA, from trustme) is not production code."""
    from hub_salesforce.demo import SalesforceDemoEmulator

    return SalesforceDemoEmulator()


@hookimpl
def hub_register_connectors(register: RegisterConnector) -> None:
    register(
        ConnectorType(
            name="salesforce",
            settings=SalesforceSettings,
            factory=_create,
            description="Salesforce (Service and Sales Cloud): closed cases and won opportunities in, feedback back",
        )
    )


@hookimpl
def hub_register_emulators(register: RegisterEmulator) -> None:
    """Offer the Salesforce emulator to ``cxhub demo``."""
    register(
        EmulatorType(
            plugin="salesforce",
            kind="connector",
            factory=_emulator,
            description="local Salesforce REST API over TLS (test CA) with a seeded org",
        )
    )
