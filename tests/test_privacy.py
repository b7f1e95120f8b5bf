"""Export and erase of a person (``hub.privacy``), on SQLite and PostgreSQL.

A person is seeded through the hub's real paths (a signed webhook whose body names them, the survey sent,
answered with a comment, written back, opted out) plus what providers and CRMs leave behind (a reply, a
delivery report quoting the address, a refused webhook, a sync error). After the erase every text, JSON and
binary column of every table is scanned for the person's values: none may be left, while the answers'
numbers stay. A second person's values are found by the same scan, so the scan itself is shown to see.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import LargeBinary, String, Text, func, select
from sqlalchemy.types import JSON
from typer.testing import CliRunner

from hub.app import Hub
from hub.cli import app as cli_app
from hub.privacy import ERASED_PERSON_KEY, PersonNotFound, erase_person, export_person
from hub.store.tables import (
    AuditEntry,
    Base,
    DeliveryReport,
    Event,
    InboundMessage,
    Invitation,
    Person,
    RejectedWebhook,
    Response,
    Setting,
    SyncRun,
    WriteBack,
    utcnow,
)
from hub.web import create_app
from tests import test_cli
from tests.fakes.crm import sign
from tests.helpers import WEBHOOK_SECRET, asgi_client, token_of

EMAIL = "zed.quux-9@example.org"
PHONE = "+4571727374"
NAME = "Zebedee Quuxley"
COMMENT = "the xyzzy technician never came"
#: what no table may hold after the erase (lower case; the scan lowers what it reads)
SECRETS = (EMAIL, PHONE, "4571727374", "zebedee", "quuxley", "xyzzy")


@dataclass
class Seeded:
    person_id: int
    other_id: int
    answers: int


async def seed(hub: Hub, crm_state: Any) -> Seeded:
    """Zebedee (P9) and Ada (P1) each answer a survey; Zebedee leaves every kind of trace."""
    crm_state.people["P9"] = {"id": "P9", "email": EMAIL.upper(), "phone": PHONE, "first_name": NAME}
    web = create_app(hub, scheduler=False)
    async with asgi_client(web) as client:
        for case, person in (("C9", "P9"), ("C1", "P1")):
            body = json.dumps(
                {
                    "id": case,
                    "person_id": person,
                    "owner_email": "owner@example.com",
                    "fields": {"note": f"called {NAME} at {PHONE} / {EMAIL}" if person == "P9" else "-"},
                }
            ).encode()
            headers = {"content-type": "application/json", "x-fake-signature": sign(WEBHOOK_SECRET, body)}
            assert (await client.post("/hooks/crm", content=body, headers=headers)).status_code == 200
        await hub.engine.process_pending()
        await hub.engine.dispatch_due()
        for message in [m for m in crm_state.outbox if m.get("kind") == "survey"]:
            _, page = await hub.engine.page_for_token(token_of(message["survey_url"]))
            comment = COMMENT if message.get("to") == EMAIL or EMAIL in json.dumps(message) else "fine"
            await hub.engine.record_answer(page.invitation_id, 3, comment=comment, topic="Billing")
        await asyncio.sleep(0.6)  # past sync.prompt_seconds
        await hub.sync.run("crm")
    async with hub.store.session() as s:
        person = await s.scalar(select(Person).where(Person.email == EMAIL))
        other = await s.scalar(select(Person).where(Person.email == "ada@example.com"))
        assert person is not None and other is not None
        inv = await s.scalar(select(Invitation).where(Invitation.person_id == person.id))
        assert inv is not None and inv.message_id and inv.channel
        now = utcnow()
        s.add(
            InboundMessage(
                channel="mail", sender=PHONE, text=f"STOP it {NAME}", received_at=now, outcome="unmatched"
            )
        )
        s.add(
            DeliveryReport(
                channel=inv.channel,
                message_id=inv.message_id,
                status="delivered",
                outcome="delivered",
                rank=3,
                error=f"<{EMAIL}> greylisted once",
                reported_at=now,
            )
        )
        s.add(
            RejectedWebhook(
                target="crm", status_code=401, reason="bad signature", headers={}, body=EMAIL.encode()
            )
        )
        s.add(SyncRun(connector="crm", kind="sync", error=f"CRM said: duplicate email {EMAIL.upper()}"))
        # an event about the person that no campaign took: found by the CRM id in its payload
        s.add(
            Event(
                connector="crm",
                event_id="person:P9:changed",
                event_type="person.changed",
                record_id="P9",
                source="poll",
                payload={"person_id": "P9", "fields": {"email": EMAIL, "name": NAME}},
                raw=json.dumps({"email": EMAIL}).encode(),
                processed_at=now,
            )
        )
        answers = await s.scalar(select(func.count()).select_from(Response))
    await hub.engine.optouts.by_id(person.id, True, None, "asked by phone")  # a queued CRM write-back
    return Seeded(person.id, other.id, int(answers or 0))


async def scan(hub: Hub, needles: tuple[str, ...]) -> list[str]:
    """``table.column`` for every text, JSON or binary value anywhere that holds one of ``needles``."""
    found = []
    async with hub.store.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            columns = [
                c
                for c in table.columns
                if isinstance(c.type, String | Text | JSON | LargeBinary)
                or isinstance(getattr(c.type, "impl", None), String | Text | JSON | LargeBinary)
            ]
            for row in (await conn.execute(select(*columns))).all():
                for column, value in zip(columns, row, strict=True):
                    if value is None:
                        continue
                    if isinstance(value, bytes):
                        text = value.decode("utf-8", "replace")
                    elif isinstance(value, str):
                        text = value
                    else:
                        text = json.dumps(value, ensure_ascii=False)
                    if any(needle in text.lower() for needle in needles):
                        found.append(f"{table.name}.{column.name}")
    return sorted(set(found))


async def test_the_export_holds_everything_and_is_audited(make_hub, crm_state) -> None:
    hub = await make_hub()
    seeded = await seed(hub, crm_state)
    export = await export_person(hub.store, seeded.person_id, "tester")
    text = export.model_dump_json().lower()
    for needle in SECRETS:
        assert needle in text, needle
    assert export.person.email == EMAIL and export.person.phone == PHONE and export.person.name == NAME
    assert [(i.connector, i.crm_id) for i in export.identities] == [("crm", "P9")]
    assert export.responses[0].comment == COMMENT and export.responses[0].topic == "Billing"
    assert export.invitations and export.tokens and export.events[0].raw_encoding == "utf-8"
    assert EMAIL in (export.events[0].raw or "")
    assert {e.event_type for e in export.events} == {"case.closed", "person.changed"}
    assert export.inbound_messages[0].sender == PHONE
    assert export.delivery_reports[0].error and EMAIL in export.delivery_reports[0].error
    assert {w.kind for w in export.write_backs} >= {"timeline_entry", "person_opt_out"}
    assert export.person.opted_out_at is not None
    async with hub.store.session() as s:
        entry = await s.scalar(select(AuditEntry).where(AuditEntry.action == "person.export"))
    assert entry is not None and (entry.actor, entry.target) == ("tester", f"person:{seeded.person_id}")


async def test_erase_leaves_no_trace_and_keeps_the_numbers(make_hub, crm_state) -> None:
    hub = await make_hub()
    seeded = await seed(hub, crm_state)
    assert len(await scan(hub, SECRETS)) >= 8  # the seed reached the tables the erase must clean
    async with hub.store.session() as s:
        scores = sorted((await s.execute(select(Response.rating, Response.score, Response.category))).all())

    counts = await erase_person(hub.store, seeded.person_id, "tester")

    assert await scan(hub, SECRETS) == []
    assert "people.email" in await scan(hub, ("ada@example.com",))  # the scan sees what is there
    async with hub.store.session() as s:
        assert await s.scalar(select(func.count()).select_from(Response)) == seeded.answers
        assert sorted(
            (await s.execute(select(Response.rating, Response.score, Response.category))).all()
        ) == (scores)
        erased = int(await s.scalar(select(Setting.value).where(Setting.key == ERASED_PERSON_KEY)) or 0)
        kept = (await s.scalars(select(Response).where(Response.person_id == erased))).one()
        assert (kept.comment, kept.topic, kept.campaign) == (None, None, "case_closed")
        tomb = await s.get(Person, erased)
        assert tomb is not None and (tomb.email, tomb.phone, tomb.name) == (None, None, None)
        assert await s.get(Person, seeded.person_id) is None
        other = await s.scalar(select(Response).where(Response.person_id == seeded.other_id))
        assert other is not None and other.comment == "fine"  # nobody else is touched
        assert not list(await s.scalars(select(WriteBack).where(WriteBack.person_id == seeded.person_id)))
        entry = await s.scalar(select(AuditEntry).where(AuditEntry.action == "person.erase"))
    assert entry is not None and entry.target == f"person:{seeded.person_id}" and entry.actor == "tester"
    assert entry.detail == counts.model_dump(exclude={"person_id"})
    assert counts.answers_anonymised == 1 and counts.identities_deleted == 1 and counts.tokens_deleted >= 2
    assert counts.inbound_messages_deleted == 1 and counts.rejected_webhooks_deleted == 1
    assert counts.write_backs_deleted >= 3 and counts.events_scrubbed == 2 and counts.texts_redacted >= 1
    with pytest.raises(PersonNotFound):
        await erase_person(hub.store, seeded.person_id, "tester")
    with pytest.raises(PersonNotFound):  # the erased person stands for nobody
        await export_person(hub.store, erased, "tester")
    # a second erase shares the erased person: answers are not even grouped per erased person
    await erase_person(hub.store, seeded.other_id, "tester")
    async with hub.store.session() as s:
        assert await s.scalar(select(func.count()).where(Response.person_id == erased)) == seeded.answers


runner = CliRunner()
#: the fixture of a config file on this test's database and fake CRM
config_file = test_cli.config_file


async def test_the_cli_exports_and_erases_by_address_or_id(config_file, make_hub, crm_state) -> None:
    hub = await make_hub()
    seeded = await seed(hub, crm_state)

    def cxhub(*args: str) -> Any:
        return runner.invoke(cli_app, [*args, "-c", str(config_file)])

    result = await asyncio.to_thread(cxhub, "person", "export", EMAIL.upper())
    assert result.exit_code == 0, result.output
    [exported] = json.loads(result.stdout)
    assert exported["person"]["id"] == seeded.person_id and exported["responses"][0]["comment"] == COMMENT
    refused = await asyncio.to_thread(
        runner.invoke, cli_app, ["person", "erase", PHONE, "-c", str(config_file)]
    )
    assert refused.exit_code == 1 and "Aborted" in refused.output  # no --yes, no "y": nothing erased
    result = await asyncio.to_thread(cxhub, "person", "erase", str(seeded.person_id), "--yes")
    assert result.exit_code == 0 and f"erased person {seeded.person_id}" in result.output, result.output
    result = await asyncio.to_thread(cxhub, "person", "export", PHONE)
    assert result.exit_code == 2 and "nobody with" in result.output
    assert await scan(hub, SECRETS) == []
    async with hub.store.session() as s:
        actors = set(await s.scalars(select(AuditEntry.actor).where(AuditEntry.action.like("person.%"))))
    assert len(actors) == 1 and actors.pop().startswith("cli:")


async def test_an_erased_person_is_gone_from_the_csv_export_and_their_answer_stays(
    make_hub, crm_state
) -> None:
    """The cockpit's CSV of the answers: the person's name and comment before the erase, neither after, and
    the same number of answers with the same scores."""
    from pydantic import SecretStr

    from tests.test_cockpit_dashboard import PASSWORD, sign_in

    hub = await make_hub()
    hub.config.hub.admin_password = SecretStr(PASSWORD)
    seeded = await seed(hub, crm_state)
    async with asgi_client(create_app(hub, scheduler=False)) as client:
        await sign_in(client)
        before = (await client.get("/admin/answers.csv?period=365")).text
        await erase_person(hub.store, seeded.person_id, "tester")
        after = (await client.get("/admin/answers.csv?period=365")).text
    assert NAME in before and COMMENT in before
    assert [found for found in SECRETS if found.lower() in after.lower()] == []
    rows_before, rows_after = before.strip().splitlines(), after.strip().splitlines()
    assert len(rows_after) == len(rows_before) == seeded.answers + 1  # the header and every answer
