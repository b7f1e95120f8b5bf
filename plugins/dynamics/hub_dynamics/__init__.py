"""Microsoft Dynamics 365 (Dataverse) connector for CX Hub: hook implementations only.

The connector is ``hub_dynamics.connector.DynamicsConnector``. ``hub_dynamics.emulator`` is a local stand-in
of the Dataverse Web API and Entra ID; it is imported only when ``cxhub demo`` (or a test) asks for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hub import ConnectorType, EmulatorType, PluginContext, RegisterConnector, RegisterEmulator, hookimpl
from hub_dynamics.config import DynamicsSettings

if TYPE_CHECKING:
    from hub import ConnectorEmulator
    from hub_dynamics.connector import DynamicsConnector


def _create(settings: DynamicsSettings, ctx: PluginContext) -> DynamicsConnector:
    from hub_dynamics.connector import DynamicsConnector

    return DynamicsConnector(settings, ctx)


def _demo_emulator() -> ConnectorEmulator:
    from hub_dynamics.demo import DynamicsDemoEmulator  # test and demo code: loaded only when asked for

    return DynamicsDemoEmulator()


@hookimpl
def hub_register_connectors(register: RegisterConnector) -> None:
    register(
        ConnectorType(
            name="dynamics",
            settings=DynamicsSettings,
            factory=_create,
            description="Microsoft Dynamics 365 / Dataverse: resolved cases and won opportunities in, feedback back",
        )
    )


@hookimpl
def hub_register_emulators(register: RegisterEmulator) -> None:
    """Offer the Dataverse emulator to ``cxhub demo`` (imported only when a demo starts it)."""
    register(
        EmulatorType(
            plugin="dynamics",
            kind="connector",
            factory=_demo_emulator,
            description="local Dataverse Web API and Entra ID over TLS (test CA) with a seeded environment",
        )
    )
