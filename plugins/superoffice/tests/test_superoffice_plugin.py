"""The plugin as the hub loads it: registration, settings from a config file, diagnostics, pure rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hub_superoffice import hub_register_connectors
from hub_superoffice.config import SuperOfficeSettings, SystemUserAuth
from hub_superoffice.connector import SuperOfficeConnector
from hub_superoffice.mapping import parse_datetime, render, ticket_event_id
from pydantic import ValidationError

from hub import Connector, ConnectorType, PluginContext
from hub.http import make_client

CONFIG: dict[str, Any] = {
    "base_url": "https://sod.superoffice.com/Cust12345/",
    "auth": {
        "type": "system_user",
        "application_token": "env:SO_APP_TOKEN",
        "system_user_token": "env:SO_SYSTEM_USER_TOKEN",
        "private_key": "env:SO_PRIVATE_KEY",
        "context_identifier": "Cust12345",
    },
    "webhook_secret": "env:SO_WEBHOOK_SECRET",
}


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch, partner_keys: tuple[str, str]) -> dict[str, str]:
    values = {
        "SO_APP_TOKEN": "app-token-value-1234",
        "SO_SYSTEM_USER_TOKEN": "system-user-token-value-5678",
        "SO_PRIVATE_KEY": partner_keys[0],
        "SO_WEBHOOK_SECRET": "webhook-secret-value-9012",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def _registered() -> ConnectorType[Any]:
    registered: list[ConnectorType[Any]] = []
    hub_register_connectors(registered.append)
    [connector_type] = registered
    return connector_type


def test_registers_the_superoffice_connector_type(secrets_env: dict[str, str]) -> None:
    connector_type = _registered()
    settings = connector_type.settings.model_validate(CONFIG)
    connector = connector_type.factory(
        settings, PluginContext(instance="so", public_url="https://hub.example", http_client=make_client)
    )
    assert connector_type.name == "superoffice"
    assert isinstance(connector, Connector) and isinstance(connector, SuperOfficeConnector)
    assert settings.api_url == "https://sod.superoffice.com/Cust12345/api/v1"
    assert settings.login_url == "https://sod.superoffice.com/Login/api/PartnerSystemUser/Authenticate"
    assert isinstance(settings.auth, SystemUserAuth)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"auth": {**CONFIG["auth"], "application_token": "literal-token"}}, "env:NAME or file:/path"),
        ({"auth": {**CONFIG["auth"], "type": "password"}}, "type"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"tiemline": {}}, "tiemline"),
        ({"timeline": {"mode": "extra_table", "table": "feedback"}}, "y_"),
        ({"base_url": "sod.superoffice.com/Cust12345"}, "absolute"),
    ],
)
def test_bad_settings_are_refused_with_the_key(
    secrets_env: dict[str, str], change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        SuperOfficeSettings.model_validate({**CONFIG, **change})


def test_diagnostics_hold_no_secret(secrets_env: dict[str, str]) -> None:
    connector = SuperOfficeConnector(
        SuperOfficeSettings.model_validate(CONFIG),
        PluginContext(instance="so", public_url="https://hub.example", http_client=make_client),
    )
    text = json.dumps(connector.diagnostics())
    assert "Cust12345" in text and "https://hub.example/hooks/so" in text
    for value in secrets_env.values():
        assert value.strip()[:40] not in text


def test_event_ids_do_not_depend_on_how_the_time_was_written() -> None:
    oslo = parse_datetime("2030-05-01T12:15:30.1234567+02:00")
    utc = parse_datetime("2030-05-01T10:15:30Z")
    encoded = parse_datetime("[DT:05/01/2030 10:15:30.0000000]")
    assert oslo is not None and utc is not None and encoded is not None
    assert ticket_event_id(7, oslo) == ticket_event_id(7, utc) == ticket_event_id(7, encoded)
    assert ticket_event_id(7, utc) == "ticket:7:closed:20300501T101530Z"
    assert parse_datetime("0001-01-01T00:00:00") is None
    assert parse_datetime(datetime(2030, 1, 1, tzinfo=UTC) + timedelta(hours=1)) == datetime(
        2030, 1, 1, 1, tzinfo=UTC
    )


def test_templates_leave_out_what_is_missing() -> None:
    text = render(
        "Feedback: [[rating]] ([[category]])\n[[comment]]", {"rating": 9, "category": None, "comment": None}
    )
    assert text == "Feedback: 9"
