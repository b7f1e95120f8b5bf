"""Test kit for connector and channel authors: the shared connector suite and an in-memory channel.

A connector passes the same suite whether it is built in or a partner's (like Airbyte's standard tests):

    from hub.testing import ConnectorSuite

    class TestMyCrm(ConnectorSuite):
        @pytest.fixture
        def harness(self, my_emulator):
            return MyCrmHarness(my_emulator)   # implements hub.testing.ConnectorHarness

The names below are imported on first use (PEP 562), so an emulator that only needs
``hub.testing.server`` runs without pytest: the suite needs the ``cxhub[testing]`` extra, a production
install needs neither.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.testing.harness import ConnectorHarness, build_hub
    from hub.testing.memory import MemoryChannel, memory_channel_plugin
    from hub.testing.suite import ConnectorSuite

__all__ = ["ConnectorHarness", "ConnectorSuite", "MemoryChannel", "build_hub", "memory_channel_plugin"]

_MODULES = {
    "ConnectorHarness": "hub.testing.harness",
    "build_hub": "hub.testing.harness",
    "MemoryChannel": "hub.testing.memory",
    "memory_channel_plugin": "hub.testing.memory",
    "ConnectorSuite": "hub.testing.suite",
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
