"""The emulator as ``cxhub demo`` drives it: settings for the hub, the closed case, what the CRM user sees."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hub_salesforce import hub_register_emulators
from hub_salesforce.config import SalesforceSettings
from hub_salesforce.connector import SalesforceConnector
from hub_salesforce.demo import SalesforceDemoEmulator
from hub_salesforce.emulator import serve_tls
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub import (
    CaseEvent,
    CaseFeedback,
    ConnectorEmulator,
    EmulatorType,
    NpsCategory,
    PersonSummary,
    PluginContext,
    TimelineEntry,
    WebhookRequest,
    WriteBackItem,
)
from hub.http import make_client

INSTANCE = "crm"


class Receiver:
    """The hub's webhook endpoint in miniature: the connector reads each delivery on the test's loop."""

    def __init__(self) -> None:
        self.connector: SalesforceConnector | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.events: list[CaseEvent] = []
        self.app = Starlette(routes=[Route("/hooks/{instance}", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        assert self.connector is not None and self.loop is not None
        hook = WebhookRequest(
            method="POST",
            url=str(request.url),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(),
        )
        future = asyncio.run_coroutine_threadsafe(self.connector.parse_webhook(hook), self.loop)
        reply = await asyncio.wrap_future(future)
        self.events += reply.events
        return Response(reply.body, status_code=reply.status_code, media_type=reply.media_type)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    hooks = Receiver()
    with serve_tls(hooks.app, tls=False) as server:
        yield hooks, server.url


@pytest.fixture
def demo_emulator(
    tmp_path: Path, receiver: tuple[Receiver, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[SalesforceDemoEmulator]:
    _, hub_url = receiver
    emulator = SalesforceDemoEmulator()
    emulator.start(tmp_path, hub_url, INSTANCE)
    for name, value in emulator.environment().items():
        monkeypatch.setenv(name, value)
    yield emulator
    emulator.stop()


def test_the_plugin_offers_its_emulator_to_the_demo() -> None:
    offered: list[EmulatorType] = []
    hub_register_emulators(offered.append)
    [emulator_type] = offered
    assert (emulator_type.plugin, emulator_type.kind) == ("salesforce", "connector")
    assert isinstance(emulator_type.factory(), ConnectorEmulator)


def test_the_connector_trusts_the_test_ca_from_the_demo_folder(
    demo_emulator: SalesforceDemoEmulator, tmp_path: Path
) -> None:
    settings = SalesforceSettings.model_validate(demo_emulator.instance_settings())
    assert settings.ca_bundle is not None and Path(settings.ca_bundle).parent == tmp_path
    assert "BEGIN CERTIFICATE" in Path(settings.ca_bundle).read_text()
    assert (tmp_path / "salesforce-app-key.pem").stat().st_mode & 0o077 == 0


async def test_closing_the_demo_case_reaches_the_hub_and_the_answer_shows_in_salesforce(
    demo_emulator: SalesforceDemoEmulator, receiver: tuple[Receiver, str]
) -> None:
    hooks, hub_url = receiver
    settings = SalesforceSettings.model_validate(demo_emulator.instance_settings())
    connector = SalesforceConnector(
        settings, PluginContext(instance=INSTANCE, public_url=hub_url, http_client=make_client)
    )
    hooks.connector, hooks.loop = connector, asyncio.get_running_loop()
    try:
        assert all(check.ok for check in await connector.check())
        case = await asyncio.to_thread(demo_emulator.close_case)
        assert "Outbound Message went to the hub" in case.description
        [event] = hooks.events
        assert (event.record_id, event.person_id) == (case.record_id, case.person_id)
        assert not demo_emulator.written_back(case)

        answered = datetime.now(UTC)
        entry = TimelineEntry(
            response_id="r-demo",
            campaign="ticket_closed",
            survey_kind="nps",
            rating=9,
            score=90.0,
            category=NpsCategory.PROMOTER,
            comment="Quick and friendly help",
            answered_at=answered,
            channel="mail",
            case_id=case.record_id,
            language="en",
        )
        summary = PersonSummary(
            latest_rating=9,
            latest_score=90.0,
            latest_category=NpsCategory.PROMOTER,
            latest_date=answered,
            latest_comment=entry.comment,
            average_rating=9.0,
            average_rating_30_days=9.0,
            average_score=90.0,
            count=1,
        )
        feedback = CaseFeedback(
            response_id="r-demo",
            rating=9,
            score=90.0,
            category=NpsCategory.PROMOTER,
            comment=entry.comment,
            processed_at=answered,
            internal_comment=True,
        )
        await connector.write_back(
            [WriteBackItem(id=1, key="timeline:r-demo", record_id=case.person_id, payload=entry)]
        )
        assert not demo_emulator.written_back(case)  # the contact and the case are not written yet
        results = await connector.write_back(
            [
                WriteBackItem(id=2, key="summary:1", record_id=case.person_id, payload=summary),
                WriteBackItem(id=3, key="case:r-demo", record_id=case.record_id, payload=feedback),
            ]
        )
        assert {r.status for r in results} == {"ok"}
        assert demo_emulator.written_back(case)
    finally:
        await connector.aclose()
    shown = demo_emulator.show(case)
    assert shown["contact"]["CXHub_Latest_Comment__c"] == "Quick and friendly help"
    assert [r["Comment__c"] for r in shown["survey responses"]] == ["Quick and friendly help"]
    assert shown["case"]["Status"] == "Closed" and shown["case"]["CXHub_Rating__c"] == 9
    assert shown["internal comments"] and "Quick and friendly help" in shown["internal comments"][0]
    assert demo_emulator.links() == {} and case.links == {}


def test_an_unacknowledged_message_leaves_the_case_to_polling(tmp_path: Path) -> None:
    emulator = SalesforceDemoEmulator()
    emulator.start(tmp_path, "http://127.0.0.1:9", INSTANCE)  # nothing listens there
    try:
        case = emulator.close_case()
        assert "polling will find it" in case.description
        assert not emulator.written_back(case)
    finally:
        emulator.stop()
