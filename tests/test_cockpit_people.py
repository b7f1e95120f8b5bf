"""The cockpit's people and campaigns pages, and the API's privacy actions, over HTTP against a real store.

Search (escaped wildcards, phones typed with spaces, pages), a person's story as ``cxhub explain`` tells it,
every action refused to a viewer, the admin's actions each in the audit log, the campaigns' numbers and the
checks run on an admin's request only.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import select

from hub import accounts
from hub.app import Hub
from hub.explain import invitation_lines
from hub.store.tables import AuditEntry, Person, WriteBack
from hub.web import create_app
from tests.helpers import asgi_client, case_event, csrf_of, survey_flow

PASSWORD = "correct horse battery staple"
API = {"Authorization": "Bearer api-token-for-tests-42"}


@asynccontextmanager
async def signed_in(hub: Hub, viewer: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in as the admin ``ada``, or (``viewer``) as the viewer ``vic``."""
    name, role = ("vic", "viewer") if viewer else ("ada", "admin")
    async with hub.store.session() as s:
        await accounts.add(s, "test", name, role, PASSWORD)
    async with asgi_client(create_app(hub, scheduler=False)) as client:
        form = await client.get("/admin/login")
        signed = await client.post(
            "/admin/login",
            data={"csrf": csrf_of(form.text), "username": name, "password": PASSWORD, "next": "/admin"},
        )
        assert signed.status_code == 303, signed.text
        yield client


async def add_people(hub: Hub, *people: dict[str, Any]) -> list[int]:
    async with hub.store.session() as s:
        rows = [Person(**p) for p in people]
        s.add_all(rows)
        await s.flush()
        return [row.id for row in rows]


async def audited(hub: Hub, action: str) -> list[AuditEntry]:
    async with hub.store.session() as s:
        return list(
            await s.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id))
        )


async def test_search_escapes_wildcards_reads_phones_and_pages(make_hub) -> None:
    hub = await make_hub()
    await add_people(
        hub,
        {"name": "Ann_Lee", "email": "ann@example.com"},
        {"name": "100% Sure Ltd", "email": "sure@example.com"},
        {"name": "Annabel Lee", "email": "bel@example.com", "phone": "+4520304050"},
        *({"name": f"Filler {n:02}", "email": f"filler{n}@example.net"} for n in range(30)),
    )
    async with signed_in(hub, viewer=True) as client:

        async def names(query: str, page: int = 1) -> list[str]:
            reply = await client.get("/admin/people", params={"q": query, "page": page})
            assert reply.status_code == 200
            return [n for n in ("Ann_Lee", "100% Sure Ltd", "Annabel Lee") if n in reply.text]

        assert await names("_") == ["Ann_Lee"]  # not "any one character"
        assert await names("%") == ["100% Sure Ltd"]  # not "anything"
        assert await names("ANN") == ["Ann_Lee", "Annabel Lee"]
        assert await names("20 30 40 50") == ["Annabel Lee"]
        assert await names("bel@EXAMPLE") == ["Annabel Lee"]
        assert await names("' OR 1=1 --") == []
        first = await client.get("/admin/people", params={"q": "filler"})
        second = await client.get("/admin/people", params={"q": "filler", "page": 2})
        assert "Matches for “filler”: 30" in first.text and "Page 1 of 2" in first.text
        assert first.text.count("Filler ") == 25 and second.text.count("Filler ") == 5
        assert "Filler 29" in first.text and "Filler 00" in second.text  # newest first
        assert (await client.get("/admin/people", params={"page": 0})).status_code == 422


async def test_the_person_page_tells_what_explain_tells(make_hub, crm_state) -> None:
    hub = await make_hub()
    token = await survey_flow(hub, crm_state)
    _, survey = await hub.engine.page_for_token(token)
    await hub.engine.record_answer(survey.invitation_id, 9, comment="quick and kind")
    await hub.engine.receive("crm", [case_event("C5", "P2")], source="webhook")  # Bob: no mailings
    await hub.engine.process_pending()
    async with hub.store.session() as s:
        ada = await s.scalar(select(Person).where(Person.email == "ada@example.com"))
        bob = await s.scalar(select(Person).where(Person.email == "bob@example.com"))
        assert ada is not None and bob is not None
        told = [line.why for line in await invitation_lines(s, bob.id)]
    assert told == ["opted out in crm: no mailings"]
    async with signed_in(hub, viewer=True) as client:
        page = (await client.get(f"/admin/people/{bob.id}")).text
        assert (
            "opted out in crm: no mailings" in page and "suppressed" in page and "crm case.closed C5" in page
        )
        assert "P2" in page and "no mailings" in page  # the identity, its CRM opt-out
        page = (await client.get(f"/admin/people/{ada.id}")).text
        assert "answered" in page and "quick and kind" in page and "crm case.closed C1" in page
        assert "Ada" in page and "ada@example.com" in page
        assert "Opt out of surveys" not in page and "/erase" not in page  # a viewer sees no action
        german = (await client.get(f"/admin/people/{ada.id}", params={"lang": "de"})).text
        assert "Einladungen" in german and '<td class="why">beantwortet</td>' in german  # explain's words too
        assert (await client.get("/admin/people/999999")).status_code == 404
        assert (await client.get("/admin/people/0")).status_code == 422


async def test_a_viewer_may_look_but_not_act(make_hub) -> None:
    hub = await make_hub()
    [person] = await add_people(hub, {"name": "Vic", "email": "vic@example.com"})
    async with signed_in(hub, viewer=True) as client:
        page = await client.get(f"/admin/people/{person}")
        csrf = csrf_of(page.text)  # a valid token (the sign-out form's): only the role is refused
        for path in ("opt-out", "opt-in", "export", "erase"):
            reply = await client.post(f"/admin/people/{person}/{path}", data={"csrf": csrf, "confirm": "yes"})
            assert reply.status_code == 403, path
        assert (await client.get(f"/admin/people/{person}/erase")).status_code == 403
        assert (await client.post("/admin/campaigns/check", data={"csrf": csrf})).status_code == 403
        assert (await client.get("/admin/campaigns")).status_code == 200
    async with hub.store.session() as s:
        found = await s.get(Person, person)
        assert found is not None and found.opted_out_at is None
        actions = set(await s.scalars(select(AuditEntry.action)))
    assert not actions & {
        "person.opt_out",
        "person.opt_in",
        "person.export",
        "person.erase",
        "instance.check",
    }


async def test_an_admin_opts_out_exports_and_erases_each_audited(make_hub, crm_state) -> None:
    hub = await make_hub()
    await survey_flow(hub, crm_state)
    async with hub.store.session() as s:
        ada = await s.scalar(select(Person.id).where(Person.email == "ada@example.com"))
    assert ada is not None
    async with signed_in(hub) as client:
        page = await client.get(f"/admin/people/{ada}")
        csrf = csrf_of(page.text)
        assert (await client.post(f"/admin/people/{ada}/opt-out", data={})).status_code == 403  # no CSRF
        reply = await client.post(f"/admin/people/{ada}/opt-out", data={"csrf": csrf})
        assert reply.status_code == 303 and reply.headers["location"].endswith("done=opted-out")
        page = await client.get(reply.headers["location"])
        assert "The person is opted out" in page.text and "Opt in again" in page.text
        async with hub.store.session() as s:
            queued = await s.scalar(select(WriteBack).where(WriteBack.kind == "person_opt_out"))
        assert queued is not None and queued.state == "queued" and queued.payload["opted_out"] is True
        reply = await client.post(f"/admin/people/{ada}/opt-in", data={"csrf": csrf})
        assert reply.headers["location"].endswith("done=opted-in")

        download = await client.post(f"/admin/people/{ada}/export", data={"csrf": csrf})
        assert download.status_code == 200
        assert download.headers["content-disposition"] == f'attachment; filename="person-{ada}.json"'
        assert json.loads(download.text)["person"]["email"] == "ada@example.com"

        confirm = await client.get(f"/admin/people/{ada}/erase")
        assert confirm.status_code == 200 and 'name="confirm"' in confirm.text
        unconfirmed = await client.post(f"/admin/people/{ada}/erase", data={"csrf": csrf})
        assert unconfirmed.status_code == 400 and "Tick the box" in unconfirmed.text
        async with hub.store.session() as s:
            assert await s.get(Person, ada) is not None
        erased = await client.post(f"/admin/people/{ada}/erase", data={"csrf": csrf, "confirm": "yes"})
        assert erased.status_code == 303 and erased.headers["location"] == "/admin/people?done=erased"
        listing = await client.get(erased.headers["location"])
        assert "The person was erased" in listing.text and "ada@example.com" not in listing.text
        assert (await client.get(f"/admin/people/{ada}")).status_code == 404
    target = f"person:{ada}"
    assert [(e.actor, e.target, e.detail) for e in await audited(hub, "person.opt_out")] == [
        ("ada", target, {"changed": True})
    ]
    assert [(e.actor, e.target) for e in await audited(hub, "person.opt_in")] == [("ada", target)]
    assert [(e.actor, e.target) for e in await audited(hub, "person.export")] == [("ada", target)]
    [entry] = await audited(hub, "person.erase")
    assert (entry.actor, entry.target) == ("ada", target) and entry.detail is not None
    assert entry.detail["identities_deleted"] == 1 and "ada" not in json.dumps(entry.detail).lower()


async def test_campaigns_show_last_weeks_numbers_and_check_on_request(make_hub, crm_state) -> None:
    hub = await make_hub()
    token = await survey_flow(hub, crm_state)
    _, survey = await hub.engine.page_for_token(token)
    await hub.engine.record_answer(survey.invitation_id, 2)
    for case in ("C5", "C6"):
        await hub.engine.receive("crm", [case_event(case, "P2")], source="webhook")
    await hub.engine.process_pending()
    async with signed_in(hub) as client:
        page = await client.get("/admin/campaigns")
        assert page.status_code == 200
        text = " ".join(page.text.split())
        assert "case.closed in crm" in text and "nps (nps)" in text and "Channels, in order" in text
        # events 3, invited 1, suppressed 2, answered 1
        assert "<td>3</td><td>1</td><td>2</td><td>1</td>" in text.replace("> <", "><")
        assert "opted out in crm: no mailings</td><td>2</td>" in text.replace("> <", "><")
        assert "token accepted" not in text  # nothing checked by looking
        checked = await client.post(
            "/admin/campaigns/check", data={"csrf": csrf_of(page.text), "instance": "crm"}
        )
        assert checked.status_code == 200
        text = " ".join(checked.text.split())
        assert "token accepted" in text and "passed" in text and "checked at" in text
        assert "nothing written back yet" in text  # the last sync's line, as `cxhub check` shows it

        async def broken() -> list[Any]:
            raise RuntimeError("a plugin's bug")

        hub.channels["mail"].check = broken  # type: ignore[method-assign]
        checked = await client.post("/admin/campaigns/check", data={"csrf": csrf_of(page.text)})
        assert checked.status_code == 200 and "the check itself failed" in checked.text
    first, everything = await audited(hub, "instance.check")
    assert (first.target, first.detail) == ("crm", {"results": {"crm": True}})
    assert (everything.target, everything.detail) == ("all", {"results": {"crm": True, "mail": False}})


async def test_the_api_exports_opts_out_and_erases_as_actor_api(make_hub, crm_state) -> None:
    hub = await make_hub()
    await survey_flow(hub, crm_state)
    async with hub.store.session() as s:
        ada = await s.scalar(select(Person.id).where(Person.email == "ada@example.com"))
    async with asgi_client(create_app(hub, scheduler=False)) as client:
        assert (await client.get(f"/api/v1/people/{ada}/export")).status_code == 401
        export = await client.get(f"/api/v1/people/{ada}/export", headers=API)
        assert export.status_code == 200 and export.json()["person"]["email"] == "ada@example.com"
        opted = await client.post(f"/api/v1/people/{ada}/opt-out", headers=API, json={"opted_out": True})
        assert opted.json() == {"changed": True}
        refused = await client.post(f"/api/v1/people/{ada}/erase", headers=API, json={"confirm": False})
        assert refused.status_code == 422
        erased = await client.post(f"/api/v1/people/{ada}/erase", headers=API, json={"confirm": True})
        assert erased.status_code == 200 and erased.json()["answers_anonymised"] == 0
        assert (await client.get(f"/api/v1/people/{ada}/export", headers=API)).status_code == 404
        assert (await client.get("/api/v1/people", headers=API)).json() == []  # no row for the erased
        schema = (await client.get("/api/v1/openapi.json", headers=API)).json()
    assert {"/api/v1/people/{person_id}/export", "/api/v1/people/{person_id}/erase"} <= set(schema["paths"])
    assert {"PersonExport", "ErasureCounts", "EraseRequest"} <= set(schema["components"]["schemas"])
    for action in ("person.export", "person.opt_out", "person.erase"):
        assert [e.actor for e in await audited(hub, action)] == ["api"], action
