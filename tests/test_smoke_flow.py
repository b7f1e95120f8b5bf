"""The engine's steps, driven directly: event -> invitation -> sent -> answer -> write-backs -> CRM."""

from __future__ import annotations

from datetime import UTC, datetime

from hub import CaseEvent


def case_event(case_id: str = "C1", person: str = "P1") -> CaseEvent:
    return CaseEvent(
        event_id=f"case:{case_id}:closed",
        event_type="case.closed",
        occurred_at=datetime.now(UTC),
        record_type="case",
        record_id=case_id,
        person_id=person,
        owner_email="owner@example.com",
    )


async def test_answer_reaches_the_crm(make_hub, crm_state) -> None:
    hub = await make_hub()
    assert await hub.engine.receive("crm", [case_event()], source="webhook") == [True]
    assert await hub.engine.process_pending() == 1
    assert await hub.engine.dispatch_due() == 1
    message = crm_state.outbox[0]
    assert message["language"] == "da"
    assert message["recipient"]["email"] == "ada@example.com"
    state, page = await hub.engine.page_for_token(message["survey_url"].rsplit("/", 1)[1])
    assert state == "ok"
    response = await hub.engine.record_answer(page.invitation_id, 4, comment="slow")
    assert response.category.value == "detractor"
    stats = await hub.sync.run("crm")
    assert stats.written == 3
    kinds = sorted(item["payload"]["kind"] for item in crm_state.batches[0])
    assert kinds == ["case_feedback", "person_summary", "timeline_entry"]
