"""The SuperOffice emulator as a ``hub.ConnectorEmulator``: what ``cxhub demo`` and benchmarks drive.

It serves a seeded tenant on a free loopback port, hands the hub settings that point at it (the partner key
as a ``file:`` secret in the demo's folder, the other credentials as ``env:`` secrets), registers the hub's
webhook URL the way an administrator would, and closes a request when the demo's story asks for one.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import structlog

from hub import DemoCase
from hub_superoffice.emulation.store import ApiError
from hub_superoffice.emulator import BackgroundServer, DemoSeed, SuperOfficeEmulator

log = structlog.get_logger("hub_superoffice.demo")

ENV_PREFIX = "CXHUB_DEMO_SUPEROFFICE_"
DEMO_APP_TOKEN = "emulator-application-token"  # noqa: S105 - the emulator's public test value
DEMO_SYSTEM_USER_TOKEN = "CXHub-emulator-7f3a"  # noqa: S105 - the emulator's public test value
WEBHOOK_EVENTS = ["ticket.changed", "sale.sold", "person.changed"]
FEEDBACK_TASK_ID = 4  # "Customer feedback" in the emulator's activity types


class SuperOfficeDemoEmulator:
    """One emulated tenant for one demo run."""

    def __init__(self) -> None:
        self.emulator: SuperOfficeEmulator | None = None
        self.server: BackgroundServer | None = None
        self.seed: DemoSeed | None = None
        self._key_file: Path | None = None
        self._webhook_secret = secrets.token_urlsafe(24)
        self._webhook_url = ""

    # -- hub.Emulator

    def start(self, workdir: Path, hub_url: str, instance: str) -> None:
        emulator = SuperOfficeEmulator(
            application_token=DEMO_APP_TOKEN, system_user_token=DEMO_SYSTEM_USER_TOKEN
        )
        self.seed = emulator.seed_demo()
        assert emulator.partner_private_key_pem is not None
        workdir.mkdir(parents=True, exist_ok=True)
        self._key_file = workdir / "superoffice-partner-key.pem"
        self._key_file.write_text(emulator.partner_private_key_pem, encoding="ascii")
        os.chmod(self._key_file, 0o600)
        self._webhook_url = f"{hub_url.rstrip('/')}/hooks/{instance}"
        self.server = BackgroundServer(emulator.app).start()
        self.emulator = emulator

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.emulator is not None:
            self.emulator.close()

    def instance_settings(self) -> dict[str, Any]:
        emulator, server = self._running()
        return {
            "base_url": f"{server.url}/{emulator.context_identifier}",
            "auth": {
                "type": "system_user",
                "application_token": f"env:{ENV_PREFIX}APP_TOKEN",
                "system_user_token": f"env:{ENV_PREFIX}SYSTEM_USER_TOKEN",
                "private_key": f"file:{self._key_file}",
                "context_identifier": emulator.context_identifier,
            },
            "webhook_secret": f"env:{ENV_PREFIX}WEBHOOK_SECRET",
            "timeline": {"task_id": FEEDBACK_TASK_ID},
        }

    def environment(self) -> dict[str, str]:
        return {
            f"{ENV_PREFIX}APP_TOKEN": DEMO_APP_TOKEN,
            f"{ENV_PREFIX}SYSTEM_USER_TOKEN": DEMO_SYSTEM_USER_TOKEN,
            f"{ENV_PREFIX}WEBHOOK_SECRET": self._webhook_secret,
        }

    def links(self) -> dict[str, str]:
        _, server = self._running()
        assert self.seed is not None
        return {"SuperOffice person": f"{server.url}/emulator/person/{self.seed.persons['emma']}"}

    # -- hub.ConnectorEmulator

    def close_case(self) -> DemoCase:
        """A support agent solves a new request of Emma Clarke and closes it; SuperOffice fires its webhook."""
        emulator, server = self._running()
        assert self.seed is not None
        self._ensure_webhook(emulator)
        person_id, owner_id = self.seed.persons["emma"], self.seed.associates["james"]
        ticket_id = emulator.add_ticket("Export to Excel fails on large sheets", person_id, owner_id=owner_id)
        emulator.close_ticket(ticket_id)
        return DemoCase(
            record_id=str(ticket_id),
            person_id=str(person_id),
            description=(
                f"James Whitfield closed request {ticket_id} (Export to Excel fails on large sheets) "
                "of Emma Clarke, Brightwater Ltd, in SuperOffice; its webhook went to the hub."
            ),
            links={
                "the person in SuperOffice": f"{server.url}/emulator/person/{person_id}",
                "the request in SuperOffice": f"{server.url}/emulator/ticket/{ticket_id}",
            },
        )

    def show(self, case: DemoCase) -> dict[str, Any]:
        emulator, _ = self._running()
        person = emulator.person(int(case.person_id)) or {}
        ticket = emulator.ticket(int(case.record_id)) or {}
        return {
            "person": {k: v for k, v in person.get("CustomFields", {}).items() if k.startswith("x_cxhub_")},
            "timeline": [a["Description"] for a in emulator.appointments(int(case.person_id))],
            "request": {
                "status": (ticket.get("Status") or {}).get("Name"),
                **{k: v for k, v in ticket.get("CustomFields", {}).items() if k.startswith("x_cxhub_")},
            },
            "internal messages": [
                m["Body"] for m in emulator.ticket_messages(int(case.record_id)) if m["Slevel"] == "Internal"
            ],
        }

    def written_back(self, case: DemoCase) -> bool:
        """The answer, with its comment, is on the person, on their timeline and on the request."""
        emulator, _ = self._running()
        person = (emulator.person(int(case.person_id)) or {}).get("CustomFields", {})
        ticket = (emulator.ticket(int(case.record_id)) or {}).get("CustomFields", {})
        return bool(
            person.get("x_cxhub_last_rating")
            and person.get("x_cxhub_last_comment")
            and ticket.get("x_cxhub_rating")
            and emulator.appointments(int(case.person_id))
        )

    # -- helpers

    def _running(self) -> tuple[SuperOfficeEmulator, BackgroundServer]:
        if self.emulator is None or self.server is None:
            raise RuntimeError("start the SuperOffice emulator first")
        return self.emulator, self.server

    def _ensure_webhook(self, emulator: SuperOfficeEmulator) -> None:
        """Register the hub like an administrator would: SuperOffice sends its test POST, the hub says 200."""
        if emulator.webhooks():
            return
        try:
            emulator.register_webhook(self._webhook_url, self._webhook_secret, WEBHOOK_EVENTS)
        except ApiError as exc:
            log.warning("superoffice.demo_webhook_test_failed", error=exc.message)
            emulator.register_webhook(self._webhook_url, self._webhook_secret, WEBHOOK_EVENTS, test=False)
