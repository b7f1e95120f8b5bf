"""What a running hub knows is visible from outside: metrics and diagnostics read what every process recorded
in the store, not the empty counters of the process that answers."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families

from hub.metrics import connector_health, recorded_state, render
from hub.store import utcnow
from hub.store.tables import Event, Invitation, Person, Response, SyncRun, Usage, WriteBack


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def seed(hub) -> None:
    """What other processes would have recorded: runs, a queue, answers, API calls, a sent invitation."""
    now = utcnow()
    async with hub.store.session() as s:
        person = Person(email="ada@example.com")
        s.add(person)
        await s.flush()
        for number, (rating, category) in enumerate([(9, "promoter"), (3, "detractor"), (10, "promoter")]):
            event = Event(
                connector="crm",
                event_id=f"e{number}",
                event_type="case.closed",
                record_id=f"C{number}",
                source="poll",
                payload={},
            )
            s.add(event)
            await s.flush()
            invitation = Invitation(
                campaign="case_closed",
                event_pk=event.id,
                person_id=person.id,
                status="answered",
                channel="mail",
                sent_at=now,
            )
            s.add(invitation)
            await s.flush()
            s.add(
                Response(
                    id=f"r{number}",
                    invitation_id=invitation.id,
                    person_id=person.id,
                    campaign="case_closed",
                    survey_kind="nps",
                    rating=rating,
                    score=rating,
                    category=category,
                    language="en",
                )
            )
        s.add_all(
            [
                WriteBack(
                    connector="crm", kind="timeline_entry", key="timeline:r0", record_id="P1", state="done"
                ),
                WriteBack(
                    connector="crm", kind="timeline_entry", key="timeline:r1", record_id="P1", state="dead"
                ),
                WriteBack(connector="crm", kind="person_summary", key="summary:1", record_id="P1"),
                Usage(connector="crm", meter="api", minute=int(now.timestamp() // 60), count=7),
                SyncRun(connector="crm", kind="poll", started_at=now, finished_at=now, events=1),
            ]
        )
        for minutes in (3, 2, 1):
            at = now + timedelta(minutes=minutes)
            s.add(
                SyncRun(connector="crm", kind="sync", started_at=at, finished_at=at, error="AuthError: 401")
            )


async def test_metrics_report_what_the_store_holds_whichever_process_answers(make_hub) -> None:
    hub = await make_hub()
    await seed(hub)
    found = samples(await render(hub.store, hub.connectors))
    queue = "cxhub_writeback_items"
    assert found[(queue, (("connector", "crm"), ("kind", "timeline_entry"), ("state", "dead")))] == 1
    assert found[(queue, (("connector", "crm"), ("kind", "person_summary"), ("state", "queued")))] == 1
    promoters = (("campaign", "case_closed"), ("category", "promoter"), ("survey_kind", "nps"))
    assert found[("cxhub_answers_total", promoters)] == 2
    assert found[("cxhub_api_calls_last_hour", (("connector", "crm"), ("meter", "api")))] == 7
    assert found[("cxhub_connector_login_failing", (("connector", "crm"),))] == 1
    assert ("cxhub_last_success_timestamp_seconds", (("connector", "crm"), ("kind", "poll"))) in found
    runs = "cxhub_runs_last_hour"
    assert found[(runs, (("connector", "crm"), ("kind", "sync"), ("outcome", "failed")))] == 3
    assert found[(runs, (("connector", "crm"), ("kind", "poll"), ("outcome", "ok")))] == 1
    assert ("cxhub_last_success_timestamp_seconds", (("connector", "crm"), ("kind", "sync"))) not in found


async def test_a_login_that_failed_once_is_not_reported_as_failing(make_hub) -> None:
    hub = await make_hub()
    now = utcnow()
    async with hub.store.session() as s:
        s.add(SyncRun(connector="crm", kind="poll", started_at=now, finished_at=now))
        s.add(SyncRun(connector="crm", kind="sync", started_at=now, finished_at=now, error="AuthError: 401"))
    assert not (await connector_health(hub.store, ["crm"]))["crm"].login_failing


async def test_diagnostics_state_counts_what_other_processes_did(make_hub) -> None:
    hub = await make_hub()
    await seed(hub)
    state = await recorded_state(hub.store, hub.connectors, hub.channels)
    crm = state["connectors"]["crm"]
    assert crm["login_failing"] is True and crm["last_error"] == "AuthError: 401"
    assert crm["api_calls_last_24h"] == {"api": 7}
    assert crm["writeback_items"] == {
        "timeline_entry/done": 1,
        "timeline_entry/dead": 1,
        "person_summary/queued": 1,
    }
    assert state["channels"]["mail"]["sent_last_24h"] == 3


async def test_the_metrics_endpoint_serves_the_store_state_and_readyz_names_a_failing_login(make_hub) -> None:
    from pydantic import SecretStr

    from hub.web import create_app
    from tests.helpers import asgi_client

    hub = await make_hub()
    hub.config.hub.metrics_token = SecretStr("metrics-token-for-tests")
    async with asgi_client(create_app(hub, scheduler=False)) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}
        await seed(hub)
        ready = await client.get("/readyz")
        # still ready (webhooks and answers are taken), but the connector that needs an admin is named; the
        # CRM's error text is only for holders of the API token
        assert ready.status_code == 200 and ready.json() == {"status": "ready", "degraded": ["crm"]}
        details = await client.get(
            "/api/v1/connectors", headers={"Authorization": "Bearer api-token-for-tests-42"}
        )
        [crm] = details.json()
        assert (crm["name"], crm["login_failing"], crm["last_error"]) == ("crm", True, "AuthError: 401")
        assert (await client.get("/api/v1/connectors")).status_code == 401
        scraped = await client.get("/metrics", headers={"Authorization": "Bearer metrics-token-for-tests"})
    found = samples(scraped.content)
    assert found[("cxhub_connector_login_failing", (("connector", "crm"),))] == 1
    assert found[("cxhub_api_calls_last_hour", (("connector", "crm"), ("meter", "api")))] == 7
