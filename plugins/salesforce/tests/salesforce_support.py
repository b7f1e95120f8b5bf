"""Helpers of the Salesforce tests: test credentials, an emulator, settings and connectors pointed at it,
and the harness of the shared connector suite."""

from __future__ import annotations

import json
import time
from typing import Any

from hub_salesforce.config import SalesforceSettings
from hub_salesforce.connector import SalesforceConnector
from hub_salesforce.emulator import SalesforceEmulator, TlsServer
from hub_salesforce.webhooks import sign
from pydantic import SecretStr

from hub import PluginContext, UsageLedger, WebhookRequest
from hub.http import make_client
from hub.testing import Capabilities

CONSUMER_KEY = "3MVG9-cxhub-tests"
USERNAME = "integration@cxhub-tests.example"
CLIENT_ID = "3MVG9-cxhub-client"
CLIENT_SECRET = "client-secret-for-tests"
WEBHOOK_SECRET = "webhook-secret-for-tests-0123456789abcdef"
INSTANCE = "sf"


def make_emulator(public_key: str, **options: Any) -> SalesforceEmulator:
    return SalesforceEmulator(
        consumer_key=CONSUMER_KEY,
        username=USERNAME,
        public_key_pem=public_key,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        **options,
    )


def make_settings(
    server: TlsServer, private_key: str, emulator: SalesforceEmulator, **extra: Any
) -> SalesforceSettings:
    return SalesforceSettings.model_validate(
        {
            "login_url": server.url,
            "auth": {
                "type": "jwt_bearer",
                "consumer_key": CONSUMER_KEY,
                "username": USERNAME,
                "private_key": SecretStr(private_key),
            },
            "ca_bundle": server.ca_file,
            "organization_id": emulator.org.org_id,
            "webhook_secret": SecretStr(WEBHOOK_SECRET),
            **extra,
        }
    )


def make_connector(
    settings: SalesforceSettings, public_url: str = "http://127.0.0.1:9", usage: UsageLedger | None = None
) -> SalesforceConnector:
    return SalesforceConnector(
        settings,
        PluginContext(instance=INSTANCE, public_url=public_url, http_client=make_client, usage=usage),
    )


def callout_request(body: bytes, secret: str = WEBHOOK_SECRET, at: float | None = None) -> WebhookRequest:
    """A JSON callout as the org's Apex/Flow would send it, signed with ``secret``."""
    timestamp = str(int(at if at is not None else time.time()))
    return WebhookRequest(
        method="POST",
        url="https://hub.example/hooks/crm",
        headers={
            "content-type": "application/json",
            "x-cxhub-timestamp": timestamp,
            "x-cxhub-signature": sign(secret, timestamp, body),
        },
        body=body,
    )


class SalesforceHarness:
    """The Salesforce connector and its emulator, as ``hub.testing.ConnectorSuite`` drives them."""

    plugin = "salesforce"
    #: the org's Apex/Flow callout is signed; SOQL polling is the safety net behind it
    capabilities = Capabilities(webhooks=True, polling=True, timeline=True)

    def __init__(self, emulator: SalesforceEmulator, server: TlsServer, key_file: str) -> None:
        self.emulator = emulator
        self.server = server
        self.key_file = key_file
        self.owner = emulator.add_user("Petra Berg", "petra.berg@nordlys.example")

    def settings(self) -> dict[str, Any]:
        return self._settings(CONSUMER_KEY)

    def bad_settings(self) -> dict[str, Any]:
        return self._settings("3MVG9-an-app-salesforce-never-issued")

    def _settings(self, consumer_key: str) -> dict[str, Any]:
        return {
            "login_url": self.server.url,
            "auth": {
                "type": "jwt_bearer",
                "consumer_key": consumer_key,
                "username": USERNAME,
                "private_key": f"file:{self.key_file}",
            },
            "ca_bundle": self.server.ca_file,
            "organization_id": self.emulator.org.org_id,
            "webhook_secret": "env:SF_SUITE_WEBHOOK_SECRET",
        }

    def environment(self) -> dict[str, str]:
        return {"SF_SUITE_WEBHOOK_SECRET": WEBHOOK_SECRET}

    def _closed_case(self) -> dict[str, Any]:
        """A new contact with an email address whose case an agent closes; the closed Case record."""
        count = len(self.emulator.org.records["Contact"])
        contact = self.emulator.add_contact("Ida", "Lund", email=f"ida.lund.{count}@nordlys.example")
        case_id = self.emulator.add_case("Password reset fails", contact, self.owner)
        return self.emulator.close_case(case_id)

    def close_case(self) -> str:
        return str(self._closed_case()["Id"])

    def closed_case_webhook(self) -> WebhookRequest:
        case = self._closed_case()
        record = {
            "attributes": {"type": "Case"},
            **{k: case[k] for k in ("Id", "ClosedDate", "ContactId", "Subject")},
        }
        return callout_request(json.dumps({"event": "case.closed", "records": [record]}).encode())

    def tamper(self, request: WebhookRequest) -> WebhookRequest:
        return request.model_copy(update={"body": request.body.replace(b"Password", b"Passw0rd")})

    def fail_writes(self, count: int, status: int, retry_after: float | None = None) -> None:
        self.emulator.clear_faults()
        if count:
            self.emulator.fail_next(count, status, retry_after, methods={"PATCH", "POST"})

    def timeline_entries(self, response_id: str) -> int:
        return sum(
            1 for r in self.emulator.records("Survey_Response__c") if r.get("Response_Id__c") == response_id
        )
