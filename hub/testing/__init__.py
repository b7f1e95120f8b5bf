"""Test kit for connector and channel authors: the shared connector suite and an in-memory channel.

A connector passes the same suite whether it is built in or a partner's (like Airbyte's standard tests):

    from hub.testing import ConnectorSuite

    class TestMyCrm(ConnectorSuite):
        @pytest.fixture
        def harness(self, my_emulator):
            return MyCrmHarness(my_emulator)   # implements hub.testing.ConnectorHarness
"""

from hub.testing.harness import ConnectorHarness, build_hub
from hub.testing.memory import MemoryChannel, memory_channel_plugin
from hub.testing.suite import ConnectorSuite

__all__ = ["ConnectorHarness", "ConnectorSuite", "MemoryChannel", "build_hub", "memory_channel_plugin"]
