"""Each way in - system user, refresh token, Basic - with good and bad credentials, and what an admin sees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
import respx
from hub_superoffice.connector import SuperOfficeConnector
from hub_superoffice.emulator import BackgroundServer, DemoSeed, SuperOfficeEmulator, generate_key_pair
from pydantic import SecretStr
from superoffice_support import LOGIN_PATH, login_body, make_connector, make_settings

from hub import AuthError, TransientError

LOGIN = LOGIN_PATH


@pytest.mark.parametrize("kind", ["system_user", "refresh_token", "basic"])
async def test_good_credentials_read_a_person(
    kind: str,
    emulator: SuperOfficeEmulator,
    server: BackgroundServer,
    seed: DemoSeed,
    partner_keys: tuple[str, str],
) -> None:
    connector = make_connector(make_settings(server, partner_keys[0], kind))
    try:
        person = await connector.get_person(str(seed.persons["karen"]))
        checks = await connector.check()
    finally:
        await connector.aclose()
    assert person is not None and person.email == "karen.jensen@nordlys.example"
    assert checks[0].name == "credentials" and checks[0].ok


@pytest.mark.parametrize(
    ("kind", "auth", "reason"),
    [
        ("system_user", {"application_token": "wrong-app-token"}, "Unknown application token"),
        ("system_user", {"system_user_token": "CXHub-someone-else"}, "Unknown system user token"),
        ("system_user", {"context_identifier": "Cust99999"}, "not approved for this tenant"),
        ("refresh_token", {"refresh_token": "revoked-refresh-token"}, "invalid_grant"),
        ("refresh_token", {"client_secret": "wrong-client-secret"}, "invalid_client"),
        ("basic", {"password": "wrong-password"}, "Wrong user name or password"),
    ],
)
async def test_bad_credentials_raise_auth_error_with_the_reason(
    kind: str,
    auth: dict[str, str],
    reason: str,
    server: BackgroundServer,
    seed: DemoSeed,
    partner_keys: tuple[str, str],
) -> None:
    overrides = {
        key: (value if key == "context_identifier" else SecretStr(value)) for key, value in auth.items()
    }
    connector = make_connector(make_settings(server, partner_keys[0], kind, auth=overrides))
    try:
        with pytest.raises(AuthError, match=reason):
            await connector.get_person(str(seed.persons["karen"]))
        checks = await connector.check()
    finally:
        await connector.aclose()
    assert [(c.name, c.ok) for c in checks] == [("credentials", False)]
    assert reason in checks[0].detail


async def test_a_key_superoffice_does_not_know_is_refused(
    emulator: SuperOfficeEmulator, server: BackgroundServer, seed: DemoSeed
) -> None:
    other_private_key, _ = generate_key_pair()
    connector = make_connector(make_settings(server, other_private_key))
    try:
        with pytest.raises(AuthError, match="Signature"):
            await connector.get_person(str(seed.persons["karen"]))
    finally:
        await connector.aclose()
    assert emulator.count_calls(path_contains="/api/v1/") == 0


async def test_basic_refusal_is_not_retried(
    emulator: SuperOfficeEmulator, server: BackgroundServer, seed: DemoSeed, partner_keys: tuple[str, str]
) -> None:
    connector = make_connector(
        make_settings(server, partner_keys[0], "basic", auth={"password": SecretStr("wrong-password")})
    )
    try:
        with pytest.raises(AuthError):
            await connector.get_person(str(seed.persons["karen"]))
    finally:
        await connector.aclose()
    assert emulator.count_calls(path_contains="/Person/", status=401) == 1


async def test_one_ticket_serves_many_calls(
    emulator: SuperOfficeEmulator, connector: SuperOfficeConnector, seed: DemoSeed
) -> None:
    for person_id in seed.persons.values():
        await connector.get_person(str(person_id))
    assert emulator.count_calls("POST", LOGIN) == 1


async def test_unreachable_login_is_transient_and_check_says_so(
    server: BackgroundServer, seed: DemoSeed, partner_keys: tuple[str, str]
) -> None:
    connector = make_connector(make_settings(server, partner_keys[0]))
    with respx.mock(assert_all_called=True) as mock:
        mock.post(f"{server.url}{LOGIN}").mock(side_effect=httpx.ConnectError("connection refused"))
        try:
            with pytest.raises(TransientError, match="ConnectError"):
                await connector.get_person(str(seed.persons["karen"]))
            checks = await connector.check()
        finally:
            await connector.aclose()
    assert [(c.name, c.ok) for c in checks] == [("connection", False)]


async def test_busy_login_is_transient_with_retry_after(
    server: BackgroundServer, seed: DemoSeed, partner_keys: tuple[str, str]
) -> None:
    connector = make_connector(make_settings(server, partner_keys[0]))
    with respx.mock(assert_all_called=True) as mock:
        mock.post(f"{server.url}{LOGIN}").mock(
            return_value=httpx.Response(503, headers={"Retry-After": "30"})
        )
        try:
            with pytest.raises(TransientError) as caught:
                await connector.get_person(str(seed.persons["karen"]))
        finally:
            await connector.aclose()
    assert caught.value.retry_after == 30


def test_emulator_refuses_a_stale_signed_token(
    server: BackgroundServer, partner_keys: tuple[str, str]
) -> None:
    fresh = httpx.post(f"{server.url}{LOGIN}", json=login_body(partner_keys[0], datetime.now(UTC)))
    stale = httpx.post(
        f"{server.url}{LOGIN}", json=login_body(partner_keys[0], datetime.now(UTC) - timedelta(minutes=20))
    )
    assert fresh.json()["IsSuccessful"] is True
    assert stale.json()["IsSuccessful"] is False
    assert "too old" in stale.json()["ErrorMessage"]
