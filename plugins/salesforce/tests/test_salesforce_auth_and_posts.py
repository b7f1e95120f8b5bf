"""Logging in every supported way, the Case's internal comment and Chatter post, and a spent API budget as an
admin sees it in ``cxhub status``.

Everything runs against the emulator over real HTTPS (a test CA); nothing here loosens what it checks.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
import requests
from hub_salesforce.auth import JWT_GRANT
from hub_salesforce.config import SalesforceSettings
from hub_salesforce.connector import SalesforceConnector
from hub_salesforce.emulator import SalesforceEmulator, TlsServer
from pydantic import SecretStr
from salesforce_support import (
    CLIENT_ID,
    CLIENT_SECRET,
    CONSUMER_KEY,
    USERNAME,
    WEBHOOK_SECRET,
    SalesforceHarness,
    make_connector,
    make_settings,
)
from sqlalchemy import select
from typer.testing import CliRunner

from hub import AuthError, CaseFeedback, NpsCategory, TransientError, WriteBackItem
from hub.store.tables import SyncRun
from hub.testing import build_hub
from hub.testing.harness import CONNECTOR
from hub.testing.memory import MemoryChannel
from hub.testing.suite import _answer

PASSWORD = "Tr0ub4dor-and-3-for-tests"
SECURITY_TOKEN = "Sx7TokenForTests9"
WRONG_SECRET = "not-the-secret-Qv83kz"
AUTH_TYPES = ["jwt_bearer", "client_credentials", "password"]
TOKEN_PATH = "/services/oauth2/token"
PRODUCTION = "https://login.salesforce.com"
SANDBOX = "https://test.salesforce.com"
SECRET_KEYS = frozenset({"private_key", "client_secret", "password", "security_token"})


# --- helpers ------------------------------------------------------------------------------------


def auth_section(kind: str, private_key: str, **override: Any) -> dict[str, Any]:
    """The ``auth`` table of the settings for one flow, with the emulator's credentials."""
    if kind == "jwt_bearer":
        section: dict[str, Any] = {
            "type": kind,
            "consumer_key": CONSUMER_KEY,
            "username": USERNAME,
            "private_key": SecretStr(private_key),
        }
    elif kind == "client_credentials":
        section = {"type": kind, "client_id": CLIENT_ID, "client_secret": SecretStr(CLIENT_SECRET)}
    else:
        section = {
            "type": kind,
            "client_id": CLIENT_ID,
            "client_secret": SecretStr(CLIENT_SECRET),
            "username": USERNAME,
            "password": SecretStr(PASSWORD),
            "security_token": SecretStr(SECURITY_TOKEN),
        }
    return {**section, **{k: SecretStr(v) if k in SECRET_KEYS else v for k, v in override.items()}}


def connector_for(
    kind: str, server: TlsServer, emulator: SalesforceEmulator, private_key: str, **override: Any
) -> SalesforceConnector:
    """A connector logging in with ``kind``; the org knows the password user, as an admin set it up."""
    emulator.password_users[USERNAME] = PASSWORD + SECURITY_TOKEN  # Salesforce: password + token
    settings = make_settings(server, private_key, emulator, auth=auth_section(kind, private_key, **override))
    return make_connector(settings)


def token_requests(connector: SalesforceConnector) -> list[dict[str, str]]:
    """Record every token request the connector sends, as it went over the wire: its form fields, and
    the URL it was posted to under the key ``url``."""
    sent: list[dict[str, str]] = []

    def hook(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if response.url.endswith(TOKEN_PATH):
            body = response.request.body or ""
            text = body.decode() if isinstance(body, bytes) else str(body)
            sent.append({"url": response.url, **{k: v[0] for k, v in parse_qs(text).items()}})

    connector.client.session.hooks["response"].append(hook)
    return sent


def feedback_item(
    case_id: str, response_id: str, item_id: int = 1, *, comment: str, internal_comment: bool = True
) -> WriteBackItem:
    return WriteBackItem(
        id=item_id,
        key=f"case:{response_id}",
        record_id=case_id,
        payload=CaseFeedback(
            response_id=response_id,
            rating=3,
            score=30,
            category=NpsCategory.DETRACTOR,
            comment=comment,
            processed_at=datetime.now(UTC),
            internal_comment=internal_comment,
        ),
    )


def closed_case(emulator: SalesforceEmulator, n: int = 0) -> str:
    contact = emulator.add_contact("Nils", f"Aas{n}", email=f"nils.{n}@nordlys.example")
    return str(emulator.close_case(emulator.add_case("Invoice wrong", contact))["Id"])


# --- logging in ---------------------------------------------------------------------------------


async def test_client_credentials_log_in_on_the_my_domain_host_and_the_connector_queries(
    server: TlsServer, emulator: SalesforceEmulator, app_keys: tuple[str, str]
) -> None:
    contact = emulator.add_contact("Ane", "Moe", email="ane.moe@nordlys.example")
    connector = connector_for("client_credentials", server, emulator, app_keys[0])
    sent = token_requests(connector)
    try:
        person = await connector.find_person("ane.moe@nordlys.example", None)
        checks = await connector.check()
    finally:
        await connector.aclose()
    assert person is not None and person.crm_id == contact
    assert checks[0].name == "credentials" and checks[0].ok, checks[0]
    assert sent[0] == {
        "url": f"{server.url}{TOKEN_PATH}",  # the My Domain host the admin configured as login_url
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    assert [c.status for c in emulator.calls_to("POST", TOKEN_PATH)] == [200]
    assert connector.client.instance_url == server.url  # the instance the token endpoint named


async def test_wrong_client_secret_is_an_auth_error_that_names_the_problem_not_the_secret(
    server: TlsServer, emulator: SalesforceEmulator, app_keys: tuple[str, str]
) -> None:
    connector = connector_for("client_credentials", server, emulator, app_keys[0], client_secret=WRONG_SECRET)
    try:
        with pytest.raises(AuthError) as refused:
            await connector.client.connect()
        checks = await connector.check()
    finally:
        await connector.aclose()
    message = str(refused.value)
    assert "client_credentials" in message and "invalid_client" in message and "HTTP 400" in message
    assert WRONG_SECRET not in message and CLIENT_SECRET not in message
    assert [(c.name, c.ok) for c in checks] == [("credentials", False)]
    assert "invalid_client" in checks[0].detail and WRONG_SECRET not in checks[0].detail
    assert emulator.logins == 0


async def test_legacy_password_login_appends_the_security_token(
    server: TlsServer, emulator: SalesforceEmulator, app_keys: tuple[str, str]
) -> None:
    contact = emulator.add_contact("Siv", "Ruud", email="siv.ruud@nordlys.example")
    connector = connector_for("password", server, emulator, app_keys[0])
    sent = token_requests(connector)
    try:
        assert (await connector.get_person(contact)) is not None
    finally:
        await connector.aclose()
    assert sent[0]["grant_type"] == "password" and sent[0]["username"] == USERNAME
    assert sent[0]["password"] == PASSWORD + SECURITY_TOKEN
    assert emulator.logins == 1


@pytest.mark.parametrize(
    "override",
    [{"password": "Tr0ub4dor-and-4"}, {"security_token": "an-old-reset-token"}],
    ids=["wrong password", "stale security token"],
)
async def test_legacy_password_login_with_wrong_credentials_is_an_auth_error(
    server: TlsServer, emulator: SalesforceEmulator, app_keys: tuple[str, str], override: dict[str, str]
) -> None:
    connector = connector_for("password", server, emulator, app_keys[0], **override)
    try:
        with pytest.raises(AuthError) as refused:
            await connector.find_person("anyone@nordlys.example", None)
    finally:
        await connector.aclose()
    message = str(refused.value)
    assert "password" in message and "invalid_grant" in message and "authentication failure" in message
    for secret in [PASSWORD, SECURITY_TOKEN, CLIENT_SECRET, *override.values()]:
        assert secret not in message
    assert emulator.logins == 0


async def test_jwt_assertion_claims_as_salesforce_requires(
    server: TlsServer, emulator: SalesforceEmulator, app_keys: tuple[str, str]
) -> None:
    connector = connector_for("jwt_bearer", server, emulator, app_keys[0])
    sent = token_requests(connector)
    try:
        await connector.client.connect()
    finally:
        await connector.aclose()
    assert [(form["url"], form["grant_type"]) for form in sent] == [(f"{server.url}{TOKEN_PATH}", JWT_GRANT)]
    assert jwt.get_unverified_header(sent[0]["assertion"])["alg"] == "RS256"
    claims = jwt.decode(sent[0]["assertion"], app_keys[1], algorithms=["RS256"], audience=PRODUCTION)
    assert claims["iss"] == CONSUMER_KEY
    assert claims["sub"] == USERNAME
    # posted to the org's own host, yet the audience is Salesforce's authorization server
    assert claims["aud"] == PRODUCTION != connector.settings.login_url
    assert 60 < claims["exp"] - time.time() <= 180, "Salesforce takes assertions that expire within 3 min"
    assert emulator.logins == 1


@pytest.mark.parametrize(
    ("login_url", "audience"),
    [
        ("https://login.salesforce.com", PRODUCTION),
        ("https://acme.my.salesforce.com", PRODUCTION),
        ("https://test.salesforce.com", SANDBOX),
        ("https://acme--uat.sandbox.my.salesforce.com", SANDBOX),
    ],
)
def test_the_jwt_audience_is_the_authorization_server_not_the_my_domain(
    login_url: str, audience: str
) -> None:
    settings = SalesforceSettings.model_validate(
        {
            "login_url": login_url,
            "auth": {
                "type": "jwt_bearer",
                "consumer_key": "k",
                "username": "u",
                "private_key": SecretStr("x"),
            },
        }
    )
    assert settings.jwt_audience == audience


async def test_jwt_with_a_wrong_audience_is_refused(
    server: TlsServer, emulator: SalesforceEmulator, app_keys: tuple[str, str]
) -> None:
    connector = connector_for("jwt_bearer", server, emulator, app_keys[0], audience=server.url)  # My Domain
    try:
        with pytest.raises(AuthError) as refused:
            await connector.client.connect()
    finally:
        await connector.aclose()
    assert "invalid_grant" in str(refused.value) and "audience is invalid" in str(refused.value)
    assert emulator.logins == 0


@pytest.mark.parametrize("kind", AUTH_TYPES)
async def test_an_expired_session_logs_in_again_exactly_once(
    server: TlsServer, emulator: SalesforceEmulator, app_keys: tuple[str, str], kind: str
) -> None:
    contact = emulator.add_contact("Tor", "Vik", email="tor.vik@nordlys.example")
    connector = connector_for(kind, server, emulator, app_keys[0])
    sent = token_requests(connector)
    try:
        assert (await connector.get_person(contact)) is not None
        emulator.expire_sessions()  # the session dies (timeout, or an admin revoked it)
        person = await connector.find_person("tor.vik@nordlys.example", None)
        assert (await connector.get_person(contact)) == person  # the new session keeps working
    finally:
        await connector.aclose()
    assert person is not None and person.crm_id == contact
    assert len(sent) == 2 and {form["grant_type"] for form in sent} == {sent[0]["grant_type"]}
    assert connector.client.logins == 2 and emulator.logins == 2
    refused = [c for c in emulator.calls if c.status == 401]
    assert len(refused) == 1, "one refused call, then the renewed session is used"


async def test_concurrent_calls_on_an_expired_session_share_one_new_login(
    server: TlsServer, emulator: SalesforceEmulator, app_keys: tuple[str, str]
) -> None:
    contacts = [emulator.add_contact("Mia", f"Lie{n}", email=f"mia.{n}@nordlys.example") for n in range(8)]
    connector = connector_for("jwt_bearer", server, emulator, app_keys[0])
    try:
        await connector.client.connect()
        emulator.expire_sessions()
        emulator.latency_seconds = 0.05  # the calls overlap on the connector's worker threads
        people = await asyncio.gather(*(connector.get_person(c) for c in contacts))
    finally:
        await connector.aclose()
    assert [p.crm_id if p else None for p in people] == contacts
    assert len([c for c in emulator.calls if c.status == 401]) > 1, "several calls found the session gone"
    assert connector.client.logins == 2 and len(emulator.calls_to("POST", TOKEN_PATH)) == 2


async def test_an_expired_session_whose_renewal_is_refused_is_an_auth_error(
    server: TlsServer, emulator: SalesforceEmulator, app_keys: tuple[str, str]
) -> None:
    connector = connector_for("client_credentials", server, emulator, app_keys[0])
    try:
        await connector.client.connect()
        emulator.client_secret = "rotated-by-an-admin"  # the app's secret changed while the hub ran
        emulator.expire_sessions()
        with pytest.raises(AuthError) as refused:
            await connector.find_person("anyone@nordlys.example", None)
        # the error's context (the 401 inside simple-salesforce) holds a pooled connection: keep the text only
        message = str(refused.value)
        del refused
    finally:
        await connector.aclose()
    assert "client_credentials" in message and "invalid_client" in message
    assert CLIENT_SECRET not in message
    assert len(emulator.calls_to("POST", TOKEN_PATH)) == 2, "one renewal attempt, not a login loop"


@pytest.mark.parametrize("kind", AUTH_TYPES)
async def test_secrets_never_appear_in_repr_or_diagnostics(
    server: TlsServer, emulator: SalesforceEmulator, app_keys: tuple[str, str], kind: str
) -> None:
    connector = connector_for(kind, server, emulator, app_keys[0])
    try:
        await connector.client.connect()
        (token,) = emulator.sessions  # the access token the org issued
        shown = "\n".join(
            [
                repr(connector),
                repr(connector.settings),
                str(connector.settings),
                repr(connector.settings.auth),
                repr(connector.client),
                json.dumps(connector.diagnostics()),
            ]
        )
    finally:
        await connector.aclose()
    key_lines = [line for line in app_keys[0].splitlines() if line and not line.startswith("-----")]
    secrets = {
        "access token": token,
        "client secret": CLIENT_SECRET,
        "password": PASSWORD,
        "security token": SECURITY_TOKEN,
        "webhook secret": WEBHOOK_SECRET,
        **{f"private key line {n}": line for n, line in enumerate(key_lines)},
    }
    leaked = [name for name, value in secrets.items() if value in shown]
    assert leaked == []
    assert "**********" in shown  # redacted, not dropped: an admin sees the secret is set
    assert connector.diagnostics()["logins"] == 1


# --- internal CaseComment and Chatter post --------------------------------------------------------


async def test_chatter_option_posts_one_feed_item_on_the_case_with_rating_and_comment(
    server: TlsServer, emulator: SalesforceEmulator, app_keys: tuple[str, str]
) -> None:
    case = closed_case(emulator)
    connector = make_connector(make_settings(server, app_keys[0], emulator, case={"chatter_post": True}))
    item = feedback_item(case, "resp-chatter", comment="Two weeks for a refund", internal_comment=False)
    try:
        assert [r.status for r in await connector.write_back([item])] == ["ok"]
        feed = emulator.records("FeedItem")
        assert len(feed) == 1 and feed[0]["ParentId"] == case and feed[0]["Type"] == "TextPost"
        assert feed[0]["Body"] == "Customer feedback: 3 (detractor)\nTwo weeks for a refund"
        assert emulator.records("CaseComment") == []  # the hub did not ask for a comment this time
        # the same batch again (a worker died before marking it done): no second post
        retry = item.model_copy(update={"attempt": 2})
        assert [r.status for r in await connector.write_back([retry])] == ["ok"]
    finally:
        await connector.aclose()
    assert len(emulator.records("FeedItem")) == 1
    # the post is a FeedItem record, saved with the Case update in one Composite call, not a Connect API call
    assert emulator.calls_to("POST", "/chatter") == []
    assert [c.status for c in emulator.calls if (c.method, c.path) == ("POST", "/composite")] == [200]
    assert emulator.org.records["Case"][case]["CXHub_Response_Id__c"] == "resp-chatter+comment"


async def test_without_the_chatter_option_only_the_internal_comment_is_added_once(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    assert connector.settings.case.chatter_post == "off"  # the default
    case = closed_case(emulator)
    item = feedback_item(case, "resp-comment", comment="Agent was kind")
    for attempt in (1, 2):
        results = await connector.write_back([item.model_copy(update={"attempt": attempt})])
        assert [r.status for r in results] == ["ok"]
    assert emulator.calls_to("POST", "/chatter") == []
    assert emulator.records("FeedItem") == []
    comments = emulator.records("CaseComment")
    assert len(comments) == 1 and comments[0]["ParentId"] == case
    assert comments[0]["IsPublished"] is False, "the customer must not see the internal note"
    assert comments[0]["CommentBody"] == "Customer feedback: 3 (detractor)\nAgent was kind"


async def test_no_internal_comment_when_the_hub_does_not_ask_for_one(
    connector: SalesforceConnector, emulator: SalesforceEmulator
) -> None:
    case = closed_case(emulator)
    item = feedback_item(case, "resp-quiet", comment="fine", internal_comment=False)
    assert [r.status for r in await connector.write_back([item])] == ["ok"]
    assert emulator.records("CaseComment") == [] and emulator.records("FeedItem") == []
    assert emulator.org.records["Case"][case]["CXHub_Comment__c"] == "fine"


async def test_a_batch_retried_after_a_failed_case_update_adds_no_second_comment_or_post(
    server: TlsServer, emulator: SalesforceEmulator, app_keys: tuple[str, str]
) -> None:
    case = closed_case(emulator)
    connector = make_connector(make_settings(server, app_keys[0], emulator, case={"chatter_post": True}))
    item = feedback_item(case, "resp-retry", comment="Still waiting")
    try:
        # the Case update is refused once, as Salesforce refuses it while another transaction holds the row
        emulator.lock_records(case)
        assert [r.status for r in await connector.write_back([item])] == ["transient"]
        assert emulator.records("CaseComment") == [] and emulator.records("FeedItem") == []
        retry = item.model_copy(update={"attempt": 2})
        assert [r.status for r in await connector.write_back([retry])] == ["ok"]
    finally:
        await connector.aclose()
    assert emulator.org.records["Case"][case]["CXHub_Response_Id__c"] == "resp-retry+comment"
    assert len(emulator.records("CaseComment")) == 1
    assert len(emulator.records("FeedItem")) == 1


# --- a spent budget, as the admin sees it ---------------------------------------------------------


@dataclass
class SpentBudget:
    error: str | None
    run: SyncRun
    status_output: str
    check_output: str
    check_exit_code: int


DATABASE = "suite.db"  # the file ``build_hub`` puts in its work folder


def status_config(workdir: Path, settings: dict[str, Any]) -> Path:
    """The hub's config file for the CLI: the same database and connector as ``build_hub`` used."""

    def value(v: Any) -> str:
        return json.dumps(v)  # a JSON string or number is a TOML basic string or number

    auth = settings["auth"]
    lines = [
        "[hub]",
        f"public_url = {value('http://127.0.0.1:9')}",
        f"database_url = {value(f'sqlite+aiosqlite:///{workdir / DATABASE}')}",
        "",
        f"[connectors.{CONNECTOR}]",
        'plugin = "salesforce"',
        *(f"{k} = {value(v)}" for k, v in settings.items() if k != "auth"),
        "",
        f"[connectors.{CONNECTOR}.auth]",
        *(f"{k} = {value(v)}" for k, v in auth.items()),
    ]
    path = workdir / "cxhub.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
async def spent_budget(
    emulator: SalesforceEmulator,
    server: TlsServer,
    harness: SalesforceHarness,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[SpentBudget]:
    """An answer waits for write-back while the hub's share of the org's API calls is spent."""
    import hub.cli

    for name, secret in harness.environment().items():
        monkeypatch.setenv(name, secret)
    monkeypatch.setattr(hub.cli.console, "width", 250)  # an admin's wide terminal: no wrapped cells
    emulator.daily_limit = 1000
    MemoryChannel.sent.clear()
    settings = {**harness.settings(), "api_budget_share": 0.01}
    cx = await build_hub(harness, tmp_path, settings=settings)
    try:
        await _answer(cx, harness)
        connector = cx.connectors[CONNECTOR]
        assert isinstance(connector, SalesforceConnector)
        with pytest.raises(TransientError):
            for _ in range(20):  # the hub's own calls spend its 10 calls of the window
                await connector.find_person("someone@nordlys.example", None)
        assert connector.client.budget.allowance == 10
        calls = len(emulator.calls)
        stats = await cx.sync.run(CONNECTOR)
        assert len(emulator.calls) == calls, "no call may reach Salesforce once the budget is spent"
        assert stats.stopped and stats.written == 0
        async with cx.store.session() as s:
            run = await s.scalar(select(SyncRun).order_by(SyncRun.id.desc()).limit(1))
        assert run is not None
    finally:
        await cx.close()
    config = status_config(tmp_path, settings)
    result = await asyncio.to_thread(CliRunner().invoke, hub.cli.app, ["status", "-c", str(config)])
    assert result.exit_code == 0, result.output
    checked = await asyncio.to_thread(CliRunner().invoke, hub.cli.app, ["check", "-c", str(config)])
    yield SpentBudget(stats.error, run, result.output, checked.output, checked.exit_code)


def connector_row(status_output: str) -> list[str]:
    """The cells of the connector's row in the ``cxhub status`` table."""
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in status_output.splitlines()]
    found = [cells for cells in rows if cells and cells[0] == CONNECTOR]
    assert len(found) == 1, status_output
    return found[0]


async def test_a_spent_budget_stops_the_sync_and_is_recorded_on_the_sync_run(
    spent_budget: SpentBudget,
) -> None:
    run = spent_budget.run
    assert (run.connector, run.kind, run.written) == (CONNECTOR, "sync", 0)
    assert run.finished_at is not None
    assert run.error == spent_budget.error
    assert run.error is not None and "API budget" in run.error and "is spent" in run.error
    assert "10 calls per 86400 s" in run.error, "the admin can tell which limit it is"


async def test_status_shows_the_last_sync_failed_on_the_api_budget(spent_budget: SpentBudget) -> None:
    out = spent_budget.status_output
    _, last_sync, _, _, queued, dead, _ = connector_row(out)
    assert last_sync.startswith(f"{spent_budget.run.started_at:%Y-%m-%d %H:%M:%S} "), out
    assert "stopped" in last_sync, out
    assert "ok)" not in last_sync, "a stopped sync must not read as a successful one"
    assert (queued, dead) == ("3", "0"), "the answer waits in the queue, nothing is lost"


async def test_status_says_the_api_budget_is_spent(spent_budget: SpentBudget) -> None:
    text = " ".join(spent_budget.status_output.split())  # the message may be folded at the terminal width
    assert f"{CONNECTOR}: the last sync" in text and "stopped: TransientError: the hub's API budget" in text
    assert "(10 calls per 86400 s, 1% of the org's 1000) is spent" in text


async def test_check_says_the_api_budget_is_spent(spent_budget: SpentBudget) -> None:
    """``cxhub check`` runs in a process of its own: the spent budget shows through the last sync run."""
    text = " ".join(spent_budget.check_output.split())
    assert spent_budget.check_exit_code == 1, spent_budget.check_output
    assert "last sync" in text and "stopped: TransientError: the hub's API budget" in text
    assert "api budget" in text and "calls in 24 h" in text
    # a new process, yet it knows what the hub spent: the calls are counted in the hub's database
    assert "the hub's share is spent" in text
