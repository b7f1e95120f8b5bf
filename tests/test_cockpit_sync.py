"""The sync cockpit (``/admin/sync``) and its API (``/api/v1/connectors/<name>``): the state it shows, the actions
(run now, poll now, full re-sync, schedule, pause and resume, replay), that the scheduler's jobs honour the
pause and the schedule, and that only admins act (CSRF-checked, audited)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import httpx
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import SecretStr
from sqlalchemy import func, select, update

from hub import controls
from hub.scheduler import Scheduler
from hub.store.tables import (
    AuditEntry,
    ConnectorControl,
    Cursor,
    Event,
    RejectedWebhook,
    SyncRun,
    WriteBack,
    utcnow,
)
from hub.web import create_app
from hub.web.cockpit.access import Role, User, current_user
from tests.helpers import asgi_client, csrf_of, survey_flow, webhook

PASSWORD = "correct horse battery staple"
API = {"authorization": "Bearer api-token-for-tests-42"}
ACTIONS = ("run", "poll", "full", "pause", "resume", "schedule", "replay")


async def answer(hub, crm_state, case_id: str, person: str, rating: int, comment: str | None = None) -> str:
    token = await survey_flow(hub, crm_state, case_id, person)
    _, page = await hub.engine.page_for_token(token)
    return (await hub.engine.record_answer(page.invitation_id, rating, comment=comment)).id


async def writebacks(hub, **where: Any) -> list[WriteBack]:
    async with hub.store.session() as s:
        q = select(WriteBack).order_by(WriteBack.id)
        for key, value in where.items():
            q = q.where(getattr(WriteBack, key) == value)
        return list(await s.scalars(q))


async def audit_log(hub) -> list[tuple[str, str, str | None]]:
    """The actions in the audit log, oldest first (sign-ins, ``user.login``, are logged too but are no action)."""
    async with hub.store.session() as s:
        entries = await s.scalars(
            select(AuditEntry).where(AuditEntry.action != "user.login").order_by(AuditEntry.id)
        )
        return [(e.actor, e.action, e.target) for e in entries]


@asynccontextmanager
async def admin_client(hub, jobs: Scheduler | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in to the cockpit as the admin; ``jobs``: the scheduler running in its process."""
    hub.config.hub.admin_password = SecretStr(PASSWORD)
    app = create_app(hub, scheduler=False)
    app.state.scheduler = jobs  # as the app's lifespan sets it when it starts a scheduler
    async with asgi_client(app) as client:
        form = await client.get("/admin/login")
        signed = await client.post(
            "/admin/login",
            data={"csrf": csrf_of(form.text), "username": "admin", "password": PASSWORD, "next": ""},
        )
        assert signed.status_code == 303
        yield client


async def act(client: httpx.AsyncClient, path: str, **fields: str) -> httpx.Response:
    """Post a cockpit form the way the browser does: with the CSRF field of the page it is on."""
    page = await client.get("/admin/sync/crm")
    return await client.post(path, data={"csrf": csrf_of(page.text), **fields})


async def answered(hub, crm_state, count: int) -> None:
    """``count`` people answer, each with a comment: 3 write-backs each (summary, timeline, case feedback)."""
    for i in range(count):
        person = f"Q{len(crm_state.people)}"
        crm_state.people[person] = {"id": person, "email": f"{person.lower()}@example.com", "first_name": "Q"}
        await answer(hub, crm_state, f"C-{person}", person, 9, comment=f"c{i}")


async def test_the_pages_show_the_state_of_each_connector(make_hub, crm_state) -> None:
    hub = await make_hub()
    await answered(hub, crm_state, 3)
    await hub.sync.run("crm")
    await answered(hub, crm_state, 1)  # queued, not yet written
    hub.config.connectors["crm"].poll_interval_seconds = 60
    rows = await writebacks(hub, state="queued")
    async with hub.store.session() as s:
        s.add(Cursor(connector="crm", stream="events", value="seq-41"))
        s.add(SyncRun(connector="crm", kind="poll", started_at=utcnow(), finished_at=utcnow(), events=4))
        s.add(
            RejectedWebhook(
                target="crm", status_code=401, reason="bad signature <b>", headers={}, body=b"{}", body_size=2
            )
        )
        await s.execute(
            update(WriteBack)
            .where(WriteBack.id == rows[0].id)
            .values(state="dead", last_error="record is locked by someone")
        )
    async with admin_client(hub) as client:
        overview = await client.get("/admin/sync")
        assert overview.status_code == 200
        assert 'href="/admin/sync/crm"' in overview.text and "fakecrm" in overview.text
        assert "estimated" in overview.text  # no scheduler in this process
        page = await client.get("/admin/sync/crm")
        assert page.status_code == 200
        text = page.text
        assert "seq-41" in text and "4 new events" in text
        assert "record is locked by someone" in text and "bad signature &lt;b&gt;" in text
        # the last sync wrote the first three answers: 3 timeline entries, 3 case feedbacks, 3 summaries
        assert "9 written, 0 failed" in text
        names = {"person_summary": "person summaries", "timeline_entry": "timeline entries"}
        names["case_feedback"] = "case feedback"
        for kind in {row.kind for row in rows[1:]}:
            assert f"{names[kind]}: 1" in text, kind
        assert "Run the sync now" in text and "Full re-sync" in text
        assert (await client.get("/admin/sync/nope")).status_code == 404
        state = (await client.get("/api/v1/connectors/crm", headers=API)).json()
    assert state["paused"] is False and state["watermark"] == "seq-41"
    assert state["dead"] == 1 and sum(state["queued"].values()) == len(rows) - 1
    assert state["last_sync"]["written"] == 9 and state["last_poll"]["events"] == 4
    assert state["dead_letters"][0]["last_error"] == "record is locked by someone"
    assert state["rejected_webhooks"][0]["reason"] == "bad signature <b>"
    assert state["next_source"] == "estimate" and state["next_sync"] is not None
    assert state["schedule"]["config_cron"] == "0 * * * *" and state["schedule"]["poll_seconds"] == 60


async def test_the_run_history_is_paged(make_hub) -> None:
    hub = await make_hub()
    async with hub.store.session() as s:
        for i in range(45):
            s.add(SyncRun(connector="crm", kind="sync", started_at=utcnow(), finished_at=utcnow(), written=i))
    async with admin_client(hub) as client:
        first = await client.get("/admin/sync/crm")
        third = await client.get("/admin/sync/crm?page=3")
        assert "Page 1 of 3" in first.text and "Older runs" in first.text and "Newer runs" not in first.text
        assert "Page 3 of 3" in third.text and "Older runs" not in third.text
        assert len(re.findall(r"<td>sync</td>", third.text)) == 5
        api = (await client.get("/api/v1/connectors/crm/runs?limit=10&offset=40", headers=API)).json()
    assert [run["written"] for run in api] == [4, 3, 2, 1, 0]


async def test_run_now_writes_and_is_audited(make_hub, crm_state) -> None:
    hub = await make_hub()
    await answered(hub, crm_state, 2)
    async with admin_client(hub) as client:
        done = await act(client, "/admin/sync/crm/run")
        assert done.status_code == 303 and "done=sync-done" in done.headers["location"]
        page = await client.get(done.headers["location"])
        assert "The sync ran: 6 written" in page.text
    assert not await writebacks(hub, state="queued") and len(crm_state.records) == 6
    assert ("admin", "sync.run", "crm") in await audit_log(hub)


async def test_pause_stops_the_scheduled_jobs_and_resume_lets_them_run(make_hub, crm_state) -> None:
    hub = await make_hub()
    await answered(hub, crm_state, 1)
    jobs = Scheduler(hub, tick_seconds=3600)
    jobs.setup()
    async with admin_client(hub) as client:
        assert (await act(client, "/admin/sync/crm/pause")).headers["location"].endswith("done=paused")
        page = await client.get("/admin/sync/crm")
        assert "paused" in page.text and "none while paused" in page.text and "Resume" in page.text
        # the cron sync, the poll and the prompt sync all leave a paused connector alone
        await jobs._syncer("crm")()
        await jobs._poller("crm")()
        assert await jobs._sync_settled(0.0) is None
        assert len(await writebacks(hub, state="queued")) == 3 and not crm_state.batches
        async with hub.store.session() as s:
            assert not await s.scalar(select(func.count()).select_from(SyncRun))
        # run now says why nothing ran
        refused = await act(client, "/admin/sync/crm/run")
        assert "done=sync-paused" in refused.headers["location"]
        # webhooks are still taken and stored while paused
        body, headers = webhook("C-while-paused", "P1")
        assert (await client.post("/hooks/crm", content=body, headers=headers)).status_code == 200
        async with hub.store.session() as s:
            assert await s.scalar(select(Event.id).where(Event.record_id == "C-while-paused")) is not None
        assert (await act(client, "/admin/sync/crm/resume")).headers["location"].endswith("done=resumed")
        await jobs._syncer("crm")()
    assert not await writebacks(hub, state="queued") and len(crm_state.records) == 3
    async with hub.store.session() as s:
        row = await s.get(ConnectorControl, "crm")
        assert row is not None and row.paused is False and row.updated_by == "admin"
    actions = [action for _, action, _ in await audit_log(hub)]
    assert actions == ["sync.pause", "sync.run", "sync.resume"]


async def test_the_schedule_override_retimes_the_scheduler_jobs(make_hub) -> None:
    hub = await make_hub()
    jobs = Scheduler(hub, tick_seconds=3600)
    jobs.setup()
    assert isinstance(jobs.scheduler.get_job("sync:crm").trigger, CronTrigger)
    assert jobs.scheduler.get_job("poll:crm") is None  # the config polls not
    async with admin_client(hub) as client:
        saved = await act(client, "/admin/sync/crm/schedule", sync_seconds="120", poll_seconds="45")
        assert saved.headers["location"].endswith("done=schedule")
        await jobs._controls()  # what every scheduler does at each tick, whichever process stored it
        sync_job, poll_job = jobs.scheduler.get_job("sync:crm"), jobs.scheduler.get_job("poll:crm")
        assert (
            isinstance(sync_job.trigger, IntervalTrigger) and sync_job.trigger.interval.total_seconds() == 120
        )
        assert (
            isinstance(poll_job.trigger, IntervalTrigger) and poll_job.trigger.interval.total_seconds() == 45
        )
        page = await client.get("/admin/sync/crm")
        assert (
            "every 120 seconds" in page.text and "every 45 seconds" in page.text and "0 * * * *" in page.text
        )
        bad = await act(client, "/admin/sync/crm/schedule", sync_seconds="3", poll_seconds="")
        assert bad.headers["location"].endswith("done=schedule-invalid")
        nonsense = await act(client, "/admin/sync/crm/schedule", sync_seconds="-5")
        assert nonsense.headers["location"].endswith("done=schedule-invalid")
        # back to the config: the cron again, and no polling
        await act(client, "/admin/sync/crm/schedule", sync_seconds="", poll_seconds="")
        await jobs._controls()
    assert isinstance(jobs.scheduler.get_job("sync:crm").trigger, CronTrigger)
    assert jobs.scheduler.get_job("poll:crm") is None


async def test_a_running_scheduler_shows_its_next_runs_and_applies_a_change_at_once(make_hub) -> None:
    hub = await make_hub()
    jobs = Scheduler(hub, tick_seconds=3600)  # only the wake of a change re-reads the controls in this test
    jobs.start()
    try:
        await scheduled_next_runs(hub, jobs)
    finally:
        await jobs.shutdown()


async def scheduled_next_runs(hub, jobs: Scheduler) -> None:
    async with admin_client(hub, jobs) as client:
        page = await client.get("/admin/sync/crm")
        assert "as the scheduler of this process has them" in page.text
        await act(client, "/admin/sync/crm/schedule", sync_seconds="600", poll_seconds="")
        state = (await client.get("/api/v1/connectors/crm", headers=API)).json()
        assert state["next_source"] == "scheduler"
        for _ in range(100):  # the change woke the scheduler's control job
            state = (await client.get("/api/v1/connectors/crm", headers=API)).json()
            if (
                state["next_sync"]
                and (datetime.fromisoformat(state["next_sync"]) - utcnow()).total_seconds() > 500
            ):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the sync was not re-timed: {state}")


async def test_replay_one_dead_letter_or_all(make_hub, crm_state) -> None:
    hub = await make_hub()
    await answered(hub, crm_state, 2)
    rows = await writebacks(hub)
    async with hub.store.session() as s:
        await s.execute(
            update(WriteBack)
            .where(WriteBack.id.in_([rows[0].id, rows[1].id]))
            .values(state="dead", last_error="x")
        )
    async with admin_client(hub) as client:
        one = await act(client, "/admin/sync/crm/replay", id=str(rows[0].id))
        assert one.headers["location"].endswith("done=replay&count=1")
        assert [r.id for r in await writebacks(hub, state="dead")] == [rows[1].id]
        rest = await act(client, "/admin/sync/crm/replay")
        assert rest.headers["location"].endswith("done=replay&count=1")
        assert (await act(client, "/admin/sync/crm/replay", id="true")).status_code == 422
    assert not await writebacks(hub, state="dead")
    await hub.sync.run("crm")
    assert len(crm_state.records) == len(rows)


async def test_full_resync_names_its_cost_then_queues_everything_once_again(make_hub, crm_state) -> None:
    hub = await make_hub()
    hub.connectors["crm"].batch_size = 3
    await answered(hub, crm_state, 4)  # 4 timelines, 4 case feedbacks, 4 summaries
    await hub.sync.run("crm")
    created = crm_state.creates
    assert len(crm_state.records) == 12 == created
    async with admin_client(hub) as client:
        confirm = await client.get("/admin/sync/crm/full")
        assert confirm.status_code == 200
        assert "12 items" in confirm.text
        # batches of 3 of one family: 2 + 2 + 2 calls
        assert "at least 6 calls" in confirm.text
        plan = (await client.get("/api/v1/connectors/crm/full-resync/plan", headers=API)).json()
        assert plan == {
            "items": 12,
            "by_kind": {"case_feedback": 4, "person_summary": 4, "timeline_entry": 4},
            "batch_size": 3,
            "calls": 6,
        }
        assert not await writebacks(hub, state="queued")  # the confirmation page changed nothing
        done = await client.post("/admin/sync/crm/full", data={"csrf": csrf_of(confirm.text)})
        assert "done=full-done" in done.headers["location"] and "count=12" in done.headers["location"]
        assert "12 items were queued again" in (await client.get(done.headers["location"])).text
    assert not await writebacks(hub, state="queued")
    # written again as upserts on the same keys: no record twice
    assert crm_state.creates == created and crm_state.updates == 12 and len(crm_state.records) == 12
    async with hub.store.session() as s:
        assert await s.scalar(select(func.count()).select_from(SyncRun).where(SyncRun.kind == "full")) == 1
    assert ("admin", "sync.full", "crm") in await audit_log(hub)


async def test_a_viewer_may_look_but_every_action_is_refused(make_hub) -> None:
    hub = await make_hub()
    hub.config.hub.admin_password = SecretStr(PASSWORD)
    app = create_app(hub, scheduler=False)
    app.dependency_overrides[current_user] = lambda: User("vera", Role.VIEWER)
    async with asgi_client(app) as client:
        page = await client.get("/admin/sync/crm")
        assert (
            page.status_code == 200
            and "Run the sync now" not in page.text
            and 'name="sync_seconds"' not in page.text
        )
        assert (await client.get("/admin/sync")).status_code == 200
        csrf = csrf_of((await client.get("/admin/login")).text)
        for action in ACTIONS:
            refused = await client.post(f"/admin/sync/crm/{action}", data={"csrf": csrf})
            assert refused.status_code == 403, action
        assert (await client.get("/admin/sync/crm/full")).status_code == 403
    assert await audit_log(hub) == []
    async with hub.store.session() as s:
        assert await s.get(ConnectorControl, "crm") is None


async def test_every_action_needs_the_form_csrf_field_and_a_session(make_hub) -> None:
    hub = await make_hub()
    async with admin_client(hub) as client:
        for action in ACTIONS:
            assert (await client.post(f"/admin/sync/crm/{action}", data={})).status_code == 403, action
    hub.config.hub.admin_password = SecretStr(PASSWORD)
    async with asgi_client(create_app(hub, scheduler=False)) as anonymous:
        assert (await anonymous.get("/admin/sync")).status_code == 303
        assert (await anonymous.post("/admin/sync/crm/pause", data={})).status_code == 303
    assert await audit_log(hub) == []


async def test_the_api_acts_as_api_and_its_document_covers_the_actions(make_hub, crm_state) -> None:
    hub = await make_hub()
    await answered(hub, crm_state, 1)
    async with asgi_client(create_app(hub, scheduler=False)) as client:
        assert (await client.post("/api/v1/connectors/crm/sync")).status_code == 401
        ran = (await client.post("/api/v1/connectors/crm/sync", headers=API)).json()
        assert ran["status"] == "done" and ran["written"] == 3
        paused = (await client.post("/api/v1/connectors/crm/pause", headers=API)).json()
        assert paused["paused"] is True and paused["changed_by"] == "api"
        assert (await client.post("/api/v1/connectors/crm/sync", headers=API)).json() == {
            "status": "paused",
            "written": None,
            "retried": None,
            "dead": None,
            "events": None,
            "error": None,
        }
        assert (await client.post("/api/v1/connectors/crm/poll", headers=API)).status_code == 409
        assert (await client.post("/api/v1/connectors/crm/resume", headers=API)).json()["paused"] is False
        for bad in ({"sync_seconds": 5}, {"sync_seconds": True}, {"poll_seconds": "60"}, {"every": 60}):
            refused = await client.put("/api/v1/connectors/crm/schedule", headers=API, json=bad)
            assert refused.status_code == 422, bad
        timed = await client.put(
            "/api/v1/connectors/crm/schedule", headers=API, json={"sync_seconds": 300, "poll_seconds": 60}
        )
        assert (
            timed.json()["schedule"]["sync_seconds"] == 300 and timed.json()["schedule"]["poll_seconds"] == 60
        )
        polled = (await client.post("/api/v1/connectors/crm/poll", headers=API)).json()
        assert polled["status"] == "done" and polled["error"] is None
        full = (await client.post("/api/v1/connectors/crm/full-resync", headers=API)).json()
        assert full["requeued"] == 3 and full["run"]["written"] == 3
        rows = await writebacks(hub)
        async with hub.store.session() as s:
            await s.execute(update(WriteBack).where(WriteBack.id == rows[0].id).values(state="dead"))
        replayed = await client.post("/api/v1/dead-letters/replay", headers=API, json={"ids": [rows[0].id]})
        assert replayed.json() == {"requeued": 1}
        assert (await client.post("/api/v1/connectors/nope/sync", headers=API)).status_code == 404
        document = (await client.get("/api/v1/openapi.json", headers=API)).json()
    paths = document["paths"]
    for path, method in [
        ("/api/v1/connectors/{name}", "get"),
        ("/api/v1/connectors/{name}/runs", "get"),
        ("/api/v1/connectors/{name}/sync", "post"),
        ("/api/v1/connectors/{name}/poll", "post"),
        ("/api/v1/connectors/{name}/full-resync/plan", "get"),
        ("/api/v1/connectors/{name}/full-resync", "post"),
        ("/api/v1/connectors/{name}/pause", "post"),
        ("/api/v1/connectors/{name}/resume", "post"),
        ("/api/v1/connectors/{name}/schedule", "put"),
    ]:
        operation = paths[path][method]
        assert "$ref" in str(operation["responses"]["200"]), (path, method)
    assert "ScheduleRequest" in document["components"]["schemas"]
    assert not any(path.startswith("/admin") for path in paths)
    log = await audit_log(hub)
    assert {actor for actor, _, _ in log} == {"api"}
    assert [action for _, action, _ in log] == [
        "sync.run",
        "sync.pause",
        "sync.run",
        "sync.resume",
        "sync.schedule",
        "sync.poll",
        "sync.full",
        "sync.replay",
    ]


async def test_controls_refuse_schedules_out_of_range(make_hub) -> None:
    hub = await make_hub()
    for sync_seconds, poll_seconds in [(5, None), (None, 9), (0, None), (controls.MAX_SECONDS + 1, None)]:
        try:
            await controls.set_schedule(hub, "crm", sync_seconds, poll_seconds, "cli:test")
        except ValueError:
            continue
        raise AssertionError(f"accepted {sync_seconds}, {poll_seconds}")
    await controls.set_schedule(hub, "crm", None, 0, "cli:test")
    assert not await controls.polls(hub, "crm")


async def test_the_cli_pauses_and_resumes_and_its_sync_and_status_honour_it(
    make_hub, crm_state, database_url, fake_crm, tmp_path
) -> None:
    from tests.conftest import config_text
    from tests.test_cli import cxhub

    config_file = tmp_path / "cxhub.toml"
    config_file.write_text(config_text(database_url, fake_crm.url))
    hub = await make_hub()
    await answered(hub, crm_state, 1)
    code, out = await asyncio.to_thread(cxhub, "pause", "crm", "-c", str(config_file))
    assert code == 0 and "crm: paused" in out, out
    code, out = await asyncio.to_thread(cxhub, "sync", "-c", str(config_file))
    assert code == 0 and "crm: paused" in out and not crm_state.batches, out
    code, out = await asyncio.to_thread(cxhub, "status", "-c", str(config_file))
    assert "paused by cli:" in " ".join(out.split()), out
    code, out = await asyncio.to_thread(cxhub, "resume", "crm", "-c", str(config_file))
    assert code == 0 and "crm: resumed" in out, out
    code, out = await asyncio.to_thread(cxhub, "sync", "--full", "-c", str(config_file))
    assert code == 0 and "written 3" in out, out
    assert (await asyncio.to_thread(cxhub, "pause", "nope", "-c", str(config_file)))[0] == 2
    log = await audit_log(hub)
    assert [action for _, action, _ in log] == ["sync.pause", "sync.resume", "sync.full"]
    assert all(actor.startswith("cli:") for actor, _, _ in log)


async def test_run_now_goes_on_in_the_background_and_steps_aside_for_another_process(
    make_hub, crm_state
) -> None:
    hub = await make_hub()
    await answered(hub, crm_state, 1)
    # another process holds the connector's job lock: nothing starts, and that run writes what is due
    assert await hub.store.acquire_lock("job:sync:crm", "elsewhere:1", 60)
    assert (await controls.run_sync(hub, "crm")).status == "busy"
    assert not crm_state.batches
    await hub.store.release_lock("job:sync:crm", "elsewhere:1")
    # a slow CRM: the action answers at once, the run goes on and a clean stop lets it finish
    crm_state.latency = 0.3
    assert (await controls.run_sync(hub, "crm", wait=0)).status == "running"
    await controls.finish_runs(hub, 10)
    assert len(crm_state.records) == 3 and not await writebacks(hub, state="queued")


async def test_a_worker_in_another_process_follows_what_the_web_process_stored(make_hub, crm_state) -> None:
    """``cxhub serve --no-scheduler`` beside ``cxhub worker``: two hubs on one database, the scheduler in one."""
    web, worker = await make_hub(), await make_hub()
    jobs = Scheduler(worker, tick_seconds=0.2)
    jobs.start()
    try:
        async with admin_client(web) as client:
            await act(client, "/admin/sync/crm/schedule", sync_seconds="900", poll_seconds="30")
            for _ in range(100):  # the worker re-reads the controls at its next tick
                sync_job, poll_job = jobs.scheduler.get_job("sync:crm"), jobs.scheduler.get_job("poll:crm")
                if isinstance(sync_job.trigger, IntervalTrigger) and poll_job is not None:
                    break
                await asyncio.sleep(0.05)
            assert sync_job.trigger.interval.total_seconds() == 900
            assert poll_job.trigger.interval.total_seconds() == 30
            page = await client.get("/admin/sync/crm")
            assert "next runs are estimated" in page.text and "every 900 seconds" in page.text
            await act(client, "/admin/sync/crm/pause")
            # an answer while paused: the worker's prompt sync and scheduled sync leave it queued
            await answered(web, crm_state, 1)
            worker.wake("sync")
            await jobs._syncer("crm")()
            await asyncio.sleep(0.5)
            assert not crm_state.batches and len(await writebacks(web, state="queued")) == 3
            await act(client, "/admin/sync/crm/resume")
            worker.wake("sync")
            for _ in range(100):  # the worker's prompt sync writes it now
                if len(crm_state.records) == 3:
                    break
                await asyncio.sleep(0.05)
            assert len(crm_state.records) == 3
    finally:
        await jobs.shutdown()
