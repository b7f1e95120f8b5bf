"""What a connector's tests provide to the shared suite, and a hub built around that connector."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from hub.app import Hub
from hub.config import parse_config
from hub.models import WebhookRequest
from hub.testing.memory import memory_channel_plugin

CONNECTOR = "crm"


class ConnectorHarness(Protocol):
    """A connector plus its emulator, as the shared suite drives them.

    ``settings`` are the plugin's settings as an admin writes them in the config file (secrets as
    ``env:NAME``; ``environment`` gives their values). A harness may also set ``plugin_modules`` (import
    paths) when its plugin is not installed as a distribution.
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
        CRM would send for it, correctly signed (the emulator does not deliver it itself)."""
        ...

    def tamper(self, request: WebhookRequest) -> WebhookRequest:
        """The same webhook with its body changed after signing."""
        ...

    def fail_writes(self, count: int, status: int, retry_after: float | None = None) -> None:
        """Make the emulator answer the next ``count`` write calls with ``status`` (and Retry-After)."""
        ...

    def timeline_entries(self, response_id: str) -> int:
        """How many timeline records in the emulator hold this hub response id."""
        ...


def suite_config(harness: ConnectorHarness, workdir: Path, **sync: Any) -> dict[str, Any]:
    return {
        "hub": {
            "database_url": f"sqlite+aiosqlite:///{workdir / 'suite.db'}",
            "public_url": "http://127.0.0.1:9",
            "plugin_modules": list(getattr(harness, "plugin_modules", [])),
        },
        "policy": {"min_days_between_surveys": 0},
        "sync": {"max_attempts": 3, "backoff_base_seconds": 0, "backoff_max_seconds": 0, **sync},
        "connectors": {
            CONNECTOR: {"plugin": harness.plugin, "poll_interval_seconds": 0, **harness.settings()}
        },
        "channels": {"memory": {"plugin": "memory"}},
        "surveys": {"nps": {"kind": "nps"}},
        "campaigns": {
            "suite": {
                "trigger": {"connector": CONNECTOR, "event": "case.closed"},
                "survey": "nps",
                "channels": ["memory"],
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
