"""Helpers of the Dynamics tests: an emulated environment with an app registration, settings and connectors
pointed at it, webhooks as a service endpoint posts them, and the harness of the shared connector suite."""

from __future__ import annotations

import json
import os
from typing import Any

from hub_dynamics.config import DynamicsSettings
from hub_dynamics.connector import DynamicsConnector
from hub_dynamics.emulator import DataverseEmulator

from hub import PluginContext, UsageLedger, WebhookRequest
from hub.http import make_client
from hub.testing import Capabilities
from hub.testing.server import TlsServer

TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_SECRET = "client-secret-for-tests"
WEBHOOK_KEY = "webhook-key-for-tests-0123456789"
INSTANCE = "d365"
ENV = {"CXHUB_TEST_D365_SECRET": CLIENT_SECRET, "CXHUB_TEST_D365_WEBHOOK": WEBHOOK_KEY}


def make_emulator(**options: Any) -> DataverseEmulator:
    emulator = DataverseEmulator(TENANT, **options)
    emulator.register_app(CLIENT_ID, secret=CLIENT_SECRET)
    return emulator


def settings_data(
    server: TlsServer, secret: str = "env:CXHUB_TEST_D365_SECRET", **extra: Any
) -> dict[str, Any]:
    """Settings as an admin writes them in the config file."""
    return {
        "url": server.url,
        "tenant_id": TENANT,
        "authority_host": server.url,
        "auth": {"type": "client_secret", "client_id": CLIENT_ID, "client_secret": secret},
        "ca_bundle": server.ca_file,
        "webhook": {"key": "env:CXHUB_TEST_D365_WEBHOOK"},
        **extra,
    }


def make_settings(server: TlsServer, **extra: Any) -> DynamicsSettings:
    os.environ.update(ENV)
    return DynamicsSettings.model_validate(settings_data(server, **extra))


def make_connector(settings: DynamicsSettings, usage: UsageLedger | None = None) -> DynamicsConnector:
    return DynamicsConnector(
        settings,
        PluginContext(
            instance=INSTANCE, public_url="http://127.0.0.1:9", http_client=make_client, usage=usage
        ),
    )


def seed_case(
    emulator: DataverseEmulator, email: str = "emma.clarke@brightwater.example"
) -> tuple[str, str, str]:
    """(owner, contact, incident): an open case of a contact with an email address."""
    owner = emulator.add(
        "systemuser", fullname="James Whitfield", internalemailaddress="james@contoso.example"
    )
    contact = emulator.add("contact", firstname="Emma", lastname="Clarke", emailaddress1=email)
    incident = emulator.add(
        "incident", title="Export fails", ticketnumber="CAS-01001", customerid=contact, ownerid=owner
    )
    return owner, contact, incident


def resolve(emulator: DataverseEmulator, incident: str) -> str:
    """An agent resolves the case (CloseIncident): a case resolution activity is created and the incident's
    state becomes Resolved. Returns the resolution's activityid."""
    return emulator.close_incident(incident)


def reopen(emulator: DataverseEmulator, table: str, record_id: str) -> None:
    """An agent reactivates a resolved case or reopens a won opportunity (state Active again)."""
    values = {"statecode": 0, "statuscode": 1} if table == "incident" else {"statecode": 0}
    emulator.update(table, record_id, **values)


def later(emulator: DataverseEmulator, seconds: float) -> None:
    """Move the environment's clock on (Dataverse stamps createdon to the second)."""
    clock = emulator.clock
    emulator.clock = lambda: clock() + seconds


def webhook(
    emulator: DataverseEmulator,
    message: str,
    entity: str,
    record_id: str,
    attributes: dict[str, Any] | None = None,
    key: str = WEBHOOK_KEY,
    body: bytes | None = None,
) -> WebhookRequest:
    """The POST a service endpoint (WebhookKey auth) sends to the hub."""
    context = emulator.execution_context(message, entity, record_id, attributes)
    return WebhookRequest(
        method="POST",
        url=f"https://hub.example/hooks/crm?code={key}",
        headers=emulator.webhook_headers(message, entity),
        query={"code": key},
        body=body if body is not None else json.dumps(context).encode(),
    )


class DynamicsHarness:
    """The shared connector suite's view of the emulator.

    Dataverse does not sign webhook bodies: a service endpoint authenticates with its key (``?code=``) or a
    header. ``tamper`` therefore forges what an attacker can: the same body without the right key (a body
    changed in transit cannot be detected, and need not be: the record is read before anyone is surveyed).
    """

    plugin = "dynamics"
    #: a service endpoint posts CloseIncident; polling the changed incidents is the safety net behind it
    capabilities = Capabilities(webhooks=True, polling=True, timeline=True)

    def __init__(self, emulator: DataverseEmulator, server: TlsServer) -> None:
        self.emulator = emulator
        self.server = server
        self._count = 0

    def settings(self) -> dict[str, Any]:
        return settings_data(self.server)

    def bad_settings(self) -> dict[str, Any]:
        return settings_data(self.server, secret="env:CXHUB_TEST_D365_WRONG")

    def environment(self) -> dict[str, str]:
        return {**ENV, "CXHUB_TEST_D365_WRONG": "not-the-secret"}

    def _resolved_case(self) -> str:
        """A new contact with an email address whose case an agent resolves (CloseIncident); the incident."""
        self._count += 1
        _, _, incident = seed_case(self.emulator, f"person{self._count}@brightwater.example")
        resolve(self.emulator, incident)
        return incident

    def close_case(self) -> str:
        return self._resolved_case()

    def closed_case_webhook(self) -> WebhookRequest:
        return webhook(self.emulator, "CloseIncident", "incident", self._resolved_case())

    def tamper(self, request: WebhookRequest) -> WebhookRequest:
        forged = request.model_copy(update={"query": {"code": "guessed"}, "body": request.body + b" "})
        return forged

    def fail_writes(self, count: int, status: int, retry_after: float | None = None) -> None:
        self.emulator.throttle(count, status, retry_after, writes_only=True)

    def timeline_entries(self, response_id: str) -> int:
        return sum(
            1
            for row in self.emulator.rows("cxhub_surveyresponse")
            if row.get("cxhub_responseid") == response_id
        )
