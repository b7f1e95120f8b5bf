"""A secret's value never reaches a log line, whoever logged it and however it slipped into the message."""

from __future__ import annotations

import logging

import structlog

from hub import logging as hub_logging
from tests.conftest import WEBHOOK_SECRET


async def test_secrets_are_scrubbed_from_structlog_and_stdlib_logs(make_hub, capsys, monkeypatch) -> None:
    hub = await make_hub()
    hub_logging.configure("debug")
    token = hub.settings["connectors.crm"].token.get_secret_value()
    structlog.get_logger("test").error("login failed", url=f"https://crm.example.com/?key={token}")
    logging.getLogger("third.party").warning("webhook secret was %s", WEBHOOK_SECRET)
    err = capsys.readouterr().err
    assert "login failed" in err and "webhook secret was" in err
    assert token not in err and WEBHOOK_SECRET not in err
    assert err.count("**********") == 2


async def test_settings_reprs_never_show_secrets(make_hub) -> None:
    hub = await make_hub()
    shown = repr(hub.config) + repr(hub.settings) + str(hub.connectors["crm"].diagnostics())
    assert "api-token-for-tests-42" not in shown
    assert WEBHOOK_SECRET not in shown
