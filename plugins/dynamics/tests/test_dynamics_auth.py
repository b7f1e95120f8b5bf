"""Auth through msal: client secret or certificate, one new token and one retry on 401, outages that never
reached Dataverse cost no attempt, and ``check`` names every missing column with its config key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dynamics_support import CLIENT_ID, TENANT, make_connector, make_emulator, make_settings, seed_case
from hub_dynamics.config import DynamicsSettings
from hub_dynamics.connector import DynamicsConnector
from hub_dynamics.emulator import DataverseEmulator, certificate_pair, serve

from hub import AuthError, TransientError
from hub.testing.server import TlsServer


def _token_requests(emulator: DataverseEmulator) -> int:
    return len([c for c in emulator.calls_of("login") if c.method == "POST"])


@pytest.mark.asyncio
async def test_a_refused_token_is_renewed_once(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    contact = seed_case(emulator)[1]
    assert await connector.get_person(contact) is not None
    assert await connector.get_person(contact) is not None
    assert _token_requests(emulator) == 1  # msal's cache serves the second call
    emulator.revoke_tokens()
    person = await connector.get_person(contact)
    assert person is not None and person.email == "emma.clarke@brightwater.example"
    assert _token_requests(emulator) == 2
    refused = [c for c in emulator.calls_of("api") if c.status == 401]
    assert len(refused) == 1


@pytest.mark.asyncio
async def test_a_token_refused_twice_is_an_auth_error(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    contact = seed_case(emulator)[1]
    emulator.token_seconds = -10  # every token it issues is already expired
    with pytest.raises(AuthError):
        await connector.get_person(contact)
    assert len([c for c in emulator.calls_of("api") if c.status == 401]) == 2


@pytest.mark.asyncio
async def test_certificate_credentials(
    emulator: DataverseEmulator, server: TlsServer, tmp_path: Path
) -> None:
    app = "99999999-8888-7777-6666-555555555555"
    both, certificate = certificate_pair(app)
    emulator.register_app(app, certificate_pem=certificate)
    pem = tmp_path / "d365.pem"
    pem.write_text(both, encoding="ascii")
    settings = make_settings(
        server, auth={"type": "certificate", "client_id": app, "certificate": f"file:{pem}"}
    )
    connector = make_connector(settings)
    try:
        results = await connector.check()
        assert all(r.ok for r in results), results
    finally:
        await connector.aclose()
    # a certificate the app does not know is refused
    other, _ = certificate_pair("someone-else")
    pem.write_text(other, encoding="ascii")
    connector = make_connector(
        make_settings(server, auth={"type": "certificate", "client_id": app, "certificate": f"file:{pem}"})
    )
    try:
        [result] = await connector.check()
        assert not result.ok and "invalid_client" in result.detail
    finally:
        await connector.aclose()


@pytest.mark.asyncio
async def test_unknown_tenant_is_named(emulator: DataverseEmulator, server: TlsServer) -> None:
    connector = make_connector(make_settings(server, tenant_id="nobody.onmicrosoft.com"))
    try:
        [result] = await connector.check()
        assert not result.ok and "tenant_id" in result.detail
    finally:
        await connector.aclose()


@pytest.mark.asyncio
async def test_an_unreachable_environment_is_transient_and_unsent(server: TlsServer) -> None:
    settings = make_settings(server)
    closed = DynamicsSettings.model_validate(
        {
            **settings.model_dump(),
            "url": "https://127.0.0.1:9",
            "authority_host": "https://127.0.0.1:9",
            "auth": {
                "type": "client_secret",
                "client_id": CLIENT_ID,
                "client_secret": "env:CXHUB_TEST_D365_SECRET",
            },
        }
    )
    connector = make_connector(closed)
    try:
        with pytest.raises(TransientError) as refused:
            await connector.get_person("5b0c2f5e-8a73-4f0e-9d7e-0c1d2e3f4a5b")
        assert refused.value.sent is False
    finally:
        await connector.aclose()


@pytest.mark.asyncio
async def test_check_names_every_missing_column_with_its_key() -> None:
    emulator = make_emulator(solution=False)
    with serve(emulator) as server:
        connector = make_connector(make_settings(server))
        try:
            results = {r.name: r for r in await connector.check()}
        finally:
            await connector.aclose()
    assert results["credentials"].ok
    missing = results["contact.cxhub_lastscore"]
    assert not missing.ok and "contact.latest_score" in missing.detail and "solution" in missing.detail
    assert "case.score_column" in results["incident.cxhub_feedbackscore"].detail
    assert (
        not results["cxhub_surveyresponse"].ok
        and "timeline.enabled" in results["cxhub_surveyresponse"].detail
    )
    assert results["incident change tracking"].ok


@pytest.mark.asyncio
async def test_check_asks_for_change_tracking(
    emulator: DataverseEmulator, connector: DynamicsConnector
) -> None:
    emulator.tables["opportunity"].track_changes = False
    results = {r.name: r for r in await connector.check()}
    assert results["incident change tracking"].ok
    tracking = results["opportunity change tracking"]
    assert not tracking.ok and "Track changes" in tracking.detail and "poll_opportunities" in tracking.detail


def test_importing_the_plugin_loads_no_emulator() -> None:
    """Production code never imports the emulator (or trustme): the plugin registers it lazily."""
    code = (
        "import sys, hub_dynamics\n"
        "offered = []\n"
        "hub_dynamics.hub_register_emulators(register=offered.append)\n"
        "hub_dynamics.hub_register_connectors(register=offered.append)\n"
        "assert [o.plugin if hasattr(o, 'plugin') else o.name for o in offered] == ['dynamics', 'dynamics']\n"
        "bad = [m for m in ('hub_dynamics.emulator', 'hub_dynamics.demo', 'trustme', 'hub.testing') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ}, timeout=60)


def test_settings_refuse_plain_http_and_unknown_keys() -> None:
    base = {
        "tenant_id": TENANT,
        "auth": {"type": "client_secret", "client_id": "x", "client_secret": "env:PATH"},
    }
    with pytest.raises(ValueError, match="https"):
        DynamicsSettings.model_validate({**base, "url": "http://contoso.crm.dynamics.com"})
    with pytest.raises(ValueError, match="contact_colums"):
        DynamicsSettings.model_validate(
            {**base, "url": "https://contoso.crm.dynamics.com", "contact_colums": {}}
        )
    sovereign = DynamicsSettings.model_validate(
        {
            **base,
            "url": "https://contoso.crm.microsoftdynamics.us",
            "authority_host": "https://login.microsoftonline.us",
        }
    )
    assert sovereign.authority == f"https://login.microsoftonline.us/{TENANT}"
    assert sovereign.scope == "https://contoso.crm.microsoftdynamics.us/.default"


@pytest.mark.asyncio
async def test_diagnostics_redact_every_secret(connector: DynamicsConnector) -> None:
    text = repr(connector.diagnostics())
    assert "client-secret-for-tests" not in text and "webhook-key-for-tests" not in text
    assert "**********" in text


@pytest.mark.asyncio
async def test_msal_http_keeps_the_hubs_timeouts_and_sends_form_text() -> None:
    import asyncio

    import httpx
    from hub_dynamics.auth import MsalHttp

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), timeout=7.0)
    http = MsalHttp(client, asyncio.get_running_loop())
    reply = await asyncio.to_thread(
        http.post,
        "https://login.example/t/oauth2/v2.0/token",
        data={"client_assertion": b"eyJ.x.y"},
        timeout=None,
    )
    await client.aclose()
    assert reply.status_code == 200
    assert seen[0].content == b"client_assertion=eyJ.x.y"
    assert seen[0].extensions["timeout"]["read"] == 7.0
