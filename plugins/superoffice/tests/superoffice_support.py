"""Helpers of the SuperOffice tests: test credentials, settings and connector builders, and a webhook
receiver that hands every delivery to the connector's ``parse_webhook`` on the test's event loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hub_superoffice.client import sign_system_token
from hub_superoffice.config import SuperOfficeSettings
from hub_superoffice.connector import SuperOfficeConnector
from hub_superoffice.emulator import BackgroundServer, SuperOfficeEmulator
from pydantic import SecretStr
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub import BadInput, CaseEvent, PluginContext, WebhookRequest
from hub.app import Hub
from hub.http import make_client
from hub.store.tables import Invitation, WriteBack
from hub.testing.harness import CONNECTOR, Capabilities

APP_TOKEN = "app-token-for-tests"
SYSTEM_USER_TOKEN = "CXHub-tests-41b2"
CLIENT_ID = "cxhub-tests"
CLIENT_SECRET = "client-secret-for-tests"
REFRESH_TOKEN = "refresh-token-for-tests"
BASIC_USER = ("cxhub", "onsite-password-for-tests")
WEBHOOK_SECRET = "webhook-secret-for-tests"
INSTANCE = "so"
LOGIN_PATH = "/Login/api/PartnerSystemUser/Authenticate"

T = TypeVar("T")


def present(value: T | None) -> T:
    """The value, asserting it is there (an emulator record the test created)."""
    assert value is not None
    return value


def login_body(private_pem: str, at: datetime | None = None) -> dict[str, str]:
    """A PartnerSystemUser/Authenticate request signed with ``private_pem`` at ``at``."""
    key = serialization.load_pem_private_key(private_pem.encode("ascii"), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return {
        "SignedSystemToken": sign_system_token(SYSTEM_USER_TOKEN, key, now=at or datetime.now(UTC)),
        "ApplicationToken": APP_TOKEN,
        "ContextIdentifier": "Cust12345",
        "ReturnTokenType": "JWT",
    }


def make_emulator(public_key: str, **options: Any) -> SuperOfficeEmulator:
    return SuperOfficeEmulator(
        application_token=APP_TOKEN,
        system_user_token=SYSTEM_USER_TOKEN,
        partner_public_key_pem=public_key,
        oauth_clients={CLIENT_ID: CLIENT_SECRET},
        refresh_tokens={REFRESH_TOKEN: CLIENT_ID},
        basic_users={BASIC_USER[0]: BASIC_USER[1]},
        webhook_retry_delays=(0.05, 0.1),
        **options,
    )


def auth_settings(kind: str, private_key: str, **overrides: Any) -> dict[str, Any]:
    if kind == "system_user":
        auth: dict[str, Any] = {
            "type": "system_user",
            "application_token": SecretStr(APP_TOKEN),
            "system_user_token": SecretStr(SYSTEM_USER_TOKEN),
            "private_key": SecretStr(private_key),
            "context_identifier": "Cust12345",
        }
    elif kind == "refresh_token":
        auth = {
            "type": "refresh_token",
            "client_id": CLIENT_ID,
            "client_secret": SecretStr(CLIENT_SECRET),
            "refresh_token": SecretStr(REFRESH_TOKEN),
        }
    else:
        auth = {"type": "basic", "username": BASIC_USER[0], "password": SecretStr(BASIC_USER[1])}
    auth.update(overrides)
    return auth


def make_settings(
    server: BackgroundServer,
    private_key: str,
    kind: str = "system_user",
    auth: dict[str, Any] | None = None,
    **extra: Any,
) -> SuperOfficeSettings:
    return SuperOfficeSettings(
        base_url=f"{server.url}/Cust12345",
        auth=auth_settings(kind, private_key, **(auth or {})),
        webhook_secret=SecretStr(WEBHOOK_SECRET),
        **extra,
    )


def make_connector(
    settings: SuperOfficeSettings, public_url: str = "http://127.0.0.1:9"
) -> SuperOfficeConnector:
    return SuperOfficeConnector(
        settings, PluginContext(instance=INSTANCE, public_url=public_url, http_client=make_client)
    )


@dataclass
class Received:
    request: WebhookRequest
    status: int
    events: list[CaseEvent] = field(default_factory=list)


class WebhookReceiver:
    """Where the emulator delivers webhooks: each request goes to ``connector.parse_webhook`` on the test's
    loop, and its answer (or the BadInput status) goes back to the emulator."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.connector: SuperOfficeConnector | None = None
        self.received: list[Received] = []
        #: answer every delivery with this status instead of asking the connector
        self.fail_with: int | None = None
        self.app = Starlette(routes=[Route("/hooks/{instance}", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        hook = WebhookRequest(
            method="POST",
            url=str(request.url),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(),
        )
        if self.fail_with is not None or self.connector is None:
            self.received.append(Received(hook, self.fail_with or 503))
            return Response(status_code=self.fail_with or 503)
        future = asyncio.run_coroutine_threadsafe(self.connector.parse_webhook(hook), self.loop)
        try:
            reply = await asyncio.wrap_future(future)
        except BadInput as exc:
            self.received.append(Received(hook, exc.status_code))
            return Response(str(exc), status_code=exc.status_code)
        self.received.append(Received(hook, reply.status_code, reply.events))
        return Response(reply.body, status_code=reply.status_code, media_type=reply.media_type)

    async def detach(self, emulator: SuperOfficeEmulator) -> None:
        """Let deliveries still under way finish, then stop handing new ones to the connector."""
        await asyncio.to_thread(emulator.wait_for_webhooks, 10.0)
        self.connector = None

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Let the test loop run parse_webhook until ``count`` deliveries have arrived."""
        deadline = self.loop.time() + timeout
        while len(self.received) < count:
            if self.loop.time() > deadline:
                raise AssertionError(f"expected {count} webhook deliveries, got {len(self.received)}")
            await asyncio.sleep(0.02)
        return self.received


class SuperOfficeHarness:
    """The SuperOffice connector and its emulator, as ``hub.testing.ConnectorSuite`` drives them."""

    plugin = "superoffice"
    #: the tenant's webhook is signed; polling closed requests is the safety net behind it
    capabilities = Capabilities(webhooks=True, polling=True, timeline=True)

    def __init__(self, emulator: SuperOfficeEmulator, server: BackgroundServer, key_file: str) -> None:
        self.emulator = emulator
        self.server = server
        self.key_file = key_file

    def settings(self) -> dict[str, Any]:
        return self._settings("SO_SUITE_APP_TOKEN")

    def bad_settings(self) -> dict[str, Any]:
        return self._settings("SO_SUITE_OTHER_APP_TOKEN")

    def _settings(self, app_token_variable: str) -> dict[str, Any]:
        return {
            "base_url": f"{self.server.url}/Cust12345",
            "auth": {
                "type": "system_user",
                "application_token": f"env:{app_token_variable}",
                "system_user_token": "env:SO_SUITE_SYSTEM_USER_TOKEN",
                "private_key": f"file:{self.key_file}",
                "context_identifier": "Cust12345",
            },
            "webhook_secret": "env:SO_SUITE_WEBHOOK_SECRET",
        }

    def environment(self) -> dict[str, str]:
        return {
            "SO_SUITE_APP_TOKEN": APP_TOKEN,
            "SO_SUITE_OTHER_APP_TOKEN": "an-application-superoffice-never-issued",
            "SO_SUITE_SYSTEM_USER_TOKEN": SYSTEM_USER_TOKEN,
            "SO_SUITE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }

    def close_case(self) -> str:
        """A new person with an email address whose request an agent closes; the ticket id."""
        person_id = self.emulator.add_person(
            "Ida", "Lund", email=f"ida.lund.{len(self.emulator.calls)}@nordlys.example", language="Dansk"
        )
        ticket_id = self.emulator.add_ticket("Adgangskode virker ikke", person_id)
        self.emulator.close_ticket(ticket_id)
        return str(ticket_id)

    def closed_case_webhook(self) -> WebhookRequest:
        ticket_id = int(self.close_case())
        headers, body = self.emulator.webhook_request(WEBHOOK_SECRET, "ticket.changed", "ticket", ticket_id)
        return WebhookRequest(
            method="POST",
            url="https://hub.example/hooks/crm",
            headers={name.lower(): value for name, value in headers.items()},
            body=body,
        )

    def tamper(self, request: WebhookRequest) -> WebhookRequest:
        return request.model_copy(
            update={"body": request.body.replace(b'"ticket.changed"', b'"ticket.created"')}
        )

    def fail_writes(self, count: int, status: int, retry_after: float | None = None) -> None:
        self.emulator.clear_faults()
        if count:
            self.emulator.fail_next(count, status, retry_after, methods={"PATCH", "POST", "PUT"})

    def timeline_entries(self, response_id: str) -> int:
        keys = [
            appointment["ExtraFields"].get("x_cxhub_response_id", "")
            for person_id in list(self.emulator.store.data.persons)
            for appointment in self.emulator.appointments(person_id)
        ]
        return sum(1 for key in keys if key.endswith(f":{response_id}"))


async def answer_closed_requests(hub: Hub, harness: SuperOfficeHarness, count: int, rating: int = 9) -> None:
    """Close ``count`` requests of new people, survey each through the hub and answer every survey.

    Each answer queues the connector's write-backs: the person's summary, a timeline entry and feedback
    on the request.
    """
    connector = hub.connectors[CONNECTOR]
    for _ in range(count):
        reply = await connector.parse_webhook(harness.closed_case_webhook())
        await hub.engine.receive(CONNECTOR, reply.events, source="webhook")
    await hub.engine.process_pending()
    await hub.engine.dispatch_due()
    async with hub.store.session() as s:
        invitations = list(await s.scalars(select(Invitation).where(Invitation.status == "sent")))
    assert len(invitations) == count, [i.reason for i in invitations]
    for invitation in invitations:
        await hub.engine.record_answer(invitation.id, rating, comment="Hurtig hjælp")


async def write_back_states(hub: Hub) -> list[tuple[str, str, int]]:
    """(kind, state, attempts) of every write-back row, oldest first."""
    async with hub.store.session() as s:
        rows = await s.scalars(select(WriteBack).order_by(WriteBack.id))
        return [(row.kind, row.state, row.attempts) for row in rows]
