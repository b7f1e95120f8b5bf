"""The hub's shared channel suite, run against the SMS channel and its Twilio emulator over real HTTP.

Replies and status callbacks are signed by the emulator for the URL the suite's hub is public at, exactly
as Twilio signs them for the hub's public URL (the harness is ``sms_support.SmsHarness``).
"""

from __future__ import annotations

import pytest
from hub_sms.emulator import SmsEmulator
from sms_support import SmsHarness

from hub.testing import ChannelSuite


class TestSmsChannelSuite(ChannelSuite):
    @pytest.fixture
    def harness(self, emulator: SmsEmulator) -> SmsHarness:
        return SmsHarness(emulator)
