"""The write-back queue: batches, coalescing, retries with Retry-After, dead letters, replay, polling."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
from datetime import timedelta

import pytest
from sqlalchemy import event, select, text
from structlog.testing import capture_logs

from hub.errors import AuthError, TransientError
from hub.models import WriteBackResult
from hub.store.tables import Cursor, Invitation, SyncRun, WriteBack, utcnow
from hub.sync import RunStats, SyncService
from tests.fakes.crm import free_port
from tests.helpers import case_event, statements_run, survey_flow, token_of


async def answer(hub, crm_state, case_id: str, person: str, rating: int, comment: str | None = None) -> str:
    token = await survey_flow(hub, crm_state, case_id, person)
    _, page = await hub.engine.page_for_token(token)
    return (await hub.engine.record_answer(page.invitation_id, rating, comment=comment)).id


async def claim_all(hub, limit: int = 10) -> list[WriteBack]:
    """Claim batch after batch (each holds one kind) until nothing is left."""
    claimed: list[WriteBack] = []
    while batch := await hub.sync.claim("crm", limit):
        assert len({row.kind for row in batch}) == 1
        claimed += batch
    return claimed


async def rows(hub) -> list[WriteBack]:
    async with hub.store.session() as s:
        return list(await s.scalars(select(WriteBack).order_by(WriteBack.id)))


async def test_summaries_are_coalesced_and_batches_respect_the_connector_size(make_hub, crm_state) -> None:
    hub = await make_hub()
    hub.config.policy.min_days_between_surveys = 0
    hub.connectors["crm"].batch_size = 4
    for i, rating in enumerate([3, 8, 10]):
        await answer(hub, crm_state, f"C{i}", "P1", rating, comment=f"c{i}" if i < 2 else None)
    stats = await hub.sync.run("crm")
    # 3 timeline entries + 3 case feedbacks + ONE summary for the person = 7 items, one kind per batch
    assert stats.written == 7
    kinds = [[item["payload"]["kind"] for item in batch] for batch in crm_state.batches]
    assert kinds == [["timeline_entry"] * 3, ["case_feedback"] * 3, ["person_summary"]]
    summary = crm_state.records["summary:1"]["payload"]
    assert summary["count"] == 3
    assert summary["latest_rating"] == 10 and summary["latest_category"] == "promoter"
    assert summary["latest_comment"] == "c1"  # the last comment given
    assert summary["average_rating"] == 7.0 and summary["average_rating_30_days"] == 7.0


async def test_a_batch_of_summaries_is_one_read_of_its_people_answers(make_hub, crm_state) -> None:
    """Each person's summary is their own (count, latest, averages, last comment), and the batch's answers
    are read once for all of its people, not once per person."""
    hub = await make_hub()
    hub.config.policy.min_days_between_surveys = 0
    answers = {
        "P1": [(3, "slow"), (9, None)],
        "P2": [(10, "great")],
        "P3": [(6, None), (0, "bad"), (7, None)],
    }
    for person, given in answers.items():
        crm_state.people[person] = {"id": person, "email": f"{person.lower()}@example.com"}
        for i, (rating, comment) in enumerate(given):
            await answer(hub, crm_state, f"{person}-{i}", person, rating, comment=comment)
    with statements_run(hub) as statements:
        await hub.sync.run("crm")
    summaries = [item["payload"] for batch in crm_state.batches for item in batch]
    summaries = [p for p in summaries if p["kind"] == "person_summary"]
    assert len(summaries) == 3
    written = {
        key.removeprefix("summary:"): record["payload"]
        for key, record in crm_state.records.items()
        if key.startswith("summary:")
    }
    by_count = {payload["count"]: payload for payload in written.values()}
    assert by_count[2]["latest_rating"] == 9 and by_count[2]["latest_comment"] == "slow"
    assert by_count[2]["average_rating"] == 6.0
    assert by_count[1]["latest_rating"] == 10 and by_count[1]["latest_category"] == "promoter"
    assert by_count[3]["latest_rating"] == 7 and by_count[3]["latest_comment"] == "bad"
    assert by_count[3]["latest_category"] == "passive" and by_count[3]["average_rating"] == 4.33
    reads = [sql for sql in statements if "FROM responses" in sql]
    assert len(reads) == 1, reads


async def test_on_sqlite_a_sync_run_writes_through_the_store_writer_only(make_hub, crm_state) -> None:
    """A run's claims, outcomes and bookkeeping are written by the store's one writer connection, beside the
    answers and webhooks. Written through the pooled connections instead, they were a second writer in the
    process: SQLite lets one write at a time, and the other waited in its busy handler, sleeping 1 to 100 ms
    a try, while the survey pages waited behind it."""
    hub = await make_hub()
    if not hub.store.is_sqlite:
        pytest.skip("PostgreSQL has no single writer: every pooled connection writes")
    hub.config.policy.min_days_between_surveys = 0
    await answer(hub, crm_state, "C1", "P1", 9, comment="fine")
    await hub.sync.replay("crm")  # a dead letter replayed, like the cockpit's button (none here)
    pooled: list[str] = []

    def remember(_conn, _cursor, statement: str, *_args) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            pooled.append(statement)

    event.listen(hub.store.engine.sync_engine, "before_cursor_execute", remember)
    try:
        stats = await hub.sync.run("crm")
        await hub.sync.release_leases()
    finally:
        event.remove(hub.store.engine.sync_engine, "before_cursor_execute", remember)
    assert stats.written == 3
    async with hub.store.session() as s:
        states = set(await s.scalars(select(WriteBack.state)))
        finished = list(await s.scalars(select(SyncRun.finished_at).where(SyncRun.kind == "sync")))
    assert states == {"done"} and finished and all(finished)
    assert pooled == []


async def test_on_sqlite_a_prompt_run_holds_the_writer_only_on_the_event_loops_thread(
    make_hub, crm_state
) -> None:
    """The prompt sync claims and records its batches beside the survey pages. On the store writer's thread
    each of its small transactions held the writer for 2 to 40 ms (every step waiting for the event loop's
    thread to let go of the interpreter lock), and every answer behind it waited: its writes are short
    writes, run right on the loop's thread while the file is free."""
    hub = await make_hub()
    if not hub.store.is_sqlite:
        pytest.skip("PostgreSQL has no writer thread: every write goes through the pool")
    hub.config.policy.min_days_between_surveys = 0
    hub.connectors["crm"].batch_size = 2
    for i in range(3):
        crm_state.people[f"P{i}"] = {"id": f"P{i}", "email": f"p{i}@example.com"}
        await answer(hub, crm_state, f"C{i}", f"P{i}", 9, comment="fine")
    threads: list[str] = []

    def remember(_conn, _cursor, statement: str, *_args) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            threads.append(threading.current_thread().name)

    for engine in hub.store.engines():
        event.listen(engine, "before_cursor_execute", remember)
    try:
        stats = await hub.sync.run("crm", quiet_seconds=hub.config.sync.prompt_seconds)
    finally:
        for engine in hub.store.engines():
            event.remove(engine, "before_cursor_execute", remember)
    assert stats.written == 9 and stats.batches == 6  # three kinds, two batches each
    # the run's start, a claim and a recording per batch, the run's end: all on the loop's own thread
    assert len(threads) >= 2 + 2 * stats.batches
    assert set(threads) == {threading.current_thread().name}


async def test_a_sync_run_lets_the_other_tasks_of_the_process_in_between_its_steps(
    make_hub, crm_state
) -> None:
    """From the CRM's answer to its next call a batch waits for nothing: its outcome recorded, the next batch
    claimed, its summaries read and its items built. Run as one step, the survey pages' requests of that
    moment waited for all of it; the run lets them in between its steps."""
    hub = await make_hub()
    hub.config.policy.min_days_between_surveys = 0
    hub.connectors["crm"].batch_size = 2
    for i in range(3):
        crm_state.people[f"P{i}"] = {"id": f"P{i}", "email": f"p{i}@example.com"}
        await answer(hub, crm_state, f"C{i}", f"P{i}", 9, comment="fine")

    steps: list[tuple[str, int]] = []  # what the run did, and how many turns the others had had by then

    async def at_once(batch):  # a CRM that answers without the run waiting for it
        steps.append(("sent", turns))
        return [WriteBackResult.ok(item, f"R-{item.id}") for item in batch]

    claim = hub.sync.claim

    async def claimed(*args, **kwargs):
        rows = await claim(*args, **kwargs)
        steps.append(("claimed", turns))
        return rows

    hub.connectors["crm"].write_back = at_once
    hub.sync.claim = claimed
    turns = 0

    async def other_requests() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    others = asyncio.create_task(other_requests())
    await asyncio.sleep(0)
    before = turns
    try:
        stats = await hub.sync.run("crm")
    finally:
        others.cancel()
    assert stats.written == 9 and stats.batches == 6  # three kinds, two batches each
    # between a claim and the CRM's call: once after the claim, once after the batch's summaries and items
    sends = [(steps[k][1], steps[k + 1][1]) for k in range(len(steps) - 1) if steps[k + 1][0] == "sent"]
    assert len(sends) == stats.batches
    assert all(sent - claimed >= 2 for claimed, sent in sends), steps
    assert turns - before >= 3 * stats.batches


async def test_a_kind_with_more_items_than_the_batch_size_is_split(make_hub, crm_state) -> None:
    hub = await make_hub()
    hub.config.policy.min_days_between_surveys = 0
    hub.connectors["crm"].batch_size = 2
    for i in range(5):
        await answer(hub, crm_state, f"C{i}", "P1", 9)
    assert (await hub.sync.run("crm")).written == 11  # 5 timeline entries, 5 case feedbacks, 1 summary
    sizes = [(batch[0]["payload"]["kind"], len(batch)) for batch in crm_state.batches]
    assert all(size <= 2 for _, size in sizes)
    assert all(len({item["payload"]["kind"] for item in batch}) == 1 for batch in crm_state.batches)
    assert [size for kind, size in sizes if kind == "timeline_entry"] == [2, 2, 1]


async def test_retry_after_is_honoured_then_the_item_is_written(make_hub, crm_state) -> None:
    hub = await make_hub()
    await answer(hub, crm_state, "C1", "P1", 6)
    crm_state.fail_next.append((429, {"Retry-After": "120"}))
    stats = await hub.sync.run("crm")
    # the run stops at the first refused batch; the CRM's "wait" holds every other item of it too
    assert (stats.written, stats.retried, stats.error) == (0, 1, "TransientError: write batch: HTTP 429")
    assert [row.attempts for row in await rows(hub)] == [1, 0, 0]
    for row in await rows(hub):
        assert row.state == "queued"
        assert row.next_attempt_at >= hub.now() + timedelta(seconds=115)
    assert await hub.sync.pending("crm") == 0  # nothing due before Retry-After
    hub.now = lambda: row.next_attempt_at + timedelta(seconds=1)
    assert (await hub.sync.run("crm")).written == 3


async def test_a_batch_refused_as_a_whole_comes_back_as_one_batch(make_hub, crm_state) -> None:
    """A 429 (or a 503) for a whole batch: its items wait for one due time, not one random time each, which
    sent a refused batch of 1000 back as hundreds of batches of a few items, just when the CRM said "less"."""
    hub = await make_hub()
    hub.config.policy.min_days_between_surveys = 0
    hub.connectors["crm"].batch_size = 10
    hub.config.sync.backoff_base_seconds = 30  # the defaults: a retry's jitter up to 30 s
    hub.config.sync.backoff_max_seconds = 3600
    for i in range(6):
        await answer(hub, crm_state, f"C{i}", "P1", 9)
    clock = [utcnow()]
    hub.now = lambda: clock[0]
    crm_state.fail_next.append((429, {"Retry-After": "2"}))
    assert (await hub.sync.run("crm")).retried == 6
    refused = [row for row in await rows(hub) if row.attempts == 1]
    assert len(refused) == 6 and len({row.kind for row in refused}) == 1
    clock[0] = min(row.next_attempt_at for row in refused) + timedelta(milliseconds=1)
    crm_state.batches.clear()
    assert (await hub.sync.run("crm")).written == 13
    kind = refused[0].kind
    assert [len(batch) for batch in crm_state.batches if batch[0]["payload"]["kind"] == kind] == [6]


async def test_dead_letter_after_max_attempts_then_replay(make_hub, crm_state) -> None:
    hub = await make_hub()
    await answer(hub, crm_state, "C1", "P1", 2)
    # a run stops at its first failing batch (one kind each): 3 kinds x 3 attempts
    crm_state.fail_next.extend([(503, {})] * 9)
    for _ in range(9):
        await hub.sync.run("crm")
    assert crm_state.fail_next == []
    assert [(r.state, r.attempts, r.last_error) for r in await rows(hub)] == [
        ("dead", 3, "write batch: HTTP 503")
    ] * 3
    assert await hub.sync.replay("crm") == 3
    assert (await hub.sync.run("crm")).written == 3
    assert {r.state for r in await rows(hub)} == {"done"}


async def test_a_bad_record_is_a_dead_letter_at_once_and_the_rest_go_on(make_hub, crm_state) -> None:
    hub = await make_hub()
    await answer(hub, crm_state, "bad", "P1", 7)
    stats = await hub.sync.run("crm")
    assert (stats.written, stats.dead) == (2, 1)
    dead = [r for r in await rows(hub) if r.state == "dead"]
    assert [(r.kind, r.last_error) for r in dead] == [("case_feedback", "record is locked")]


async def test_a_newer_answer_queued_during_a_write_is_not_lost(make_hub, crm_state) -> None:
    hub = await make_hub()
    response_id = await answer(hub, crm_state, "C1", "P1", 5)
    claimed = await claim_all(hub)
    assert len(claimed) == 3
    # the customer adds a comment while the batch is in flight
    _, page = await hub.engine.page_for_token(token_of(crm_state.outbox[0]["survey_url"]))
    await hub.engine.record_answer(page.invitation_id, None, comment="later comment")
    stats = RunStats()
    await hub.sync._write_batch("crm", claimed, stats)
    assert stats.written == 3
    assert {r.state for r in await rows(hub)} == {"queued"}  # the newer versions wait for the next run
    await hub.sync.run("crm")
    assert crm_state.records[f"timeline:{response_id}"]["payload"]["comment"] == "later comment"


async def test_a_claimed_item_is_taken_over_after_its_lease(make_hub, crm_state) -> None:
    hub = await make_hub()
    await answer(hub, crm_state, "C1", "P1", 8)
    assert len(await claim_all(hub)) == 3
    assert await hub.sync.claim("crm", 10) == []  # leased: nobody else takes them
    later = hub.now() + timedelta(seconds=hub.config.sync.lease_seconds + 1)
    hub.now = lambda: later
    assert len(await claim_all(hub)) == 3


async def test_a_slow_write_keeps_its_lease_so_no_other_worker_writes_it_twice(make_hub, crm_state) -> None:
    hub = await make_hub()
    hub.config.sync.lease_seconds = 0.3
    await answer(hub, crm_state, "C1", "P1", 8)
    crm_state.latency = 2.0  # a write several times longer than the lease, like a bulk job
    other = SyncService(hub)
    other.owner = "another-worker"
    run = asyncio.create_task(hub.sync.run("crm"))

    async def our_lease() -> tuple[int, object]:
        for _ in range(200):
            mine = [row for row in await rows(hub) if row.lease_owner == hub.sync.owner]
            if mine:
                assert len(mine) == 1  # the first batch (one kind) is being written
                return mine[0].id, mine[0].lease_until
            await asyncio.sleep(0.01)
        raise AssertionError("the first batch was never claimed")

    in_flight, first_lease = await our_lease()
    for _ in range(300):  # wait (by the store, not by the clock) until the lease is renewed
        still, renewed = await our_lease()
        assert still == in_flight, "the first batch was written before its lease was renewed"
        if renewed > first_lease:
            break
        await asyncio.sleep(0.01)
    assert renewed > first_lease, "the lease was renewed during the write"
    # another worker looks after the first lease ran out but before the renewed one does
    hub.now = lambda: first_lease + (renewed - first_lease) / 2
    taken = await other.claim("crm", 10)
    hub.now = utcnow
    assert taken and in_flight not in [row.id for row in taken]  # it took another kind's batch, not ours
    assert (await run).written == 3  # the other worker never wrote its claim: its lease ran out, ours took it
    assert sorted(len(batch) for batch in crm_state.batches) == [1, 1, 1]
    assert len({item["key"] for batch in crm_state.batches for item in batch}) == 3


async def test_every_run_is_recorded(make_hub, crm_state) -> None:
    hub = await make_hub()
    await answer(hub, crm_state, "C1", "P1", 9)
    await hub.sync.run("crm")
    async with hub.store.session() as s:
        run = await s.scalar(select(SyncRun).where(SyncRun.kind == "sync"))
    assert run.written == 3 and run.finished_at >= run.started_at and run.error is None


async def test_polling_stores_events_then_the_cursor(make_hub, crm_state) -> None:
    crm_state.cases = [{"id": "C7", "seq": 1, "person_id": "P1"}, {"id": "C8", "seq": 2, "person_id": "P3"}]
    hub = await make_hub()
    stats = await hub.sync.poll("crm")
    assert stats.events == 2
    async with hub.store.session() as s:
        cursor = await s.get(Cursor, ("crm", "events"))
        run = await s.scalar(select(SyncRun).where(SyncRun.kind == "poll"))
    assert cursor.value == "2" and run.watermark == "2" and run.events == 2
    # overlap with a webhook that already delivered C9 is dropped by event id
    await hub.engine.receive("crm", [case_event("C9")], source="webhook")
    crm_state.cases.append({"id": "C9", "seq": 3, "person_id": "P1"})
    assert (await hub.sync.poll("crm")).events == 0


async def test_full_resync_writes_everything_again_idempotently(make_hub, crm_state) -> None:
    hub = await make_hub()
    await answer(hub, crm_state, "C1", "P1", 9)
    await hub.sync.run("crm")
    assert await hub.sync.requeue_all("crm") == 3
    assert (await hub.sync.run("crm", kind="full")).written == 3
    assert (crm_state.creates, crm_state.updates) == (3, 3)


async def test_a_batch_held_back_before_it_was_sent_counts_no_attempt_and_never_dies(
    make_hub, crm_state
) -> None:
    """The hub's own API budget (or a CRM-wide limit) held the batch back: waiting must not use up attempts."""
    hub = await make_hub()
    await answer(hub, crm_state, "C1", "P1", 8)
    connector = hub.connectors["crm"]
    refusal = {"sent": False}

    async def held_back(batch):
        raise TransientError("the hub's API budget is spent", retry_after=30, sent=refusal["sent"])

    connector.write_back = held_back
    clock = [utcnow()]
    hub.now = lambda: clock[0]
    for _ in range(hub.config.sync.max_attempts + 2):
        stats = await hub.sync.run("crm")
        assert stats.stopped and stats.written == 0
        clock[0] += timedelta(hours=1)  # past every hold and backoff
    assert [(row.state, row.attempts) for row in await rows(hub)] == [("queued", 0)] * 3

    refusal["sent"] = True  # the same refusal after the batch reached the CRM does count
    await hub.sync.run("crm")
    assert sorted(row.attempts for row in await rows(hub)) == [0, 0, 1]


async def test_refused_credentials_use_no_attempt_so_the_queue_waits_for_the_admin(
    make_hub, crm_state
) -> None:
    """A 401 means the CRM applied nothing: the queue must outlive the days it takes an admin to fix the
    credentials, not turn into dead letters after ``max_attempts`` runs."""
    hub = await make_hub()
    await answer(hub, crm_state, "C1", "P1", 8)
    connector = hub.connectors["crm"]
    write = connector.write_back

    async def refused(batch):
        raise AuthError("the CRM refused the credentials (401)")

    connector.write_back = refused
    clock = [utcnow()]
    hub.now = lambda: clock[0]
    for _ in range(hub.config.sync.max_attempts + 2):
        stats = await hub.sync.run("crm")
        assert stats.stopped and stats.error.startswith("AuthError")
        clock[0] += timedelta(hours=1)  # past every hold and backoff
    assert [(row.state, row.attempts) for row in await rows(hub)] == [("queued", 0)] * 3

    connector.write_back = write  # the admin fixed the credentials
    clock[0] += timedelta(hours=1)
    while (await hub.sync.run("crm")).written:
        pass
    assert {row.state for row in await rows(hub)} == {"done"}


# --- a lease renewal never races the recording of its own batch --------------------------------------------------


async def test_the_lease_renewal_has_stopped_before_the_batch_is_recorded(make_hub, crm_state) -> None:
    """Renewing and recording the same rows at once deadlocked on PostgreSQL, and the batch was written again.

    The order is checked by the code paths themselves, not by the clock: the renewal must have returned (its
    last statement committed) before the recording of that batch begins.
    """
    hub = await make_hub()
    hub.config.sync.lease_seconds = 0.06  # renewals every 20 ms while the CRM takes its time
    crm_state.latency = 0.2
    await answer(hub, crm_state, "C1", "P1", 8)
    events: list[str] = []
    keep_leased, record = hub.sync._keep_leased, hub.sync._record

    async def watched_renewal(*args, **kwargs):
        events.append("renewal started")
        try:
            await keep_leased(*args, **kwargs)
        finally:
            events.append("renewal ended")

    async def watched_record(*args, **kwargs):
        events.append("recording")
        await record(*args, **kwargs)

    hub.sync._keep_leased = watched_renewal
    hub.sync._record = watched_record
    assert (await hub.sync.run("crm")).written == 3
    assert events == ["renewal started", "renewal ended", "recording"] * 3


# PostgreSQL only: it picks deadlock victims (40P01); SQLite serialises writers and makes them wait instead
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_recording_that_meets_a_deadlock_is_retried_and_nothing_is_written_twice(
    make_hub, crm_state
) -> None:
    hub = await make_hub()
    await answer(hub, crm_state, "C1", "P1", 8)
    # the database itself refuses the first recording with a real deadlock error, as it does for the victim
    async with hub.store.session() as s:
        for statement in (
            "CREATE SEQUENCE chaos_once",
            """CREATE FUNCTION chaos_deadlock() RETURNS trigger AS $$
               BEGIN
                 IF nextval('chaos_once') = 1 THEN
                   RAISE EXCEPTION 'deadlock detected (injected)' USING ERRCODE = 'deadlock_detected';
                 END IF;
                 RETURN NEW;
               END $$ LANGUAGE plpgsql""",
            """CREATE TRIGGER chaos_deadlock BEFORE UPDATE ON writebacks FOR EACH ROW
               WHEN (NEW.state = 'done') EXECUTE FUNCTION chaos_deadlock()""",
        ):
            await s.execute(text(statement))
    stats = await hub.sync.run("crm")
    assert stats.written == 3
    assert {row.state for row in await rows(hub)} == {"done"}
    async with hub.store.session() as s:
        assert await s.scalar(text("SELECT last_value FROM chaos_once")) > 1  # the injected deadlock happened
    assert len(crm_state.batches) == 3 and crm_state.creates == 3 and crm_state.updates == 0
    assert (await hub.sync.run("crm")).written == 0  # nothing is left to be written again


# PostgreSQL only: row locks are taken one by one there; SQLite's writer holds the whole file from its BEGIN
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("transaction", ["recording", "lease renewal"])
async def test_the_sync_locks_its_rows_in_the_answers_order_so_the_two_never_deadlock(
    make_hub, crm_state, transaction: str
) -> None:
    """Answers re-arm their keys person by person (``WriteBackQueue.write``). A recording (or a lease
    renewal) that locked its rows in id order met such a batch head-on wherever a later person's row was
    the older one, and PostgreSQL broke the deadlock only after its ``deadlock_timeout`` (a second), which
    every answer of that batch waited for (seen under load as a p99 of 940 ms)."""
    hub = await make_hub()
    hub.config.policy.min_days_between_surveys = 0
    pages = []
    crm_state.people["P2"] = {"id": "P2", "email": "p2@example.com"}
    for case_id, person in (("C1", "P1"), ("C2", "P2")):  # person ids in this order
        _, page = await hub.engine.page_for_token(await survey_flow(hub, crm_state, case_id, person))
        pages.append(page)
    for page in reversed(pages):  # their rows in the other: the second person's are the older
        await hub.engine.record_answer(page.invitation_id, 9)
    batch = await hub.sync.claim("crm", 10)
    assert [row.kind for row in batch] == ["person_summary"] * 2
    assert [row.person_id for row in batch] == sorted((row.person_id for row in batch), reverse=True)
    first, second = sorted(batch, key=lambda row: row.person_id)
    stop = asyncio.Event()
    if transaction == "recording":
        outcomes = [(row, WriteBackResult(item_id=row.id, status="ok"), None) for row in batch]
        syncing = hub.sync._record(outcomes, RunStats())
    else:
        hub.config.sync.lease_seconds = 0.03  # a renewal every 10 ms
        syncing = hub.sync._keep_leased(sorted(row.id for row in batch), stop)

    async with hub.store.engine.connect() as answers:  # an answer batch, half way through its upsert
        await answers.execute(
            text("UPDATE writebacks SET version = version + 1 WHERE id = :id"), {"id": first.id}
        )
        with capture_logs() as logs:
            task = asyncio.create_task(syncing)
            while not await _waiting_for_a_row_lock(hub):
                assert not task.done()
                await asyncio.sleep(0.01)
            # the answers go on to the next person's row: free, or held by the sync waiting for theirs
            await asyncio.wait_for(
                answers.execute(
                    text("UPDATE writebacks SET version = version + 1 WHERE id = :id"), {"id": second.id}
                ),
                timeout=0.5,  # a deadlock is found after a second (PostgreSQL's deadlock_timeout)
            )
            await answers.commit()
            await asyncio.sleep(0.05)  # a renewal or two more
            stop.set()
            await task
    assert not [e for e in logs if e["event"] in ("sync.transaction_retried", "lease.renewal_failed")]
    recorded = [row for row in await rows(hub) if row.id in (first.id, second.id)]
    if transaction == "recording":  # re-armed while written: queued again with the newer version, released
        assert [(row.state, row.version, row.lease_owner) for row in recorded] == [("queued", 2, None)] * 2
    else:  # still leased to this worker, renewed
        assert [(row.version, row.lease_owner) for row in recorded] == [(2, hub.sync.owner)] * 2


async def _waiting_for_a_row_lock(hub) -> bool:
    async with hub.store.engine.connect() as conn:
        waiting = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        )
    return bool(waiting)


# --- a CRM that refuses connections: no attempt is charged, the queue backs off, nothing dies -------------------


def _refused_by_requests(url: str) -> Exception:
    """The exception a requests-based connector lets through when the CRM's port is closed."""
    import requests

    try:
        requests.post(url, timeout=5)
    except requests.ConnectionError as exc:
        return exc
    raise AssertionError("the closed port answered")


@pytest.mark.parametrize("client", ["httpx", "requests", "per-item results"])
async def test_a_refused_connection_counts_no_attempt_and_the_outage_makes_no_dead_letter(
    make_hub, crm_state, client
) -> None:
    hub = await make_hub()
    await answer(hub, crm_state, "C1", "P1", 8)
    connector = hub.connectors["crm"]
    reachable = connector.client.base_url
    closed = f"http://127.0.0.1:{free_port()}"
    if client == "httpx":  # the real connector, pointed at a port nobody listens on
        connector.client.base_url = closed
    elif client == "requests":
        refused = _refused_by_requests(closed)

        async def raw_requests_error(batch):
            raise refused

        connector.write_back = raw_requests_error
    else:  # a connector that writes item by item and reports each as not sent

        async def each_not_sent(batch):
            return [WriteBackResult.transient(item, "connection refused", sent=False) for item in batch]

        connector.write_back = each_not_sent
    clock = [utcnow()]
    hub.now = lambda: clock[0]
    with capture_logs() as logs:
        for _ in range(hub.config.sync.max_attempts * 3):
            stats = await hub.sync.run("crm")
            assert stats.stopped and stats.written == 0
            clock[0] += timedelta(days=1)  # past every backoff
        assert [(row.state, row.attempts) for row in await rows(hub)] == [("queued", 0)] * 3
        if client == "httpx":
            connector.client.base_url = reachable
        else:
            del connector.write_back  # the connector's own method again
        assert (await hub.sync.run("crm")).written == 3
        assert (await hub.sync.run("crm")).written == 0
    events = [entry["event"] for entry in logs]
    assert events.count("sync.crm_not_reached") == 1 and events.count("sync.crm_reached_again") == 1
    assert events.index("sync.crm_not_reached") < events.index("sync.crm_reached_again")
    assert "sync.connector_failed" not in events  # an outage is not a crash with a traceback per run
    assert {row.state for row in await rows(hub)} == {"done"}


async def test_an_outage_backs_off_longer_and_longer_so_it_is_no_hot_loop(
    make_hub, crm_state, monkeypatch
) -> None:
    hub = await make_hub(sync="")
    hub.config.sync.backoff_base_seconds = 10
    hub.config.sync.backoff_max_seconds = 80
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # the jitter at its ceiling
    await answer(hub, crm_state, "C1", "P1", 8)
    hub.connectors["crm"].client.base_url = f"http://127.0.0.1:{free_port()}"
    clock = [utcnow()]
    hub.now = lambda: clock[0]
    waits: list[float] = []
    for _ in range(5):
        await hub.sync.run("crm")
        assert await hub.sync.pending("crm") == 0  # nothing is due right after a refused connection
        due = min(row.next_attempt_at for row in await rows(hub))
        waits.append((due - clock[0]).total_seconds())
        clock[0] = due
    assert waits == [10, 20, 40, 80, 80]
    assert {(row.state, row.attempts) for row in await rows(hub)} == {("queued", 0)}


async def test_polling_a_crm_that_refuses_connections_is_a_recorded_failure_not_a_crash(
    make_hub, crm_state
) -> None:
    crm_state.cases = [{"id": "C7", "seq": 1, "person_id": "P1"}]
    hub = await make_hub()
    connector = hub.connectors["crm"]
    reachable = connector.client.base_url
    connector.client.base_url = f"http://127.0.0.1:{free_port()}"
    stats = await hub.sync.poll("crm")
    assert stats.events == 0 and stats.error and "ConnectError" in stats.error
    async with hub.store.session() as s:
        run = await s.scalar(select(SyncRun).where(SyncRun.kind == "poll"))
        assert await s.get(Cursor, ("crm", "events")) is None  # the cursor did not move
    assert run.finished_at is not None and run.error == stats.error
    connector.client.base_url = reachable
    assert (await hub.sync.poll("crm")).events == 1


async def test_a_poll_that_meets_a_plugin_bug_is_recorded_as_failed_not_left_running(make_hub) -> None:
    hub = await make_hub()

    async def broken(cursor):
        raise KeyError("Id")

    hub.connectors["crm"].fetch_events = broken
    stats = await hub.sync.poll("crm")
    assert stats.error == "KeyError: 'Id'"
    async with hub.store.session() as s:
        [run] = list(await s.scalars(select(SyncRun).where(SyncRun.kind == "poll")))
    assert run.finished_at is not None and run.error == "KeyError: 'Id'"


async def _stream(hub, crm_state, clock: list, until, step: timedelta) -> dict[str, object]:
    """Other people's answers, one every ``step`` of the controlled clock up to ``until``: response id -> time."""
    answered = {}
    while clock[0] + step <= until:
        clock[0] += step
        person = f"Q{len(crm_state.people)}"
        crm_state.people[person] = {"id": person, "email": f"{person.lower()}@example.com"}
        answered[await answer(hub, crm_state, f"C{person}", person, 7)] = clock[0]
    return answered


def _written(crm_state) -> list[str]:
    return [item["key"] for batch in crm_state.batches for item in batch]


async def test_a_steady_stream_of_other_answers_never_delays_an_answer_that_has_settled(
    make_hub, crm_state
) -> None:
    """The prompt sync writes an answer once its own keys were quiet for ``prompt_seconds``, while other people's
    answers keep arriving every fraction of that. The connector used to count as settled only once no item at
    all arrived for the quiet period, so under a steady stream every answer waited for the ten-times cap."""
    from hub.scheduler import Scheduler

    hub = await make_hub()
    hub.config.sync.prompt_seconds = 10
    quiet = timedelta(seconds=10)
    clock = [utcnow()]
    hub.now = lambda: clock[0]
    first = await answer(hub, crm_state, "C1", "P1", 9)
    others = await _stream(hub, crm_state, clock, clock[0] + quiet * 0.9, quiet / 4)
    await Scheduler(hub)._sync_due()
    assert crm_state.batches == []  # nobody's answer was quiet for the quiet period yet: nothing is written
    others |= await _stream(hub, crm_state, clock, clock[0] + quiet * 0.9, quiet / 4)

    await Scheduler(hub)._sync_due()  # at 1.5 times the quiet period, well before the ten-times cap

    written = _written(crm_state)
    assert {f"timeline:{first}", f"case:{first}", "summary:1"} <= set(written)
    settled = {f"timeline:{id}" for id, at in others.items() if at <= clock[0] - quiet}
    recent = {f"timeline:{id}" for id, at in others.items() if at > clock[0] - quiet}
    assert len(settled) == 2 and len(recent) == 4  # answered at 0.25, 0.5 | 0.75 .. 1.5 quiet periods
    assert {key for key in written if key.startswith("timeline:")} == settled | {f"timeline:{first}"}
    assert await hub.sync.pending("crm") == 3 * len(recent)  # each waits for its own quiet period
    clock[0] += quiet
    await Scheduler(hub)._sync_due()
    assert sorted(_written(crm_state)) == sorted(set(_written(crm_state)))  # every item once
    assert len(_written(crm_state)) == 3 * (1 + len(others))
    assert await hub.sync.pending("crm", due_only=False) == 0


async def test_a_score_then_a_comment_within_the_quiet_period_is_one_write_amid_other_answers(
    make_hub, crm_state
) -> None:
    """The case the debounce exists for: the score waits for the follow-up, the comment re-arms the score's keys
    and completes the answer, so both go out in one write at once, however many other answers arrive."""
    from hub.scheduler import Scheduler

    hub = await make_hub()
    hub.config.sync.prompt_seconds = 10
    quiet = timedelta(seconds=10)
    clock = [utcnow()]
    hub.now = lambda: clock[0]
    start = clock[0]
    token = await survey_flow(hub, crm_state, "C1", "P1")
    _, page = await hub.engine.page_for_token(token)
    score = await hub.engine.record_answer(page.invitation_id, 3)
    mine = {f"timeline:{score.id}", f"case:{score.id}", "summary:1"}
    await _stream(hub, crm_state, clock, start + quiet * 0.6, quiet / 5)
    await Scheduler(hub)._sync_due()
    assert not mine & set(_written(crm_state))  # a score alone waits for the follow-up
    await hub.engine.record_answer(page.invitation_id, 3, comment="Too slow")  # 0.6 of the quiet period later
    await Scheduler(hub)._sync_due()  # the answer is complete: nothing more to wait for
    items = [item for batch in crm_state.batches for item in batch if item["key"] in mine]
    assert sorted(item["key"] for item in items) == sorted(mine)  # each once
    case = next(item for item in items if item["key"] == f"case:{score.id}")
    assert (case["payload"]["rating"], case["payload"]["comment"]) == (3, "Too slow")
    await _stream(hub, crm_state, clock, start + quiet * 3, quiet / 5)
    await Scheduler(hub)._sync_due()
    assert sorted(key for key in _written(crm_state) if key in mine) == sorted(mine)  # and never again


async def test_a_complete_answer_is_written_at_once_and_a_score_alone_after_the_quiet_period(
    make_hub, crm_state
) -> None:
    """A score with its comment, or the score of a survey that asks no follow-up, is the whole answer: the
    prompt sync writes it at once. A score whose follow-up is still open waits ``prompt_seconds`` for it."""
    from hub.scheduler import Scheduler

    hub = await make_hub(
        """
        [surveys.bare]
        kind = "nps"
        comment = false

        [campaigns.won]
        trigger = { connector = "crm", event = "opportunity.won" }
        survey = "bare"
        channels = ["mail"]
        """
    )
    hub.config.sync.prompt_seconds = 10
    clock = [utcnow()]
    hub.now = lambda: clock[0]
    for person in ("Q1", "Q2", "Q3"):
        crm_state.people[person] = {"id": person, "email": f"{person.lower()}@example.com"}
    with_comment = await answer(hub, crm_state, "C1", "Q1", 9, comment="Quick and friendly")
    score_alone = await answer(hub, crm_state, "C2", "Q2", 8)
    won = case_event("O3", "Q3").model_copy(
        update={
            "event_id": "opportunity:O3:won",
            "event_type": "opportunity.won",
            "record_type": "opportunity",
        }
    )
    await hub.engine.receive("crm", [won], source="webhook")
    await hub.engine.process_pending()
    await hub.engine.dispatch_due()
    async with hub.store.session() as s:
        [bare] = await s.scalars(select(Invitation.id).where(Invitation.campaign == "won"))
    no_followup = (await hub.engine.record_answer(bare, 10)).id

    await Scheduler(hub)._sync_due()

    written = set(_written(crm_state))
    assert {f"timeline:{with_comment}", f"case:{with_comment}", f"timeline:{no_followup}"} <= written
    assert f"timeline:{score_alone}" not in written
    clock[0] += timedelta(seconds=10)
    await Scheduler(hub)._sync_due()
    assert f"timeline:{score_alone}" in _written(crm_state)
    assert await hub.sync.pending("crm", due_only=False) == 0


async def test_a_summary_re_armed_without_a_pause_is_still_written_within_the_cap(
    make_hub, crm_state
) -> None:
    """A person whose answers keep re-arming their summary every few seconds never lets it be quiet; it is
    written at least once per ten quiet periods all the same, with the latest answers, and then waits for a
    quiet moment again (the cap is no poll). Before, only items never written had a cap."""
    from hub.scheduler import Scheduler

    hub = await make_hub()
    hub.config.policy.min_days_between_surveys = 0
    hub.config.sync.prompt_seconds = 10
    step = timedelta(seconds=4)
    clock = [utcnow()]
    hub.now = lambda: clock[0]
    pages = []
    for i in range(4):
        token = await survey_flow(hub, crm_state, f"C{i}", "P1")
        pages.append((await hub.engine.page_for_token(token))[1])
    await hub.engine.record_answer(pages[0].invitation_id, 9, comment="Fine")
    await hub.sync.run("crm")  # the summary is written once
    assert _written(crm_state).count("summary:1") == 1
    start = clock[0] = clock[0] + timedelta(hours=1)  # an hour later, the person answers again and again

    writes = []
    rating = 0
    while clock[0] < start + timedelta(seconds=250):
        clock[0] += step
        rating = (rating + 1) % 11
        await hub.engine.record_answer(pages[1 + rating % 3].invitation_id, rating)  # changing their scores
        await Scheduler(hub)._sync_due()
        if _written(crm_state).count("summary:1") > 1 + len(writes):
            writes.append(clock[0])

    assert writes, "the summary was never written while re-armed every 4 seconds"
    assert writes[0] - start <= timedelta(seconds=100 + 4)  # within the cap of ten quiet periods
    assert all(b - a <= timedelta(seconds=100 + 4) for a, b in itertools.pairwise(writes))
    assert all(b - a > timedelta(seconds=10) for a, b in itertools.pairwise(writes))  # still debounced
    latest = crm_state.records["summary:1"]["payload"]
    assert latest["count"] == 4


async def _until_written(crm_state, key: str, seconds: float = 30) -> None:
    for _ in range(int(seconds * 20)):
        if key in crm_state.records:
            return
        await asyncio.sleep(0.05)


async def test_the_running_scheduler_writes_an_answer_when_it_is_ready_not_at_its_next_interval(
    make_hub, crm_state
) -> None:
    """The prompt sync is woken by the answer (a complete one goes at once) and then timed to the moment the
    next waiting item is ready (a score alone, after its quiet period), not left to an interval: here the
    safety-net interval is ten minutes, far beyond the wait below."""
    from hub.scheduler import Scheduler

    hub = await make_hub()
    hub.config.policy.min_days_between_surveys = 0
    hub.config.sync.prompt_seconds = 600  # the safety net runs every 600 s
    invitations = []
    for case in ("C1", "C2"):  # sent before the scheduler runs, whose own jobs would race these calls
        token = await survey_flow(hub, crm_state, case, "P1")
        invitations.append((await hub.engine.page_for_token(token))[1].invitation_id)
    jobs = Scheduler(hub)
    jobs.start()
    try:
        await asyncio.sleep(0.5)  # the jobs' first runs, at start, are over
        hub.config.sync.prompt_seconds = 1  # a score alone now waits one second for its follow-up
        complete = (await hub.engine.record_answer(invitations[0], 9, comment="Quick")).id
        await _until_written(crm_state, f"timeline:{complete}")
        assert f"timeline:{complete}" in crm_state.records  # woken by the answer
        score_alone = (await hub.engine.record_answer(invitations[1], 4)).id
        await _until_written(crm_state, f"timeline:{score_alone}")
        assert f"timeline:{score_alone}" in crm_state.records  # timed to its quiet period's end
        assert crm_state.records[f"timeline:{score_alone}"]["payload"]["rating"] == 4
    finally:
        await jobs.shutdown(grace_seconds=5)


async def test_a_score_alone_times_the_prompt_sync_to_its_quiet_period_instead_of_running_it_at_once(
    make_hub, crm_state
) -> None:
    """A pass of the prompt sync started by a score alone would find nothing ready (it waits for its follow-up
    comment): under a steady stream of answers such passes ran back to back, each holding the event loop
    in the answers' way. The answer times the sync to its own quiet period's end instead, where one pass
    writes every score that settled meanwhile; a complete answer still starts a pass at once."""
    from hub.scheduler import Scheduler

    hub = await make_hub()
    hub.config.policy.min_days_between_surveys = 0
    hub.config.sync.prompt_seconds = 600  # the safety net runs every 600 s
    invitations = []
    for case in ("C1", "C2", "C3", "C4", "C5"):
        token = await survey_flow(hub, crm_state, case, "P1")
        invitations.append((await hub.engine.page_for_token(token))[1].invitation_id)
    jobs = Scheduler(hub)
    passes: list[float] = []
    look = jobs._sync_settled

    async def counted(quiet: float):
        passes.append(asyncio.get_running_loop().time())
        return await look(quiet)

    jobs._sync_settled = counted
    jobs.start()
    try:
        await asyncio.sleep(0.5)  # the jobs' first runs, at start, are over
        hub.config.sync.prompt_seconds = 1.5
        passes.clear()
        scores = []
        for invitation in invitations[:4]:
            scores.append((await hub.engine.record_answer(invitation, 4)).id)
            await asyncio.sleep(0.1)
        assert passes == []  # nothing was ready: no pass ran for it
        for response in scores:
            await _until_written(crm_state, f"timeline:{response}")
            assert f"timeline:{response}" in crm_state.records  # timed to the quiet period's end
        # one pass per moment something settles at most (each score's items settle on their own; how many of
        # those moments share a pass depends on how far apart the scores were recorded), never one per wake
        assert 1 <= len(passes) <= len(scores)
        complete = (await hub.engine.record_answer(invitations[4], 9, comment="Quick")).id
        await _until_written(crm_state, f"timeline:{complete}", seconds=1)
        assert f"timeline:{complete}" in crm_state.records  # a pass at once, not after a quiet period
    finally:
        await jobs.shutdown(grace_seconds=5)


async def test_the_scheduled_sync_still_writes_what_has_not_settled(make_hub, crm_state) -> None:
    """The hourly sync and ``cxhub sync`` write every due item at once, quiet or not; the prompt sync waits."""
    hub = await make_hub()
    hub.config.sync.prompt_seconds = 10
    clock = [utcnow()]
    hub.now = lambda: clock[0]
    await answer(hub, crm_state, "C1", "P1", 9)
    assert not await hub.sync.settled("crm")
    assert (await hub.sync.run("crm", quiet_seconds=10)).written == 0
    assert (await hub.sync.run("crm")).written == 3


async def test_a_retry_of_the_prompt_sync_waits_for_its_backoff_not_for_another_quiet_period(
    make_hub, crm_state
) -> None:
    """The debounce waits for the customer, not for the CRM: an item refused with ``Retry-After: 2`` is
    written again by the prompt sync two seconds later, not ``prompt_seconds`` after the refusal."""
    hub = await make_hub()
    hub.config.sync.prompt_seconds = 10
    clock = [utcnow()]
    hub.now = lambda: clock[0]
    await answer(hub, crm_state, "C1", "P1", 9)
    clock[0] += timedelta(seconds=10)
    crm_state.fail_next.append((429, {"Retry-After": "2"}))
    assert (await hub.sync.run("crm", quiet_seconds=10)).retried > 0
    clock[0] = max(row.next_attempt_at for row in await rows(hub)) + timedelta(milliseconds=1)
    assert await hub.sync.settled("crm")
    await hub.sync.run("crm", quiet_seconds=10)
    assert {row.state for row in await rows(hub)} == {"done"}


async def test_the_prompt_sync_claims_its_batch_without_reading_the_items_still_in_their_quiet_period(
    make_hub,
) -> None:
    """Under a stream of answers most queued items wait for their quiet period. The prompt sync's claim
    takes the first ready rows of one index and stops there; ordered by due time it read and sorted every
    queued item, the most of PostgreSQL's time under the answer load."""
    hub = await make_hub()
    if hub.store.is_sqlite:
        pytest.skip("SQLite reports no rows read; its claim walks the same index (both end in the row id)")
    now = utcnow()
    # re-armed a moment ago, each ready after its quiet period; and items armed earlier, ready now
    waiting = [(f"wait-{k}", now - timedelta(seconds=1), now + timedelta(seconds=5)) for k in range(3000)]
    ready = [(f"ready-{k}", now - timedelta(seconds=60 + k), now - timedelta(seconds=k)) for k in range(30)]
    async with hub.store.session() as s:
        s.add_all(
            WriteBack(
                connector="crm",
                kind="timeline_entry",
                key=key,
                record_id="R1",
                next_attempt_at=armed,
                ready_at=ready_at,
                cap_at=ready_at,
            )
            for key, armed, ready_at in [*waiting, *ready]
        )
        await s.commit()
    statements: list[tuple[str, object]] = []

    def seen(_conn, _cursor, statement, parameters, _context, _many) -> None:
        if "writebacks.ready_at <=" in statement:
            statements.append((statement, parameters))  # the claim's look for ready items

    event.listen(hub.store.engine.sync_engine, "before_cursor_execute", seen)
    try:
        claimed = await hub.sync.claim("crm", 10, quiet_seconds=hub.config.sync.prompt_seconds)
    finally:
        event.remove(hub.store.engine.sync_engine, "before_cursor_execute", seen)
    # the items ready longest
    assert sorted(row.key for row in claimed) == [f"ready-{k}" for k in range(20, 30)]

    def rows_read(plan: dict) -> int:
        read = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
        if "Scan" not in plan["Node Type"]:
            read = 0
        return read + sum(rows_read(child) for child in plan.get("Plans", []))

    assert len(statements) == 1  # one statement: the oldest ready item's kind, its batch, their lease
    async with hub.store.engine.connect() as conn:
        for statement, parameters in statements:
            result = await conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters)
            [[plan]] = result.all()
            assert rows_read(plan[0]["Plan"]) <= 60, (statement, plan)
        await conn.rollback()
