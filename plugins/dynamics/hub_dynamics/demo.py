"""The Dataverse emulator as a ``hub.ConnectorEmulator``: what ``cxhub demo --crm dynamics`` drives.

It serves a seeded environment and its Entra ID authority over TLS on a free loopback port with a throwaway
test CA, and hands the hub settings that point at it: the app's client secret and the webhook key as
``env:`` secrets, the test CA as ``ca_bundle`` (a file in the demo's folder). When the story asks, an agent
resolves a case and the service endpoint posts its ``RemoteExecutionContext`` to the hub's webhook;
polling stays on as the safety net, as in production.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Any

import structlog

from hub import DemoCase
from hub.testing.server import TlsServer
from hub_dynamics.emulator import DataverseEmulator

log = structlog.get_logger("hub_dynamics.demo")

ENV_PREFIX = "CXHUB_DEMO_DYNAMICS_"
TENANT = "brightwater.onmicrosoft.com"
CLIENT_ID = "0c8f5d1e-3a2b-4c6d-8e9f-a1b2c3d4e5f6"
CASE_TITLE = "Export to Excel fails on large sheets"


class DynamicsDemoEmulator:
    """One emulated environment for one demo run."""

    def __init__(self) -> None:
        self.emulator: DataverseEmulator | None = None
        self.server: TlsServer | None = None
        self.contact_id = ""
        self.owner_id = ""
        self._ca_file: Path | None = None
        self._secret = secrets.token_urlsafe(32)
        self._webhook_key = secrets.token_urlsafe(32)
        self._webhook_url = ""

    # -- hub.Emulator

    def start(self, workdir: Path, hub_url: str, instance: str) -> None:
        emulator = DataverseEmulator(TENANT)
        emulator.register_app(CLIENT_ID, secret=self._secret)
        self.owner_id = emulator.add(
            "systemuser",
            fullname="James Whitfield",
            internalemailaddress="james.whitfield@brightwater.example",
        )
        self.contact_id = emulator.add(
            "contact", firstname="Emma", lastname="Clarke", emailaddress1="emma.clarke@brightwater.example"
        )
        self._webhook_url = f"{hub_url.rstrip('/')}/hooks/{instance}"
        self.server = TlsServer(emulator.app)
        emulator.url = self.server.url
        self.server.start()
        workdir.mkdir(parents=True, exist_ok=True)
        self._ca_file = workdir / "dynamics-test-ca.pem"
        shutil.copyfile(self.server.ca_file, self._ca_file)
        self.emulator = emulator

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def instance_settings(self) -> dict[str, Any]:
        _, server = self._running()
        return {
            "url": server.url,
            "tenant_id": TENANT,
            "authority_host": server.url,
            "auth": {
                "type": "client_secret",
                "client_id": CLIENT_ID,
                "client_secret": f"env:{ENV_PREFIX}SECRET",
            },
            "ca_bundle": str(self._ca_file),
            "webhook": {"auth": "webhook_key", "key": f"env:{ENV_PREFIX}WEBHOOK_KEY"},
        }

    def environment(self) -> dict[str, str]:
        return {f"{ENV_PREFIX}SECRET": self._secret, f"{ENV_PREFIX}WEBHOOK_KEY": self._webhook_key}

    def links(self) -> dict[str, str]:
        return {}  # the emulator serves the API only, no record pages

    # -- hub.ConnectorEmulator

    def close_case(self) -> DemoCase:
        """An agent resolves a new case of Emma Clarke; the service endpoint posts to the hub's webhook."""
        emulator, _ = self._running()
        incident = emulator.add(
            "incident",
            title=CASE_TITLE,
            ticketnumber="CAS-01042",
            customerid=self.contact_id,
            ownerid=self.owner_id,
        )
        emulator.close_incident(incident)
        status = emulator.deliver(
            self._webhook_url, "CloseIncident", "incident", incident, key=self._webhook_key
        )
        how = "its service endpoint posted to the hub"
        if status == 0:
            how = "its webhook did not reach the hub, so polling will find it"
        elif status >= 300:
            how = f"the hub answered its webhook with {status}, so polling will find it"
        return DemoCase(
            record_id=incident,
            person_id=self.contact_id,
            description=f"James Whitfield resolved case CAS-01042 ({CASE_TITLE}) of Emma Clarke in Dynamics 365; {how}.",
        )

    def show(self, case: DemoCase) -> dict[str, Any]:
        emulator, _ = self._running()
        contact = emulator.row("contact", case.person_id) or {}
        incident = emulator.row("incident", case.record_id) or {}
        return {
            "contact": {k: v for k, v in contact.items() if k.startswith("cxhub_") and v is not None},
            "survey responses (the case's timeline)": self._responses(case.record_id),
            "survey responses (the contact's timeline)": self._responses(case.person_id),
            "case": {k: v for k, v in incident.items() if k.startswith("cxhub_") and v is not None},
            "notes": [
                n.get("notetext")
                for n in emulator.rows("annotation")
                if n.get("_objectid_value") == case.record_id
            ],
        }

    def _responses(self, record_id: str) -> list[dict[str, Any]]:
        emulator, _ = self._running()
        return [
            {k: r.get(k) for k in ("subject", "cxhub_score", "cxhub_comment")}
            for r in emulator.timeline(record_id)
            if "cxhub_responseid" in r
        ]

    def written_back(self, case: DemoCase) -> bool:
        """The answer, with its comment, is on the contact, on the case, and on both their timelines (the
        case's as what the activity regards, the contact's as its Customer party)."""
        emulator, _ = self._running()
        contact = emulator.row("contact", case.person_id) or {}
        incident = emulator.row("incident", case.record_id) or {}
        return bool(
            contact.get("cxhub_lastscore") is not None
            and contact.get("cxhub_lastcomment")
            and incident.get("cxhub_feedbackscore") is not None
            and bool(self._responses(case.record_id))
            and bool(self._responses(case.person_id))
        )

    def _running(self) -> tuple[DataverseEmulator, TlsServer]:
        if self.emulator is None or self.server is None:
            raise RuntimeError("start the Dataverse emulator first")
        return self.emulator, self.server
