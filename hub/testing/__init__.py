"""Test kit for connector and channel authors: the shared suites, the background server, an in-memory channel.

A connector passes the same suite whether it is built in or a partner's (like Airbyte's standard tests):

    from hub.testing import ConnectorSuite

    class TestMyCrm(ConnectorSuite):
        @pytest.fixture
        def harness(self, my_emulator):
            return MyCrmHarness(my_emulator)   # implements hub.testing.ConnectorHarness

``ChannelSuite`` does the same for a channel. The suites run under any asyncio mode of pytest-asyncio,
under anyio, or with neither. The names below are imported on first use (PEP 562), so an emulator that
only needs ``BackgroundServer`` runs without pytest: the suites need the ``cxhub[testing]`` extra, a
production install needs neither.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.testing.channel_suite import ChannelHarness, ChannelSuite
    from hub.testing.harness import Capabilities, ConnectorHarness, PollingHarness, build_hub
    from hub.testing.items import opt_out_item
    from hub.testing.memory import MemoryChannel, memory_channel_plugin
    from hub.testing.server import BackgroundServer, TlsServer
    from hub.testing.suite import ConnectorSuite

__all__ = [
    "BackgroundServer",
    "Capabilities",
    "ChannelHarness",
    "ChannelSuite",
    "ConnectorHarness",
    "ConnectorSuite",
    "MemoryChannel",
    "PollingHarness",
    "TlsServer",
    "build_hub",
    "memory_channel_plugin",
    "opt_out_item",
]

_MODULES = {
    "BackgroundServer": "hub.testing.server",
    "TlsServer": "hub.testing.server",
    "Capabilities": "hub.testing.harness",
    "ConnectorHarness": "hub.testing.harness",
    "PollingHarness": "hub.testing.harness",
    "build_hub": "hub.testing.harness",
    "MemoryChannel": "hub.testing.memory",
    "memory_channel_plugin": "hub.testing.memory",
    "opt_out_item": "hub.testing.items",
    "ConnectorSuite": "hub.testing.suite",
    "ChannelHarness": "hub.testing.channel_suite",
    "ChannelSuite": "hub.testing.channel_suite",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'hub.testing' has no attribute {name!r}")
    try:
        return getattr(import_module(module), name)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"hub.testing.{name} needs {exc.name!r}: install the test kit with pip install 'cxhub[testing]'",
            name=exc.name,
        ) from exc
