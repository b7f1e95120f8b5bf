"""Fixtures of the email channel's tests: a real SMTP server (the mail catcher), a test CA, messages."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from hub_email.catcher import MailCatcher
from hub_email.channel import EmailChannel
from hub_email.config import EmailSettings

from hub import Branding, PluginContext, Recipient, ScaleOption, SurveyKind, SurveyMessage

SENDER = "feedback@acme.example"  # from_address of every test channel


@pytest.fixture
def catcher() -> Iterator[MailCatcher]:
    """A plain SMTP server on a free port (no TLS, no login), like a local relay."""
    with MailCatcher() as running:
        yield running


class TestCA:
    """A throwaway CA that signed the catcher's certificate; ``ca_file`` is what the channel trusts."""

    def __init__(self, tmp_path: Path) -> None:
        self.ca = trustme.CA()
        self.ca_file = tmp_path / "test-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        return context


@pytest.fixture
def test_ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
def ctx() -> PluginContext:
    return PluginContext(instance="mail", public_url="https://hub.example", http_client=httpx.AsyncClient)


@pytest.fixture
async def make_channel(ctx: PluginContext) -> AsyncIterator[Callable[..., EmailChannel]]:
    """Build channels pointed at a catcher; every channel is closed after the test."""
    channels: list[EmailChannel] = []

    def make(catcher: MailCatcher, **settings: Any) -> EmailChannel:
        values: dict[str, Any] = {
            **catcher.channel_settings(),
            "from_address": SENDER,
            "max_per_second": None,
            "timeout": 5,
            "local_hostname": "hub.test",
            **settings,
        }
        channel = EmailChannel(EmailSettings.model_validate(values), ctx)
        channels.append(channel)
        return channel

    yield make
    for channel in channels:
        await channel.aclose()


def _survey(**changes: Any) -> SurveyMessage:
    token = changes.pop("token", "tok123")
    values: dict[str, Any] = {
        "invitation_id": 7,
        "campaign": "support",
        "recipient": Recipient(name="Ann Lee", email="ann@example.com", language="en"),
        "language": "en",
        "branding": Branding(company_name="Acme", colour="#1f5fa8"),
        "survey_kind": SurveyKind.NPS,
        "subject": "How did we do?",
        "intro": "You recently contacted our support team.",
        "question": "How likely are you to recommend Acme to a friend?",
        "low_label": "Not at all likely",
        "high_label": "Extremely likely",
        "options": [
            ScaleOption(value=i, label=str(i), url=f"https://hub.example/s/{token}?rating={i}")
            for i in range(11)
        ],
        "survey_url": f"https://hub.example/s/{token}",
        "unsubscribe_url": f"https://hub.example/u/{token}",
        "unsubscribe_text": "Unsubscribe from surveys",
    }
    values.update(changes)
    return SurveyMessage(**values)


@pytest.fixture
def survey() -> Callable[..., SurveyMessage]:
    """Make an English NPS invitation to Ann (ann@example.com); keyword arguments replace any field."""
    return _survey


class _Links(HTMLParser):
    """Every ``<a>`` of an HTML body: its href, its text and its aria-label."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.links: list[dict[str, str]] = []
        self._open: dict[str, str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            found = {name: value or "" for name, value in attrs}
            self._open = {
                "href": found.get("href", ""),
                "aria-label": found.get("aria-label", ""),
                "text": "",
            }
            self.links.append(self._open)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open["text"] += data.strip()


@pytest.fixture
def links() -> Callable[[str | None], list[dict[str, str]]]:
    """Read the links of an HTML body: one dict (href, text, aria-label) per ``<a>``, in order."""
    return lambda html: _Links(html or "").links
