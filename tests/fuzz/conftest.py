"""The fuzz suite's hub: a real server on a free loopback port, with SuperOffice and Salesforce connectors
pointed at their emulators, the fake CRM, a text channel, and seeded data (answered and open surveys, dead
letters, rejected webhooks, sync runs), on SQLite and on PostgreSQL.

The hub runs as ``cxhub serve`` runs it: ``create_app(config_path=...)`` opens it in the server's own event
loop (uvicorn with its lifespan), so the tests are plain synchronous code that speaks HTTP to it, and
schemathesis can load the OpenAPI document from the live URL. One hub per database serves the whole suite
(package scope): building one takes seconds, and the suite must stay within a few minutes in CI.

Every request goes through ``Probe.send``, which fails on any 5xx with the request (method, path, headers,
body) and the server's traceback in the message.
"""

from __future__ import annotations

import asyncio
import os
import socket
import textwrap
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from hub_salesforce.emulator import SalesforceEmulator, serve_tls
from hub_salesforce.emulator import generate_key_pair as salesforce_key_pair
from hub_superoffice.emulator import SuperOfficeEmulator
from hypothesis import HealthCheck, settings
from sqlalchemy import select

from hub.app import Hub
from hub.store.tables import Token
from hub.testing.databases import fresh_database
from hub.testing.server import BackgroundServer
from hub.web import create_app
from hub.web.inbound import KEPT_BODY_BYTES, Sample
from hub.web.protection import RateLimiter
from hub.web.survey import Limits
from tests.conftest import WEBHOOK_SECRET
from tests.fakes.crm import TOKEN, FakeState
from tests.fakes.crm import create_app as fake_crm_app
from tests.helpers import survey_flow

API_TOKEN = "api-token-for-tests-42"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SO_WEBHOOK_SECRET = "so-webhook-secret-for-fuzzing"
SF_WEBHOOK_SECRET = "sf-webhook-secret-for-fuzzing-0123456789"
SF_CONSUMER_KEY = "3MVG9-cxhub-fuzz"
SF_USERNAME = "integration@cxhub-fuzz.example"
#: P3 of the fake CRM: phone only, so the campaign reaches them by the text channel
TEXT_PERSON_PHONE = "+45 20 30 40 50"

#: The settings every fuzz test starts from. Runs are repeatable by default (``derandomize``: CI sees the
#: same examples each time, and a failure reproduces with the same command); set CXHUB_FUZZ_EXPLORE=1 to
#: draw new examples (ten times as many) and keep failures in the local example database.
EXPLORE = os.environ.get("CXHUB_FUZZ_EXPLORE") == "1"
BASE = settings(
    deadline=None,
    derandomize=not EXPLORE,
    database=settings.default.database if EXPLORE else None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
)


def examples(count: int) -> settings:
    """``BASE`` with ``count`` examples (ten times as many when exploring)."""
    return settings(BASE, max_examples=count * 10 if EXPLORE else count)


# --- the server -------------------------------------------------------------------------------------------


class ServerErrors:
    """Wraps the app: keeps the traceback of every request that raised, so a failing test can show it.

    Starlette has already answered 500 when the exception reaches this wrapper; it is kept here instead of
    going on to uvicorn, which would log it (hypothesis shrinking a failure makes hundreds of them).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.records: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = False

        async def watch(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            self.records.append(traceback.format_exc())
            if scope["type"] != "http" or not started:
                raise

    def wait(self, timeout: float = 2.0) -> str:
        """The tracebacks so far, without the frames of libraries between the server and the hub's code (the
        exception reaches the wrapper just after the 500 has been sent, so wait a little)."""
        deadline = time.monotonic() + timeout
        while not self.records and time.monotonic() < deadline:
            time.sleep(0.01)
        return "\n".join(summary(record) for record in self.records) or "(no traceback was logged)"


def summary(traceback: str) -> str:
    """A traceback with only the project's frames, plus the innermost library frame (where it broke)."""
    blocks: list[list[str]] = []
    for line in traceback.splitlines():
        if line.lstrip().startswith('File "') or not blocks:
            blocks.append([line])
        else:
            blocks[-1].append(line)
    kept: list[str] = []
    for index, block in enumerate(blocks):
        head = block[0]
        frame = head.lstrip().startswith('File "')
        ours = frame and "site-packages" not in head
        innermost = frame and (
            index + 1 == len(blocks) or not blocks[index + 1][0].lstrip().startswith('File "')
        )
        if not frame or ours or innermost:
            kept.extend(line for line in block if line.strip(" ^~") != "")
    return "\n".join(kept)


class LiveHub:
    """``create_app(config_path=...)`` served by uvicorn in a thread, its lifespan on (the hub opens there)."""

    def __init__(self, app: Any) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", access_log=False, timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True, name="fuzz-hub"
        )

    def __enter__(self) -> LiveHub:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the hub did not start; see the log above")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._socket.close()


def describe(method: str, url: str, headers: dict[str, str] | None, body: Any) -> str:
    shown = body if not isinstance(body, bytes | str) or len(body) <= 1500 else body[:1500]
    more = f" (of {len(body)})" if isinstance(body, bytes | str) and len(body) > 1500 else ""
    return f"{method} {url}\nheaders: {headers or {}}\nbody{more}: {shown!r}"


@dataclass
class Probe:
    """An HTTP client of the live hub that fails on any 5xx and shows what was sent and what broke."""

    url: str
    errors: ServerErrors
    client: httpx.Client
    #: the id of the newest rejected webhook seen, so a new rejection must have a larger one
    last_rejected_id: int = 0

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self.errors.records.clear()
        body = kwargs.get("content", kwargs.get("data", kwargs.get("json")))
        reply = self.client.request(method, path, **kwargs)
        if reply.status_code >= 500:
            raise AssertionError(
                f"{reply.status_code} from the hub for\n{describe(method, path, kwargs.get('headers'), body)}"
                f"\nreply: {reply.text[:500]!r}\nserver traceback:\n{self.errors.wait()}"
            )
        return reply

    def newest_rejected(self) -> dict[str, Any] | None:
        listed = self.send("GET", "/api/v1/rejected-webhooks", params={"limit": 1}, headers=AUTH)
        assert listed.status_code == 200, listed.text
        rows = listed.json()
        return rows[0] if rows else None

    def assert_kept(self, target: str, reply: httpx.Response, body: bytes) -> None:
        """The refused request is in rejected_webhooks: a new row with its target, status, reason and body."""
        row = self.newest_rejected()
        assert row is not None and row["id"] > self.last_rejected_id, (
            f"a {reply.status_code} to {target} was not kept for inspection (reply {reply.text[:300]!r})"
        )
        self.last_rejected_id = row["id"]
        assert (row["target"], row["status_code"]) == (target, reply.status_code)
        assert row["reason"] == reply.json()["error"]
        if reply.status_code != 413:  # refused unread, by design
            # the first KEPT_BODY_BYTES are kept, with the whole size
            assert row["body"] == body[:KEPT_BODY_BYTES].decode("utf-8", errors="replace")
            assert row["body_size"] == len(body)


@dataclass
class FuzzHub:
    probe: Probe
    database: str
    #: survey tokens not answered yet, and answered ones (the follow-up page)
    open_tokens: list[str]
    answered_tokens: list[str]
    expired_token: str
    unsubscribe_path: str
    #: a closed ticket in the SuperOffice emulator, a closed case in the Salesforce one
    so_ticket_id: int
    sf_case: dict[str, Any]
    sf_org_id: str
    extra: dict[str, Any] = field(default_factory=dict)


# --- config and seed -----------------------------------------------------------------------------------------


def hub_config(
    database_url: str, crm_url: str, so_url: str, sf_url: str, sf_ca: str, sf_org: str, keys: Path
) -> str:
    return textwrap.dedent(
        f"""
        [hub]
        public_url = "http://127.0.0.1:8000"
        database_url = "{database_url}"
        plugins = ["superoffice", "salesforce"]
        plugin_modules = ["tests.fakes.plugin", "tests.fuzz.plugin"]
        api_token = "env:CXHUB_TEST_API_TOKEN"
        amend_window_hours = 48

        [policy]
        min_days_between_surveys = 0

        [sync]
        max_attempts = 1
        backoff_base_seconds = 0
        backoff_max_seconds = 0

        [connectors.crm]
        plugin = "fakecrm"
        base_url = "{crm_url}"
        token = "env:FAKE_CRM_TOKEN"
        webhook_secret = "env:FAKE_WEBHOOK_SECRET"
        poll_interval_seconds = 0

        [connectors.so]
        plugin = "superoffice"
        base_url = "{so_url}/Cust12345"
        webhook_secret = "env:FUZZ_SO_WEBHOOK_SECRET"
        poll_interval_seconds = 0
        [connectors.so.auth]
        type = "system_user"
        application_token = "env:FUZZ_SO_APP_TOKEN"
        system_user_token = "env:FUZZ_SO_SYSTEM_USER_TOKEN"
        private_key = "file:{keys / "so.pem"}"
        context_identifier = "Cust12345"

        [connectors.sf]
        plugin = "salesforce"
        login_url = "{sf_url}"
        ca_bundle = "{sf_ca}"
        organization_id = "{sf_org}"
        webhook_secret = "env:FUZZ_SF_WEBHOOK_SECRET"
        poll_interval_seconds = 0
        [connectors.sf.auth]
        type = "jwt_bearer"
        consumer_key = "{SF_CONSUMER_KEY}"
        username = "{SF_USERNAME}"
        private_key = "file:{keys / "sf.pem"}"

        [channels.mail]
        plugin = "fakechannel"
        base_url = "{crm_url}"

        [channels.text]
        plugin = "fuzztext"
        base_url = "{crm_url}"

        [surveys.nps]
        kind = "nps"
        topics = {{ en = ["Speed", "Friendliness"], da = ["Hastighed", "Venlighed"] }}

        [campaigns.case_closed]
        trigger = {{ connector = "crm", event = "case.closed" }}
        survey = "nps"
        channels = ["mail", "text"]
        alerts = [{{ when = "detractor", channel = "mail", to = "owner" }}]

        [campaigns.tickets]
        trigger = {{ connector = "so", event = "case.closed" }}
        survey = "nps"
        channels = ["mail"]

        [campaigns.cases]
        trigger = {{ connector = "sf", event = "case.closed" }}
        survey = "nps"
        channels = ["mail"]
        """
    )


@dataclass
class Seeded:
    open_tokens: list[str]
    answered_tokens: list[str]
    expired_token: str
    unsubscribe_path: str


async def seed(config_path: Path, crm: FakeState) -> Seeded:
    """Surveys sent (some answered, one expired, one by text), dead letters and a sync run, in the database the
    server will open."""
    hub = await Hub.open(config_path)
    try:
        tokens = [await survey_flow(hub, crm, f"C{n}") for n in range(1, 12)]
        unsubscribe = crm.outbox[-1]["unsubscribe_url"].replace("http://127.0.0.1:8000", "")
        await survey_flow(hub, crm, "C-text", person="P3")
        answered = tokens[:3]
        for rating, token in zip((3, 8, 10), answered, strict=True):
            _, page = await hub.engine.page_for_token(token)
            assert page is not None
            await hub.engine.record_answer(page.invitation_id, rating, comment=f"seeded comment {rating} ✓")
        expired = tokens[3]
        _, page = await hub.engine.page_for_token(expired)
        assert page is not None
        async with hub.store.session() as s:
            row = await s.scalar(select(Token).where(Token.hash == page.token_hash))
            assert row is not None
            row.expires_at = hub.now().replace(year=2000)
        crm.write_failures = (1000, 503, {})  # every write fails: max_attempts = 1 makes dead letters
        await hub.sync.run("crm")
        crm.write_failures = (0, 200, {})
        return Seeded(tokens[4:], answered, expired, unsubscribe)
    finally:
        await hub.close()


def seed_rejections(probe: Probe) -> None:
    """Webhooks the hub refuses, so the rejected-webhooks view has rows before the fuzzing starts."""
    for target in ("crm", "so", "sf"):
        probe.send("POST", f"/hooks/{target}", content=b'{"forged": true}', headers={"x-fake-signature": "0"})
    probe.send("POST", "/inbound/text", content=b"not json")
    probe.last_rejected_id = (probe.newest_rejected() or {"id": 0})["id"]


# --- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="package", params=["sqlite", "postgresql"])
def fuzz_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Like ``database_url`` of tests/conftest.py, once per database for the whole fuzz suite."""
    with fresh_database(request.param, tmp_path_factory.mktemp("fuzz"), prefix="cxhub_fuzz") as url:
        yield url


@pytest.fixture(scope="package")
def fuzz_hub(fuzz_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzHub]:
    workdir = tmp_path_factory.mktemp("fuzz-hub")
    crm = FakeState()
    crm.people["P1"] = {"id": "P1", "email": "Ada@Example.com", "first_name": "Ada", "language": "da-DK"}
    crm.people["P3"] = {"id": "P3", "phone": TEXT_PERSON_PHONE, "first_name": "Cy"}
    so = SuperOfficeEmulator()
    assert so.partner_private_key_pem is not None
    (workdir / "so.pem").write_text(so.partner_private_key_pem, encoding="ascii")
    sf_private, sf_public = salesforce_key_pair()
    (workdir / "sf.pem").write_text(sf_private, encoding="ascii")
    sf = SalesforceEmulator(consumer_key=SF_CONSUMER_KEY, username=SF_USERNAME, public_key_pem=sf_public)
    person = so.add_person("Ida", "Lund", email="ida.lund@nordlys.example")
    ticket = so.add_ticket("Adgangskode virker ikke", person)
    so.close_ticket(ticket)
    owner = sf.add_user("Petra Berg", "petra.berg@nordlys.example")
    contact = sf.add_contact("Ida", "Lund", email="ida.lund@nordlys.example")
    sf_case = sf.close_case(sf.add_case("Password reset fails", contact, owner))
    environment = {
        "FAKE_CRM_TOKEN": TOKEN,
        "FAKE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "CXHUB_TEST_API_TOKEN": API_TOKEN,
        "FUZZ_SO_WEBHOOK_SECRET": SO_WEBHOOK_SECRET,
        "FUZZ_SO_APP_TOKEN": "emulator-application-token",
        "FUZZ_SO_SYSTEM_USER_TOKEN": "CXHub-emulator-7f3a",
        "FUZZ_SF_WEBHOOK_SECRET": SF_WEBHOOK_SECRET,
    }
    with (
        pytest.MonkeyPatch.context() as env,
        BackgroundServer(fake_crm_app(crm)) as crm_server,
        BackgroundServer(so.app) as so_server,
        serve_tls(sf.app) as sf_server,
    ):
        for name, value in environment.items():
            env.setenv(name, value)
        config_path = workdir / "cxhub.toml"
        config_path.write_text(
            hub_config(
                fuzz_database_url,
                crm_server.url,
                so_server.url,
                sf_server.url,
                sf_server.ca_file,
                sf.org.org_id,
                workdir,
            ),
            encoding="utf-8",
        )
        seeded = asyncio.run(seed(config_path, crm))
        app = create_app(config_path=config_path, scheduler=False)
        # the survey pages' rate limits would answer most fuzz requests with 429; they have tests of their own
        app.state.survey_limits = Limits(
            RateLimiter(10**9, 60), RateLimiter(10**9, 60), RateLimiter(10**9, 60)
        )
        # likewise the sample of rejected requests kept for inspection: here every one must be kept
        app.state.rejected_sample = Sample(RateLimiter(10**9, 60), RateLimiter(10**9, 60))
        errors = ServerErrors(app)
        with LiveHub(errors) as live, httpx.Client(base_url=live.url, timeout=60) as client:
            probe = Probe(live.url, errors, client)
            seed_rejections(probe)
            yield FuzzHub(
                probe=probe,
                database=fuzz_database_url.split(":", 1)[0],
                open_tokens=seeded.open_tokens,
                answered_tokens=seeded.answered_tokens,
                expired_token=seeded.expired_token,
                unsubscribe_path=seeded.unsubscribe_path,
                so_ticket_id=ticket,
                sf_case=sf_case,
                sf_org_id=sf.org.org_id,
            )
    so.close()


@pytest.fixture
def probe(fuzz_hub: FuzzHub) -> Probe:
    return fuzz_hub.probe
