"""The emulator as ``cxhub demo`` drives it: settings for the hub, the closed case, what the CRM user sees."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hub_superoffice import hub_register_emulators
from hub_superoffice.config import SuperOfficeSettings
from hub_superoffice.connector import SuperOfficeConnector
from hub_superoffice.demo import SuperOfficeDemoEmulator
from hub_superoffice.emulator import BackgroundServer
from superoffice_support import INSTANCE, WebhookReceiver

from hub import (
    CaseFeedback,
    ConnectorEmulator,
    EmulatorType,
    NpsCategory,
    PersonSummary,
    PluginContext,
    TimelineEntry,
    WriteBackItem,
)
from hub.http import make_client


@pytest.fixture
def demo_emulator(
    tmp_path: Path, receiver: tuple[WebhookReceiver, BackgroundServer], monkeypatch: pytest.MonkeyPatch
) -> Iterator[SuperOfficeDemoEmulator]:
    _, hook_server = receiver
    emulator = SuperOfficeDemoEmulator()
    emulator.start(tmp_path, hook_server.url, INSTANCE)
    for name, value in emulator.environment().items():
        monkeypatch.setenv(name, value)
    yield emulator
    emulator.stop()


def test_the_plugin_offers_its_emulator_to_the_demo() -> None:
    offered: list[EmulatorType] = []
    hub_register_emulators(offered.append)
    [emulator_type] = offered
    assert (emulator_type.plugin, emulator_type.kind) == ("superoffice", "connector")
    assert isinstance(emulator_type.factory(), ConnectorEmulator)


async def test_closing_the_demo_case_reaches_the_hub_and_the_answer_shows_in_superoffice(
    demo_emulator: SuperOfficeDemoEmulator, receiver: tuple[WebhookReceiver, BackgroundServer]
) -> None:
    hook_receiver, hook_server = receiver
    settings = SuperOfficeSettings.model_validate(demo_emulator.instance_settings())
    connector = SuperOfficeConnector(
        settings, PluginContext(instance=INSTANCE, public_url=hook_server.url, http_client=make_client)
    )
    hook_receiver.connector = connector
    try:
        assert all(check.ok for check in await connector.check() if check.name != "webhook")
        case = await asyncio.to_thread(demo_emulator.close_case)
        deliveries = await hook_receiver.wait_for(2)
        assert deliveries[0].request.header("X-Hook-Test") == "true" and deliveries[0].status == 200
        [event] = deliveries[1].events
        assert (event.record_id, event.person_id) == (case.record_id, case.person_id)
        assert not demo_emulator.written_back(case)

        entry = TimelineEntry(
            response_id="r-demo",
            campaign="ticket_closed",
            survey_kind="nps",
            rating=9,
            score=90.0,
            category=NpsCategory.PROMOTER,
            comment="Quick and friendly help",
            answered_at=datetime.now(UTC),
            channel="mail",
            case_id=case.record_id,
            language="en",
        )
        await connector.write_back(
            [WriteBackItem(id=1, key="timeline:r-demo", record_id=case.person_id, payload=entry)]
        )
        assert not demo_emulator.written_back(case)  # the summary and the request are not written yet
        summary = PersonSummary(
            latest_rating=9,
            latest_score=90.0,
            latest_category=NpsCategory.PROMOTER,
            latest_date=entry.answered_at,
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
            processed_at=entry.answered_at,
            internal_comment=True,
        )
        results = await connector.write_back(
            [
                WriteBackItem(id=2, key="summary:1", record_id=case.person_id, payload=summary),
                WriteBackItem(id=3, key="case:r-demo", record_id=case.record_id, payload=feedback),
            ]
        )
        assert {r.status for r in results} == {"ok"}
        assert demo_emulator.written_back(case)
    finally:
        assert demo_emulator.emulator is not None
        await hook_receiver.detach(demo_emulator.emulator)
        await connector.aclose()
    shown = demo_emulator.show(case)
    assert shown["timeline"] and "Quick and friendly help" in shown["timeline"][0]
    assert shown["request"]["status"] == "Closed" and shown["request"]["x_cxhub_rating"] == "9"
    assert shown["person"]["x_cxhub_last_comment"] == "Quick and friendly help"
    assert shown["internal messages"] and "Quick and friendly help" in shown["internal messages"][0]
    assert set(case.links) == {"the person in SuperOffice", "the request in SuperOffice"}
