"""Salesforce connector for CX Hub: hook implementations only.

The connector is ``hub_salesforce.connector.SalesforceConnector``; ``hub_salesforce.emulator`` is a local
stand-in of the Salesforce REST API served over TLS.
"""

from __future__ import annotations

from hub import ConnectorType, PluginContext, RegisterConnector, hookimpl
from hub_salesforce.config import SalesforceSettings
from hub_salesforce.connector import SalesforceConnector


def _create(settings: SalesforceSettings, ctx: PluginContext) -> SalesforceConnector:
    return SalesforceConnector(settings, ctx)


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
