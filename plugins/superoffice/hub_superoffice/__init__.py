"""SuperOffice connector for CX Hub: hook implementations only.

The connector is ``hub_superoffice.connector.SuperOfficeConnector``; ``hub_superoffice.emulator`` is a local
stand-in of the SuperOffice WebAPI, offered to ``cxhub demo`` as ``hub_superoffice.demo.SuperOfficeDemoEmulator``.
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
from hub_superoffice.config import SuperOfficeSettings
from hub_superoffice.connector import SuperOfficeConnector


def _create(settings: SuperOfficeSettings, ctx: PluginContext) -> SuperOfficeConnector:
    return SuperOfficeConnector(settings, ctx)


def _emulator() -> ConnectorEmulator:
    """Imported only when a demo or benchmark asks: the emulator is not part of a production install."""
    from hub_superoffice.demo import SuperOfficeDemoEmulator

    return SuperOfficeDemoEmulator()


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


@hookimpl
def hub_register_emulators(register: RegisterEmulator) -> None:
    """Offer the SuperOffice emulator to ``cxhub demo`` and benchmarks."""
    register(
        EmulatorType(
            plugin="superoffice",
            kind="connector",
            factory=_emulator,
            description="local SuperOffice WebAPI with a seeded tenant",
        )
    )
