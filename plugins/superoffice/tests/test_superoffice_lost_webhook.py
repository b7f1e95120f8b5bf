"""SuperOffice drops a webhook after three failed attempts; polling still surveys the ticket, exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hub_superoffice.emulator import BackgroundServer, DemoSeed, SuperOfficeEmulator
from sqlalchemy import select
from superoffice_support import WEBHOOK_SECRET, SuperOfficeHarness

from hub.store.tables import Event, Invitation
from hub.testing import build_hub
from hub.testing.harness import CONNECTOR
from hub.testing.memory import MemoryChannel

#: nothing listens here: every delivery of the emulator's webhook fails
UNREACHABLE_HUB = "http://127.0.0.1:9"


async def test_a_dropped_webhook_is_surveyed_once_through_polling(
    emulator: SuperOfficeEmulator,
    server: BackgroundServer,
    seed: DemoSeed,
    partner_keys: tuple[str, str],
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "partner-key.pem"
    key_file.write_text(partner_keys[0], encoding="ascii")
    emulator.register_webhook(
        f"{UNREACHABLE_HUB}/hooks/{CONNECTOR}", WEBHOOK_SECRET, ["ticket.changed"], test=False
    )
    MemoryChannel.sent.clear()
    hub = await build_hub(SuperOfficeHarness(emulator, server, str(key_file)), tmp_path)
    try:
        ticket = seed.tickets["login"]
        emulator.close_ticket(ticket)
        assert await asyncio.to_thread(emulator.wait_for_webhooks)
        [delivery] = [d for d in emulator.deliveries if d.event == "ticket.changed"]
        assert (
            len(delivery.attempts) == 3 and not delivery.delivered
        )  # SuperOffice gave up: the event is lost

        for _ in range(3):  # the safety net runs again and again; overlap is expected
            await hub.sync.poll(CONNECTOR)
            await hub.engine.process_pending()
            await hub.engine.dispatch_due()

        async with hub.store.session() as s:
            events = list(await s.scalars(select(Event).where(Event.record_id == str(ticket))))
            invitations = list(
                await s.scalars(select(Invitation).where(Invitation.event_pk.in_([e.id for e in events])))
            )
        assert [(e.event_type, e.source) for e in events] == [("case.closed", "poll")]
        assert [i.status for i in invitations] == ["sent"]
        assert len([m for m in MemoryChannel.sent if m.kind == "survey"]) == 1
    finally:
        await hub.close()
