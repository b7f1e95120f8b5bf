"""An answer is one transaction: the response, the invitation's status and its write-back items together.

Answers arriving at the same moment share that transaction; one that is refused (its amend window closed)
costs the others nothing, and a failure part-way leaves nothing of any of them behind.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError

from hub.engine import answers
from hub.engine.writebacks import _IDENTITIES
from hub.errors import BadInput
from hub.store.positional import positional
from hub.store.tables import Event, Identity, Invitation, Response, WriteBack
from tests.helpers import statements_run, survey_flow


async def _count(hub, table) -> int:
    async with hub.store.session() as s:
        return int(await s.scalar(select(func.count()).select_from(table)) or 0)


async def _invitation_ids(hub, crm_state, people: list[str]) -> list[int]:
    for k, person in enumerate(people):
        crm_state.people.setdefault(person, {"id": person, "email": f"{person.lower()}@example.com"})
        await survey_flow(hub, crm_state, case_id=f"T{k}", person=person)
    async with hub.store.session() as s:
        return list(await s.scalars(select(Invitation.id).order_by(Invitation.id)))


async def test_a_failure_after_the_answer_is_written_leaves_nothing_half_done(make_hub, crm_state) -> None:
    hub = await make_hub()
    [inv_id] = await _invitation_ids(hub, crm_state, ["P1"])
    # the database refuses the batch's last write (on PostgreSQL a part of its one write statement, on SQLite
    # the write-backs' upsert), after the response and the invitation's status were written
    refuse, allow = _refuse_write_backs(hub)
    await _run_sql(hub, refuse)
    try:
        with pytest.raises(DBAPIError, match="the database refused the write-back"):
            await hub.engine.record_answer(inv_id, 3, comment="slow")
    finally:
        await _run_sql(hub, allow)
    # the response, the invitation's status and the write-backs were written before the failure: all rolled
    # back with it
    assert await _count(hub, Response) == 0 and await _count(hub, WriteBack) == 0
    async with hub.store.session() as s:
        assert await s.scalar(select(Invitation.status)) == "sent"

    record = await hub.engine.record_answer(inv_id, 3, comment="slow")
    assert (record.rating, record.comment) == (3, "slow")
    async with hub.store.session() as s:
        assert await s.scalar(select(Invitation.status)) == "answered"
        kinds = sorted(await s.scalars(select(WriteBack.kind).where(WriteBack.response_id == record.id)))
    assert kinds == ["case_feedback", "person_summary", "timeline_entry"]


async def _run_sql(hub, statements: list[str]) -> None:
    async with hub.store.engine.begin() as conn:
        for statement in statements:
            await conn.exec_driver_sql(statement)


def _refuse_write_backs(hub) -> tuple[list[str], list[str]]:
    """The statements of a trigger that makes the database refuse every new write-back item, and of its
    removal."""
    if hub.store.is_sqlite:
        return (
            [
                "CREATE TRIGGER refuse_write_backs BEFORE INSERT ON writebacks "
                "BEGIN SELECT RAISE(ABORT, 'the database refused the write-back'); END"
            ],
            ["DROP TRIGGER refuse_write_backs"],
        )
    return (
        [
            "CREATE FUNCTION refuse_write_back() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the database refused the write-back'; END $$",
            "CREATE TRIGGER refuse_write_backs BEFORE INSERT ON writebacks "
            "FOR EACH ROW EXECUTE FUNCTION refuse_write_back()",
        ],
        ["DROP TRIGGER refuse_write_backs ON writebacks", "DROP FUNCTION refuse_write_back()"],
    )


@pytest.mark.parametrize(
    ("changed", "while_waiting"),
    [("answer", False), ("answer", True), ("invitation", False)],
    ids=["answer-before-the-write", "answer-while-the-write-waits", "invitation-before-the-write"],
)
async def test_rows_changed_after_a_batch_read_them_are_written_again_on_top_of_the_change(
    make_hub, crm_state, monkeypatch, changed: str, while_waiting: bool
) -> None:
    """On PostgreSQL a batch reads without a lock and writes with one statement that first checks that
    every invitation and answer it read is unchanged. Another process changes one in between (an answer's
    comment, or the language of an invitation not answered yet), committing before the write or while the
    write waits for its lock: the checked write writes nothing, and the batch is written again the locked
    way, on top of the change, which is kept."""
    hub = await make_hub()
    driver = hub.store.driver
    if driver is None:
        pytest.skip(
            "on SQLite a batch is read and written in one transaction that holds the file's write lock"
        )
    [inv_id] = await _invitation_ids(hub, crm_state, ["P1"])
    if changed == "answer":
        first = await hub.engine.record_answer(inv_id, 3)
        change = update(Response).values(comment="said on the phone")
    else:
        change = update(Invitation).values(language="de")
    read = driver.rows
    others: list[asyncio.Task[None]] = []

    async def read_then_changed(query, params):
        rows = await read(query, params)
        if query is answers._UNLOCKED_BATCH_QUERY and not others:
            conn = await hub.store.engine.connect()
            await conn.begin()
            await conn.execute(change)

            async def commit() -> None:
                await asyncio.sleep(0.3 if while_waiting else 0)
                await conn.commit()
                await conn.close()

            others.append(asyncio.create_task(commit()))
            if not while_waiting:
                await others[0]
        return rows

    checked: list[bool] = []
    write_checked = answers._WRITES.write_checked

    async def remembered(*args, **kwargs) -> bool:
        checked.append(await write_checked(*args, **kwargs))
        return checked[-1]

    monkeypatch.setattr(driver, "rows", read_then_changed)
    monkeypatch.setattr(answers._WRITES, "write_checked", remembered)
    record = await hub.engine.record_answer(inv_id, 9)
    await asyncio.gather(*others)
    assert checked == [False]  # the write saw the change and wrote nothing
    async with hub.store.session() as s:
        stored = [(r.id, r.rating, r.comment, r.language) for r in await s.scalars(select(Response))]
        entry = await s.scalar(select(WriteBack.payload).where(WriteBack.key.like("timeline:%")))
    assert entry is not None and entry["rating"] == 9
    if changed == "answer":
        assert stored == [(first.id, 9, "said on the phone", first.language)]
        assert entry["comment"] == "said on the phone"
    else:
        assert stored == [(record.id, 9, None, "de")]


async def test_answers_of_one_moment_are_stored_together_and_a_refused_one_costs_the_others_nothing(
    make_hub, crm_state
) -> None:
    hub = await make_hub()
    first, second, third = await _invitation_ids(hub, crm_state, ["P1", "P4", "P5"])
    closed = await hub.engine.record_answer(third, 8)
    async with hub.store.session() as s:  # answered long ago: its amend window has closed
        await s.execute(
            update(Response)
            .where(Response.id == closed.id)
            .values(answered_at=hub.now() - timedelta(hours=hub.config.hub.amend_window_hours + 1))
        )
    outcomes = await asyncio.gather(
        hub.engine.record_answer(first, 10),
        hub.engine.record_answer(second, 0, comment="never again"),
        hub.engine.record_answer(third, 2),
        hub.engine.record_answer(first, None, comment="quick"),  # the same person's comment right after
        return_exceptions=True,
    )
    assert isinstance(outcomes[2], BadInput) and outcomes[2].status_code == 409
    async with hub.store.session() as s:
        stored = {r.invitation_id: r for r in await s.scalars(select(Response))}
        statuses = set(await s.scalars(select(Invitation.status)))
        items = {(w.kind, w.response_id) for w in await s.scalars(select(WriteBack))}
    assert (stored[first].rating, stored[first].comment) == (10, "quick")
    assert (stored[second].rating, stored[second].comment) == (0, "never again")
    assert stored[third].rating == 8  # the refused change left the closed answer as it was
    assert statuses == {"answered"}
    for invitation_id in (first, second, third):
        response_id = stored[invitation_id].id
        assert {kind for kind, rid in items if rid == response_id} >= {"timeline_entry", "case_feedback"}


async def test_answers_queued_by_the_thousand_are_written_at_the_commit_and_dropped_by_a_rollback(
    make_hub, crm_state
) -> None:
    """Answers stored directly (imported, seeded) queue their write-backs with ``queue_answer``: all of one
    transaction are written with its commit, in one upsert, and a rollback leaves none behind."""
    hub = await make_hub()
    await _invitation_ids(hub, crm_state, ["P1", "P4", "P5"])
    campaign = hub.config.campaigns["case_closed"]

    async def store_and_queue(fail: bool) -> None:
        async with hub.store.session() as s:
            pairs = (
                await s.execute(select(Invitation, Event).join(Event, Event.id == Invitation.event_pk))
            ).all()
            rows = [
                Response(
                    id=str(uuid.uuid4()),
                    invitation_id=inv.id,
                    person_id=inv.person_id,
                    campaign=inv.campaign,
                    survey_kind="nps",
                    rating=7,
                    score=70.0,
                    category="passive",
                    language=inv.language,
                    answered_at=hub.now(),
                    updated_at=hub.now(),
                )
                for inv, _ in pairs
            ]
            s.add_all(rows)
            await s.flush()
            for row, (inv, event) in zip(rows, pairs, strict=True):
                await hub.engine._queue_write_backs(s, row, inv, event, campaign)
            if fail:
                raise RuntimeError("the import failed after queueing")

    with pytest.raises(RuntimeError):
        await store_and_queue(fail=True)
    assert await _count(hub, Response) == 0 and await _count(hub, WriteBack) == 0
    await store_and_queue(fail=False)
    async with hub.store.session() as s:
        items = list(await s.scalars(select(WriteBack)))
    assert len(items) == 9  # three answers, three items each: summary, timeline, the case's feedback
    assert {w.person_record_id for w in items} == {"P1", "P4", "P5"}
    assert all(w.state == "queued" and w.version == 1 for w in items)


async def test_an_answer_given_again_with_a_nul_in_its_comment_changes_nothing(make_hub, crm_state) -> None:
    """Text is compared as it is stored (without NUL): the same answer again is no change, so nothing is
    written back again and nobody is told twice, and what the caller gets back is what was stored."""
    hub = await make_hub()
    [inv_id] = await _invitation_ids(hub, crm_state, ["P1"])
    first = await hub.engine.record_answer(inv_id, 9, comment="fast\x00 and kind")
    alerts = len([m for m in crm_state.outbox if m.get("kind") == "alert"])
    again = await hub.engine.record_answer(inv_id, 9, comment="fast\x00 and kind")
    assert first.comment == again.comment == "fast and kind"
    assert again.updated_at == first.updated_at
    assert len([m for m in crm_state.outbox if m.get("kind") == "alert"]) == alerts
    async with hub.store.session() as s:
        assert await s.scalar(select(Response.comment)) == "fast and kind"
        versions = list(await s.scalars(select(WriteBack.version)))
    assert versions and set(versions) == {1}


async def test_a_first_answer_that_meets_one_stored_meanwhile_amends_it(
    make_hub, crm_state, monkeypatch
) -> None:
    """A first answer stored by someone else after this batch read the invitation (a double-click reaching two
    processes): the unique response per invitation refuses the INSERT, nothing of the batch is kept, and the
    answer is written again, amending that response instead of failing."""
    hub = await make_hub()
    [inv_id] = await _invitation_ids(hub, crm_state, ["P1"])
    other = await hub.engine.record_answer(inv_id, 3)
    real_of = answers._Target.of
    missed: list[object] = []

    def read_before_the_other_answer(row):
        target = real_of(row)
        if not missed:  # the first read only: as if it came before the other answer's commit
            missed.append(target.response)
            target.response = None
        return target

    monkeypatch.setattr(answers._Target, "of", staticmethod(read_before_the_other_answer))
    record = await hub.engine.record_answer(inv_id, 9, comment="better now")
    assert missed and missed[0] is not None
    assert record.id == other.id and (record.rating, record.comment) == (9, "better now")
    async with hub.store.session() as s:
        stored = [(r.id, r.rating, r.comment) for r in await s.scalars(select(Response))]
    assert stored == [(other.id, 9, "better now")]


async def test_a_changed_answer_changes_its_response_not_its_invitation(make_hub, crm_state) -> None:
    """The invitation becomes answered with the first answer; a later change is the response's alone, so
    the batch writes nothing to the invitation again (one statement fewer for a batch of changes)."""
    hub = await make_hub()
    [inv_id] = await _invitation_ids(hub, crm_state, ["P1"])
    clock = [hub.now()]
    hub.now = lambda: clock[0]
    await hub.engine.record_answer(inv_id, 9)
    async with hub.store.session() as s:
        answered = await s.get_one(Invitation, inv_id)
        status, since = answered.status, answered.updated_at
    clock[0] += timedelta(minutes=5)
    record = await hub.engine.record_answer(inv_id, 4, comment="changed my mind")
    assert (record.rating, record.comment) == (4, "changed my mind")
    async with hub.store.session() as s:
        after = await s.get_one(Invitation, inv_id)
        assert (status, after.status, after.updated_at) == ("answered", "answered", since)
        assert (await s.get_one(Response, record.id)).updated_at == clock[0]


async def test_an_answers_people_are_found_by_index_not_by_reading_every_identity(make_hub) -> None:
    """Every answer batch reads its people's record ids by (person, connector). SQLite plans without
    statistics (nobody runs ANALYZE on an embedded hub), and with only the person indexed it chose the
    (connector, crm id) constraint's index: every identity of the connector, read for each batch."""
    hub = await make_hub()
    if not hub.store.is_sqlite:
        pytest.skip(
            "PostgreSQL plans from its statistics, kept by its autovacuum "
            "or, where that is off, by the hub (hub.store.upkeep)"
        )
    dialect = hub.store.engine.dialect
    statement = positional(_IDENTITIES.compile(dialect=dialect), dialect)
    values = statement.values({"people": [1, 2, 3], "targets": ["crm"]})
    plan = await hub.store.read(
        lambda conn: [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement.sql}", values)]
    )
    # the lists are read from their JSON arrays (``hub.store.lists``), then each pair looked up in the index
    assert [step for step in plan if "identities" in step] == [
        "SEARCH identities USING COVERING INDEX ix_identities_person (person_id=? AND connector=?)"
    ]
    # the answers' batch reads them with its invitations, each person's in a subquery by the same index
    batch = positional(answers._BATCH_QUERY.compile(dialect=dialect), dialect)
    plan = await hub.store.read(
        lambda conn: [
            row[3]
            for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {batch.sql}", batch.values({"ids": [1, 2]}))
        ]
    )
    assert [step for step in plan if "SEARCH identities" in step or "SCAN identities" in step] == [
        "SEARCH identities USING COVERING INDEX ix_identities_person (person_id=?)"
    ]


async def test_answers_of_the_same_people_in_batches_side_by_side_are_each_stored_once(
    make_hub, crm_state
) -> None:
    """On PostgreSQL two answer batches may be in flight at once. Answers of the same people land in both
    (each person's summary is one write-back key), in any order: every answer is stored, every key queued
    once, and no batch fails as the victim of a deadlock (which would write its answers one at a time)."""
    hub = await make_hub()
    hub.config.policy.min_days_between_surveys = 0
    people = ["P1", "P4", "P5"]
    invitations = await _invitation_ids(hub, crm_state, [people[k % 3] for k in range(12)])
    batches: list[int] = []
    write = hub.engine.answers._write_answers

    async def counted(batch):
        batches.append(len(batch))
        return await write(batch)

    hub.engine.answers.writer._write = counted

    async def answer(inv: int, wave: int, after: float) -> None:
        await asyncio.sleep(after)  # arriving while the batch before is being written
        await hub.engine.record_answer(inv, (inv + wave) % 11, comment=f"w{wave}")

    for wave in range(3):  # each wave: new answers, then changes to them, people in every batch
        order = invitations[wave::3] + invitations[: wave + 1]
        await asyncio.gather(*(answer(inv, wave, k * 0.002) for k, inv in enumerate(order)))
    assert sum(batches) == sum(len(invitations[w::3]) + w + 1 for w in range(3))  # none written again alone
    async with hub.store.session() as s:
        stored = {r.invitation_id: (r.rating, r.comment) for r in await s.scalars(select(Response))}
        keys = [(w.connector, w.key) for w in await s.scalars(select(WriteBack))]
    assert set(stored) == set(invitations[0::3] + invitations[1::3] + invitations[2::3])
    assert len(keys) == len(set(keys))
    assert {key for _, key in keys if key.startswith("summary:")} == {f"summary:{n}" for n in (1, 2, 3)}


async def test_answers_by_link_and_by_invitation_share_a_batch_whose_links_are_read_with_the_lock(
    make_hub, crm_state
) -> None:
    """Answers posted on survey pages name their link, a texted reply its invitation: one batch takes both,
    an unknown link is refused alone, and on PostgreSQL the links are read with the invitations and their
    answers by one statement (one round trip, not a read of their own before it), and the batch is written
    by one more, which locks what was read."""
    hub = await make_hub()
    tokens = []
    for k, person in enumerate(["P1", "P4", "P5"]):
        crm_state.people.setdefault(person, {"id": person, "email": f"{person.lower()}@example.com"})
        tokens.append(await survey_flow(hub, crm_state, case_id=f"T{k}", person=person))
    async with hub.store.session() as s:
        first, second, third = list(await s.scalars(select(Invitation.id).order_by(Invitation.id)))
    with statements_run(hub) as statements:
        outcomes = await asyncio.gather(
            hub.engine.answer_link(tokens[0], 9),
            hub.engine.record_answer(second, 3, channel="sms"),
            hub.engine.answer_link(tokens[2], 10, comment="great"),
            hub.engine.answer_link("no-such-link", 5),
            return_exceptions=True,
        )
    assert isinstance(outcomes[3], BadInput) and outcomes[3].status_code == 404
    async with hub.store.session() as s:
        stored = {
            r.invitation_id: (r.rating, r.comment, r.channel) for r in await s.scalars(select(Response))
        }
    assert stored[first][:2] == (9, None) and stored[second] == (3, None, "sms")
    assert stored[third][:2] == (10, "great")
    if not hub.store.is_sqlite:  # on SQLite the batch's reads go straight through the driver
        [write] = [sql for sql in statements if sql.lstrip().upper().startswith(("INSERT", "WITH", "UPDATE"))]
        reads = statements[: statements.index(write)]
        [links] = [sql for sql in reads if "tokens" in sql]
        assert "invitations" in links and "responses" in links and "FOR UPDATE" not in links
        assert "FOR UPDATE OF invitations" in write and "FOR UPDATE OF responses" in write


async def test_a_batch_of_first_and_changed_answers_writes_everything_at_once_and_queues_each_key_once(
    make_hub, crm_state
) -> None:
    """First answers, a changed one and two answers of one person in one batch: every response, status and
    write-back item is stored, each key queued once with the person's last answer; on PostgreSQL all of it
    in one statement after the batch's read (one round trip instead of four)."""
    hub = await make_hub()
    first, second, third = await _invitation_ids(hub, crm_state, ["P1", "P4", "P1"])
    await hub.engine.record_answer(third, 2)
    async with hub.store.session() as s:
        versions_before = dict((await s.execute(select(WriteBack.key, WriteBack.version))).all())
    with statements_run(hub) as statements:
        outcomes = await asyncio.gather(
            hub.engine.record_answer(first, 10, comment="great"),
            hub.engine.record_answer(second, 6),
            hub.engine.record_answer(third, 9, comment="better now"),
        )
    async with hub.store.session() as s:
        stored = {r.invitation_id: (r.rating, r.comment) for r in await s.scalars(select(Response))}
        statuses = set(await s.scalars(select(Invitation.status)))
        items = (await s.execute(select(WriteBack.key, WriteBack.version, WriteBack.payload))).all()
    assert stored == {first: (10, "great"), second: (6, None), third: (9, "better now")}
    assert statuses == {"answered"}
    keys = [key for key, _, _ in items]
    assert len(keys) == len(set(keys))
    by_key = {key: (version, payload) for key, version, payload in items}
    third_entry = next(key for key in versions_before if key.startswith("timeline:"))
    assert by_key[third_entry][0] == versions_before[third_entry] + 1
    assert by_key[third_entry][1]["rating"] == 9
    people = {outcome.person_id for outcome in outcomes}
    assert len(people) == 2  # P1 answered twice: one summary key for both answers
    assert len([key for key in keys if key.startswith("summary:")]) == 2
    if not hub.store.is_sqlite:
        writes = [sql for sql in statements if not sql.lstrip().upper().startswith("SELECT")]
        assert len(writes) == 1, writes
        assert all(
            f"INTO {table}" in writes[0] or f"UPDATE {table}" in writes[0]
            for table in ("responses", "invitations", "writebacks")
        )


async def test_a_batchs_text_times_and_payloads_are_stored_as_given(make_hub, crm_state) -> None:
    """Whatever way a batch binds its rows (one array per column in PostgreSQL's one statement, executemany on
    SQLite): quotes, backslashes, text beyond ASCII, a NUL, a topic over its column's length, aware times and
    the items' nested payloads are stored as one INSERT per row would store them."""
    hub = await make_hub()
    first, second = await _invitation_ids(hub, crm_state, ["P1", "P2"])
    odd = 'Åse said "fine" \\ it\'s 👍\x00 ok\nbye'
    topic = "x" * 500  # over its column's 200 characters: cut, as an INSERT of the row cuts it
    created, changed = await asyncio.gather(
        hub.engine.record_answer(first, 3, comment=odd, topic=topic),
        hub.engine.record_answer(second, 8),
    )
    amended = await hub.engine.record_answer(second, 9, comment=odd)
    async with hub.store.session() as s:
        rows = {r.invitation_id: r for r in await s.scalars(select(Response))}
        payloads = list(await s.scalars(select(WriteBack.payload).where(WriteBack.key.like("timeline:%"))))
    cleaned = odd.replace("\x00", "")
    assert rows[first].comment == rows[second].comment == cleaned
    assert rows[first].topic == "x" * 200
    assert rows[first].answered_at == created.answered_at
    assert rows[first].answered_at.utcoffset() == timedelta(0)
    assert rows[second].updated_at == amended.updated_at > changed.updated_at
    assert sorted(p["comment"] for p in payloads) == [cleaned, cleaned]
    assert {p["rating"] for p in payloads} == {3, 9}


async def test_an_answer_is_queued_for_every_crm_its_person_is_known_in(make_hub, crm_state) -> None:
    """The batch reads each person's record ids in every CRM with their invitation: a campaign writing back to
    two CRMs queues the answer for each, under the person's id in that CRM, and for no CRM it does not know
    the person in."""
    hub = await make_hub()
    token = await survey_flow(hub, crm_state)
    async with hub.store.session() as s:
        person_id = await s.scalar(select(Invitation.person_id))
        s.add(Identity(person_id=person_id, connector="service", crm_id="S-77"))
    hub.config.campaigns["case_closed"].write_back_to = ["crm", "service", "billing"]
    await hub.engine.answer_link(token, 7, comment="ok")
    async with hub.store.session() as s:
        queued = {(w.connector, w.kind, w.person_record_id) for w in await s.scalars(select(WriteBack))}
    assert {(connector, record) for connector, _, record in queued} == {("crm", "P1"), ("service", "S-77")}
    assert ("service", "timeline_entry", "S-77") in queued and ("crm", "case_feedback", "P1") in queued
