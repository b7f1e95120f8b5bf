"""SuperOffice connector for CX Hub: registers the ``superoffice`` connector type, nothing else.

The work is done by ``hub_superoffice.connector.SuperOfficeConnector``; ``hub_superoffice.emulator`` is a
local stand-in of the SuperOffice WebAPI for tests and ``cxhub demo``.
"""

from __future__ import annotations

from hub import ConnectorType, PluginContext, RegisterConnector, hookimpl
from hub_superoffice.config import SuperOfficeSettings
from hub_superoffice.connector import SuperOfficeConnector


def _create(settings: SuperOfficeSettings, ctx: PluginContext) -> SuperOfficeConnector:
    return SuperOfficeConnector(settings, ctx)


@hookimpl
def hub_register_connectors(register: RegisterConnector) -> None:
    register(
        ConnectorType(
            name="superoffice",
            settings=SuperOfficeSettings,
            factory=_create,
            description="SuperOffice CRM (Online and onsite): closed tickets and won sales in, feedback back",
        )
    )
