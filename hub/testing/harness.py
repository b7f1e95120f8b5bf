"""What a connector's tests provide to the shared suite, and a hub built around that connector.

The harness protocol is the whole contract between a plugin's tests and ``hub.testing.ConnectorSuite``;
docs/plugin-authors.md describes it field by field.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hub.app import Hub
from hub.config import parse_config
from hub.models import WebhookRequest
from hub.testing.memory import memory_channel_plugin

CONNECTOR = "crm"


@dataclass(frozen=True)
class Capabilities:
    """What the service behind a harness can do; the suite runs the tests that apply and reports the rest.

    ``webhooks``: the CRM sends signed webhooks (the harness implements ``closed_case_webhook`` and
    ``tamper``). ``polling``: ``fetch_events`` finds closed cases (the harness implements ``close_case``).
    A poll-only CRM sets ``webhooks=False, polling=True``; one of the two is needed. ``timeline``: the CRM
    keeps timeline (activity) records, so the hub writes one per answer and the harness implements
    ``timeline_entries``. ``inbound_replies`` (channels): people can answer through the channel (an SMS
    reply), so the harness implements ``inbound_reply``, ``tamper`` and ``messages_to`` (the two-way
    conversation: the follow-up question and the request for a number are texted back).
    ``delivery_statuses`` (channels): the provider reports on each message it was given (an SMS status
    callback), so the harness implements ``status_callback`` and ``last_message_id``.
    """

    webhooks: bool = True
    polling: bool = False
    timeline: bool = True
    inbound_replies: bool = True
    delivery_statuses: bool = False


def capabilities_of(harness: object) -> Capabilities:
    """The harness's declared capabilities; a harness that declares none has every default."""
    declared = getattr(harness, "capabilities", None)
    return declared if isinstance(declared, Capabilities) else Capabilities()


class ConnectorHarness(Protocol):
    """A connector plus its emulator, as the shared suite drives them.

    ``settings`` are the plugin's settings as an admin writes them in the config file (secrets as
    ``env:NAME``; ``environment`` gives their values). Optional attributes: ``plugin_modules`` (import
    paths, when the plugin is not installed as a distribution) and ``capabilities`` (a ``Capabilities``;
    every default when absent). Methods a capability does not need may be left out.
    """

    plugin: str

    def settings(self) -> dict[str, Any]:
        """Settings that reach the emulator with valid credentials."""
        ...

    def bad_settings(self) -> dict[str, Any]:
        """The same settings with credentials the emulator refuses."""
        ...

    def environment(self) -> dict[str, str]:
        """Values of the ``env:NAME`` secrets the settings use."""
        ...

    def closed_case_webhook(self) -> WebhookRequest:
        """Close a new case of a person with an email address in the emulator and return the webhook the
        CRM would send for it, correctly signed (the emulator does not deliver it itself).

        Needed with ``Capabilities.webhooks``."""
        ...

    def tamper(self, request: WebhookRequest) -> WebhookRequest:
        """The same webhook with its body changed after signing. Needed with ``Capabilities.webhooks``."""
        ...

    def fail_writes(self, count: int, status: int, retry_after: float | None = None) -> None:
        """Make the emulator answer the next ``count`` write calls with ``status`` (and Retry-After)."""
        ...

    def timeline_entries(self, response_id: str) -> int:
        """How many timeline records in the emulator hold this hub response id.

        Needed with ``Capabilities.timeline``."""
        ...


class PollingHarness(Protocol):
    """What a harness adds for ``Capabilities.polling``."""

    def close_case(self) -> str:
        """Close a new case of a person with an email address in the emulator, without any webhook, and
        return the case's record id: the connector's ``fetch_events`` must find it."""
        ...


def suite_config(harness: object, workdir: Path, **sync: Any) -> dict[str, Any]:
    """The config of a suite's hub: SQLite in ``workdir``, the harness's connector, the in-memory channel."""
    plugin: str = getattr(harness, "plugin")  # noqa: B009 - any object with the harness's attributes
    settings: dict[str, Any] = getattr(harness, "settings")()  # noqa: B009
    modules: Sequence[str] = getattr(harness, "plugin_modules", ())
    return {
        "hub": {
            "database_url": f"sqlite+aiosqlite:///{workdir / 'suite.db'}",
            "public_url": "http://127.0.0.1:9",
            "plugin_modules": list(modules),
        },
        "policy": {"min_days_between_surveys": 0},
        "sync": {"max_attempts": 3, "backoff_base_seconds": 0, "backoff_max_seconds": 0, **sync},
        "connectors": {CONNECTOR: {"plugin": plugin, "poll_interval_seconds": 0, **settings}},
        "channels": {"memory": {"plugin": "memory"}},
        "surveys": {"nps": {"kind": "nps"}},
        "campaigns": {
            "suite": {
                "trigger": {"connector": CONNECTOR, "event": "case.closed"},
                "survey": "nps",
                "channels": ["memory"],
                "write_back": {"timeline": capabilities_of(harness).timeline},
            }
        },
    }


async def build_hub(harness: ConnectorHarness, workdir: Path, settings: dict[str, Any] | None = None) -> Hub:
    """A hub on SQLite in ``workdir`` whose one connector is the harness's, plus an in-memory channel."""
    os.environ.update(harness.environment())
    data = suite_config(harness, workdir)
    if settings is not None:
        data["connectors"][CONNECTOR] = {"plugin": harness.plugin, "poll_interval_seconds": 0, **settings}
    config = parse_config(data, workdir / "suite.toml")
    return await Hub.open(config, plugin_objects=[memory_channel_plugin()])
