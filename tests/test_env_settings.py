"""Plain settings (user names, org ids, tenants) may be written ``env:NAME`` like secrets, in plugins too."""

from __future__ import annotations

import pytest
from hub_email.config import EmailSettings
from hub_salesforce.config import SalesforceSettings
from hub_superoffice.config import SuperOfficeSettings
from pydantic import ValidationError


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXHUB_TEST_USER", "integration@example.com")
    monkeypatch.setenv("CXHUB_TEST_PASSWORD", "a-password-from-the-env")
    monkeypatch.setenv("CXHUB_TEST_ORG", "00D000000000001AAA")
    monkeypatch.setenv("CXHUB_TEST_EMPTY", "")


def test_salesforce_user_name_client_id_and_org_id_from_the_environment() -> None:
    settings = SalesforceSettings.model_validate(
        {
            "organization_id": "env:CXHUB_TEST_ORG",
            "auth": {
                "type": "password",
                "client_id": "env:CXHUB_TEST_USER",
                "client_secret": "env:CXHUB_TEST_PASSWORD",
                "username": "env:CXHUB_TEST_USER",
                "password": "env:CXHUB_TEST_PASSWORD",
            },
        }
    )
    assert settings.organization_id == "00D000000000001AAA"
    assert (settings.auth.username, settings.auth.client_id) == ("integration@example.com",) * 2


def test_superoffice_user_name_and_tenant_from_the_environment() -> None:
    basic = SuperOfficeSettings.model_validate(
        {
            "base_url": "https://crm.example.com/Cust1",
            "auth": {
                "type": "basic",
                "username": "env:CXHUB_TEST_USER",
                "password": "env:CXHUB_TEST_PASSWORD",
            },
        }
    )
    assert basic.auth.username == "integration@example.com"
    system = SuperOfficeSettings.model_validate(
        {
            "base_url": "https://crm.example.com/Cust1",
            "auth": {
                "type": "system_user",
                "application_token": "env:CXHUB_TEST_PASSWORD",
                "system_user_token": "env:CXHUB_TEST_PASSWORD",
                "private_key": "env:CXHUB_TEST_PASSWORD",
                "context_identifier": "env:CXHUB_TEST_ORG",
            },
        }
    )
    assert system.auth.context_identifier == "00D000000000001AAA"


def test_smtp_user_name_from_the_environment_and_an_empty_one_refused() -> None:
    base = {
        "host": "smtp.example.com",
        "from_address": "surveys@example.com",
        "password": "env:CXHUB_TEST_PASSWORD",
    }
    assert EmailSettings.model_validate({**base, "username": "env:CXHUB_TEST_USER"}).username == (
        "integration@example.com"
    )
    with pytest.raises(ValidationError, match="environment variable CXHUB_TEST_EMPTY is set but empty"):
        EmailSettings.model_validate({**base, "username": "env:CXHUB_TEST_EMPTY"})


def test_dynamics_client_and_tenant_ids_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from hub_dynamics.config import DynamicsSettings

    monkeypatch.setenv("CXHUB_TEST_TENANT", "contoso.onmicrosoft.com")
    monkeypatch.setenv("CXHUB_TEST_DATAVERSE", "https://contoso.crm4.dynamics.com")
    settings = DynamicsSettings.model_validate(
        {
            "url": "env:CXHUB_TEST_DATAVERSE",
            "tenant_id": "env:CXHUB_TEST_TENANT",
            "auth": {
                "type": "client_secret",
                "client_id": "env:CXHUB_TEST_ORG",
                "client_secret": "env:CXHUB_TEST_PASSWORD",
            },
        }
    )
    assert (settings.url, settings.tenant_id) == (
        "https://contoso.crm4.dynamics.com",
        "contoso.onmicrosoft.com",
    )
    assert settings.auth.client_id == "00D000000000001AAA"
