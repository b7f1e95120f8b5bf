"""The Salesforce emulator as a ``hub.ConnectorEmulator``: what ``cxhub demo`` drives.

It serves a seeded org over TLS on a free loopback port with a throwaway test CA, and hands the hub settings
that point at it: the connected app's private key as a ``file:`` secret and the test CA as ``ca_bundle``, both
files in the demo's folder (the connector trusts that CA and nothing else), the callout secret as an ``env:``
secret. When the demo's story asks, a support agent closes a case and the org sends its Outbound Message to
the hub's webhook; polling stays on as the safety net, as in production.

The emulator has no pages of its own: ``show`` reads the records the way a report in the org would.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import structlog

from hub import DemoCase
from hub_salesforce.emulation.outbound import OutboundSender
from hub_salesforce.emulator import SalesforceEmulator, TlsServer, generate_key_pair

log = structlog.get_logger("hub_salesforce.demo")

ENV_PREFIX = "CXHUB_DEMO_SALESFORCE_"
CONSUMER_KEY = "3MVG9-cxhub-demo"
USERNAME = "integration@cxhub-demo.example"
CASE_SUBJECT = "Export to Excel fails on large sheets"


class SalesforceDemoEmulator:
    """One emulated org for one demo run."""

    def __init__(self) -> None:
        self.emulator: SalesforceEmulator | None = None
        self.server: TlsServer | None = None
        self.contact_id = ""
        self.owner_id = ""
        self._key_file: Path | None = None
        self._ca_file: Path | None = None
        self._webhook_secret = secrets.token_urlsafe(32)
        self._webhook_url = ""

    # -- hub.Emulator

    def start(self, workdir: Path, hub_url: str, instance: str) -> None:
        private_key, public_key = generate_key_pair()
        emulator = SalesforceEmulator(consumer_key=CONSUMER_KEY, username=USERNAME, public_key_pem=public_key)
        self.owner_id = emulator.add_user("James Whitfield", "james.whitfield@brightwater.example")
        self.contact_id = emulator.add_contact(
            "Emma", "Clarke", email="emma.clarke@brightwater.example", OwnerId=self.owner_id
        )
        workdir.mkdir(parents=True, exist_ok=True)
        self._key_file = workdir / "salesforce-app-key.pem"
        self._key_file.write_text(private_key, encoding="ascii")
        os.chmod(self._key_file, 0o600)
        self._webhook_url = f"{hub_url.rstrip('/')}/hooks/{instance}"
        self.server = TlsServer(emulator.app).start()
        self._ca_file = workdir / "salesforce-test-ca.pem"
        shutil.copyfile(self.server.ca_file, self._ca_file)
        self.emulator = emulator

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def instance_settings(self) -> dict[str, Any]:
        emulator, server = self._running()
        return {
            "login_url": server.url,
            "auth": {
                "type": "jwt_bearer",
                "consumer_key": CONSUMER_KEY,
                "username": USERNAME,
                "private_key": f"file:{self._key_file}",
            },
            "ca_bundle": str(self._ca_file),
            "organization_id": emulator.org.org_id,
            "webhook_secret": f"env:{ENV_PREFIX}WEBHOOK_SECRET",
        }

    def environment(self) -> dict[str, str]:
        return {f"{ENV_PREFIX}WEBHOOK_SECRET": self._webhook_secret}

    def links(self) -> dict[str, str]:
        return {}  # the emulator serves the API only, no record pages

    # -- hub.ConnectorEmulator

    def close_case(self) -> DemoCase:
        """A support agent closes a new case of Emma Clarke; the org sends its Outbound Message to the hub."""
        emulator, _ = self._running()
        case_id = emulator.add_case(CASE_SUBJECT, self.contact_id, self.owner_id)
        case = emulator.close_case(case_id)
        fields = {k: case[k] for k in ("Id", "ClosedDate", "ContactId", "IsClosed")}
        sender = OutboundSender(self._webhook_url, emulator.org.org_id, copies=1)
        [delivery] = sender.send([(f"04l{secrets.token_hex(6)}", "Case", fields)])
        how = "its Outbound Message went to the hub"
        if not delivery.acknowledged:
            log.warning("salesforce.demo_outbound_message_not_acknowledged", attempts=delivery.attempts)
            how = "its Outbound Message was not acknowledged, so the hub's polling will find it"
        return DemoCase(
            record_id=case_id,
            person_id=self.contact_id,
            description=(
                f"James Whitfield closed case {case['CaseNumber']} ({CASE_SUBJECT}) of Emma Clarke "
                f"in Salesforce; {how}."
            ),
            links={},
        )

    def show(self, case: DemoCase) -> dict[str, Any]:
        emulator, _ = self._running()
        contact = emulator.org.records["Contact"].get(case.person_id, {})
        record = emulator.org.records["Case"].get(case.record_id, {})
        responses = [
            r for r in emulator.records("Survey_Response__c") if r.get("Contact__c") == case.person_id
        ]
        return {
            "contact": {k: v for k, v in contact.items() if k.startswith("CXHub_") and v is not None},
            "survey responses": [
                {k: r[k] for k in ("Name", "Rating__c", "Category__c", "Comment__c", "Case__c")}
                for r in responses
            ],
            "case": {
                "Status": record.get("Status"),
                **{k: v for k, v in record.items() if k.startswith("CXHub_") and v is not None},
            },
            "internal comments": [
                c["CommentBody"]
                for c in emulator.records("CaseComment")
                if c.get("ParentId") == case.record_id and not c.get("IsPublished")
            ],
        }

    def written_back(self, case: DemoCase) -> bool:
        """The answer, with its comment, is on the contact, in a Survey_Response__c and on the case."""
        emulator, _ = self._running()
        contact = emulator.org.records["Contact"].get(case.person_id, {})
        record = emulator.org.records["Case"].get(case.record_id, {})
        return bool(
            contact.get("CXHub_Latest_Rating__c") is not None
            and contact.get("CXHub_Latest_Comment__c")
            and record.get("CXHub_Rating__c") is not None
            and any(r.get("Case__c") == case.record_id for r in emulator.records("Survey_Response__c"))
        )

    # -- helpers

    def _running(self) -> tuple[SalesforceEmulator, TlsServer]:
        if self.emulator is None or self.server is None:
            raise RuntimeError("start the Salesforce emulator first")
        return self.emulator, self.server
