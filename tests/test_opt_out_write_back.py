"""The hub's opt-out of a person on its way to the CRMs: the order of one person's changes is kept by the
write-back queue (one key per person and CRM), which the connectors rely on instead of reading the CRM
before every write; the test CRMs record what they are sent."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from hub.contracts import PluginContext
from hub.http import make_client
from hub.models import PersonOptOut
from hub.store.tables import Response, WriteBack
from hub.sync import RunStats
from hub.testing import opt_out_item
from hub.testing.memory import MemoryConnector, MemorySettings
from tests.test_sync import answer

STOPPED = datetime(2026, 12, 5, 14, 2, tzinfo=UTC)
STARTED = datetime(2026, 12, 9, 8, 15, tzinfo=UTC)


def change(opted_out: bool) -> PersonOptOut:
    """STOP on one day, START a few days later."""
    payload = opt_out_item(0, "P1", opted_out=opted_out, changed_at=STOPPED if opted_out else STARTED).payload
    assert isinstance(payload, PersonOptOut)
    return payload


async def queue_change(hub, response_id: str, opted_out: bool) -> None:
    """Queue an opt-out change of the person who gave ``response_id`` under the person's one key."""
    async with hub.store.session() as s:
        resp = await s.scalar(select(Response).where(Response.id == response_id))
        await hub.engine.write_backs.queue(
            s,
            "crm",
            "person_opt_out",
            f"opt_out:{resp.person_id}",
            "P1",
            "P1",
            resp,
            change(opted_out).model_dump(mode="json"),
        )


async def opt_out_rows(hub) -> list[WriteBack]:
    async with hub.store.session() as s:
        return list(await s.scalars(select(WriteBack).where(WriteBack.kind == "person_opt_out")))


async def test_an_opt_out_replaced_by_an_opt_in_before_its_retry_is_never_written_after_it(
    make_hub, crm_state
) -> None:
    hub = await make_hub()
    response_id = await answer(hub, crm_state, "C1", "P1", 9)
    await hub.sync.run("crm")
    await queue_change(hub, response_id, opted_out=True)
    crm_state.fail_next.append((503, {}))
    assert (await hub.sync.run("crm")).retried == 1

    await queue_change(hub, response_id, opted_out=False)
    await hub.sync.run("crm")
    await hub.sync.run("crm")

    assert crm_state.opt_outs["P1"]["opted_out"] is False
    [row] = await opt_out_rows(hub)
    assert (row.state, row.payload["opted_out"]) == ("done", False)


async def test_an_opt_in_queued_while_the_opt_out_is_written_goes_after_it(make_hub, crm_state) -> None:
    hub = await make_hub()
    response_id = await answer(hub, crm_state, "C1", "P1", 9)
    await hub.sync.run("crm")
    await queue_change(hub, response_id, opted_out=True)
    claimed = await hub.sync.claim("crm", 10)

    await queue_change(hub, response_id, opted_out=False)  # the person sends START while STOP is written
    assert await hub.sync.claim("crm", 10) == []  # no other worker takes the key while it is leased
    await hub.sync._write_batch("crm", claimed, RunStats())
    await hub.sync.run("crm")

    written = [
        item["payload"]["opted_out"]
        for batch in crm_state.batches
        for item in batch
        if item["payload"]["kind"] == "person_opt_out"
    ]
    assert written == [True, False]
    assert crm_state.opt_outs["P1"]["opted_out"] is False


async def test_the_memory_crm_shows_the_last_opt_out_written_to_each_person() -> None:
    MemoryConnector.opt_outs.clear()
    crm = MemoryConnector(
        MemorySettings(),
        PluginContext(instance="memory", public_url="http://127.0.0.1:9", http_client=make_client),
    )
    items = [opt_out_item(1, "M1"), opt_out_item(2, "M1", opted_out=False, changed_at=STARTED)]

    results = await crm.write_back(items)

    assert [r.status for r in results] == ["ok", "ok"]
    assert MemoryConnector.opt_outs["M1"].opted_out is False
    MemoryConnector.opt_outs.clear()


async def test_an_opt_out_travels_in_the_batch_of_the_person_summaries(make_hub, crm_state) -> None:
    hub = await make_hub()
    response_id = await answer(hub, crm_state, "C1", "P1", 9)
    await queue_change(hub, response_id, opted_out=True)

    stats = await hub.sync.run("crm")

    assert stats.written == 4  # timeline entry, case feedback, summary, opt-out
    kinds = [sorted({item["payload"]["kind"] for item in batch}) for batch in crm_state.batches]
    assert ["person_opt_out", "person_summary"] in kinds
    assert all(len(kind) == 1 for kind in kinds if "person_summary" not in kind)
