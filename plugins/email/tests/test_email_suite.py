"""The hub's shared channel suite, run against the email channel and its mail catcher over real SMTP.

The catcher offers STARTTLS with a throwaway CA and wants a login, so the suite's refused credentials are
a real refused login. People do not answer a survey by email (``inbound_replies=False``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from hub_email.catcher import MailCatcher

from hub.app import Hub
from hub.store.tables import Invitation
from hub.testing import Capabilities, ChannelHarness, ChannelSuite, MemoryChannel
from hub.testing.channel_suite import CHANNEL, _invite

#: the conftest's throwaway CA (``test_ca``): ``ca_file`` and ``server_context()``
CertificateAuthority = Any

LOGIN = ("hub", "catcher-password")
#: the link of an invitation, without a pre-selected score
SURVEY_LINK = re.compile(r"https?://[^\s\"'<>?]+/s/[A-Za-z0-9_-]+")


class EmailHarness:
    """The email channel pointed at a mail catcher; sends fail by the catcher deferring the recipient."""

    plugin = "email"
    capabilities = Capabilities(inbound_replies=False)
    recipient = "ada@example.com"

    def __init__(self, catcher: MailCatcher, ca: CertificateAuthority) -> None:
        self.catcher = catcher
        self.ca = ca

    def settings(self) -> dict[str, Any]:
        return {
            **self.catcher.channel_settings(),
            "ca_bundle": str(self.ca.ca_file),
            "username": LOGIN[0],
            "password": "env:EMAIL_SUITE_PASSWORD",
            "from_address": "feedback@acme.example",
            "max_per_second": None,
            "timeout": 5,
            "local_hostname": "hub.test",
        }

    def bad_settings(self) -> dict[str, Any]:
        return {**self.settings(), "password": "env:EMAIL_SUITE_WRONG_PASSWORD"}

    def environment(self) -> dict[str, str]:
        return {"EMAIL_SUITE_PASSWORD": LOGIN[1], "EMAIL_SUITE_WRONG_PASSWORD": "not-the-password"}

    def address(self) -> dict[str, str]:
        return {"email": self.recipient}

    def survey_link(self, address: str) -> str | None:
        for mail in reversed(self.catcher.messages):
            if address.lower() in (r.lower() for r in mail.rcpt_tos):
                match = SURVEY_LINK.search(mail.text or mail.html or "")
                return match.group(0) if match else None
        return None

    def fail_sends(self, count: int, status: int, retry_after: float | None = None) -> None:
        """SMTP has no status codes of HTTP nor a Retry-After: a failing provider defers the recipient."""
        if count:
            self.catcher.rejections[self.recipient] = "451 4.3.2 System not accepting messages, try later"
        else:
            self.catcher.rejections.pop(self.recipient, None)


@pytest.fixture
def secured_catcher(test_ca: CertificateAuthority) -> Iterator[MailCatcher]:
    with MailCatcher(tls_context=test_ca.server_context(), credentials=LOGIN) as running:
        yield running


class TestEmailChannelSuite(ChannelSuite):
    @pytest.fixture
    def harness(self, secured_catcher: MailCatcher, test_ca: CertificateAuthority) -> EmailHarness:
        return EmailHarness(secured_catcher, test_ca)

    async def test_provider_outage_retried_honouring_retry_after(
        self, hub: Hub, harness: ChannelHarness
    ) -> None:
        """SMTP says "try later" without saying when: the survey waits on this channel with the hub's
        backoff, never moves to the next channel, and goes out once the server takes mail again."""
        harness.fail_sends(1000, 451)
        invitation = await _invite(hub, harness.address())
        assert invitation.status == "scheduled", f"{invitation.status}: {invitation.reason}"
        assert not MemoryChannel.sent, "a deferral must not move the survey to the next channel"
        assert invitation.send_after is not None
        harness.fail_sends(0, 250)
        later = invitation.send_after + timedelta(seconds=1)
        hub.now = lambda: later
        await hub.engine.dispatch_due()
        async with hub.store.session() as s:
            again = await s.get(Invitation, invitation.id)
        assert again is not None and (again.status, again.channel) == ("sent", CHANNEL), again
