"""A survey link's routes (``/s/<token>``) are dispatched ahead of the framework's stack
(``hub.web.survey_links``): they must answer every request as the routers would."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from starlette.datastructures import UploadFile

from hub.store.tables import Response
from hub.web import create_app
from tests.helpers import asgi_client, csrf_of, survey_flow


@pytest.fixture
async def web(make_hub):
    hub = await make_hub()
    async with asgi_client(create_app(hub, scheduler=False)) as client:
        yield hub, client


async def stored(hub) -> int:
    async with hub.store.session() as s:
        return int(await s.scalar(select(func.count()).select_from(Response)))


async def test_a_link_opens_its_page_answers_and_leads_to_the_follow_up(web, crm_state) -> None:
    hub, client = web
    path = f"/s/{await survey_flow(hub, crm_state)}"
    page = await client.get(path)
    assert page.status_code == 200 and "csrf" in page.text
    assert page.headers["cache-control"] == "no-store" and "nonce-" in page.headers["content-security-policy"]
    head = await client.head(path)
    assert head.status_code == 200 and head.content == b""
    reply = await client.post(path, data={"csrf": csrf_of(page.text), "score": "9"})
    assert (reply.status_code, reply.headers["location"]) == (303, path)
    assert await stored(hub) == 1


async def test_a_malformed_form_is_refused_with_400_and_stores_nothing(web, crm_state) -> None:
    hub, client = web
    path = f"/s/{await survey_flow(hub, crm_state)}"
    await client.get(path)
    reply = await client.post(
        path,
        content=b"score=9",
        headers={"content-type": "multipart/form-data"},  # no boundary
    )
    assert reply.status_code == 400
    assert await stored(hub) == 0


async def test_the_links_other_paths_and_methods_still_reach_the_routers(web, crm_state) -> None:
    hub, client = web
    token = await survey_flow(hub, crm_state)
    assert (await client.put(f"/s/{token}")).status_code == 405
    assert (await client.get(f"/s/{token}/thanks")).status_code == 303  # not answered yet: to the question
    assert (await client.get("/s/")).status_code == 404
    assert (await client.get(f"/u/{token}")).status_code == 404  # a survey token is not an unsubscribe one


async def test_an_unknown_link_gets_the_friendly_404_page(web) -> None:
    _hub, client = web
    page = await client.get("/s/not-a-token")
    assert page.status_code == 404 and "<html" in page.text
    refused = await client.post("/s/not-a-token", data={"score": "9"})
    assert refused.status_code == 404


async def test_a_file_part_of_a_hostile_form_is_closed_once_answered(web, crm_state, monkeypatch) -> None:
    """A survey form has no file field, but anyone can post one: its spooled temporary file is closed when the
    request ends, not whenever the garbage collector gets to it."""
    hub, client = web
    path = f"/s/{await survey_flow(hub, crm_state)}"
    closed: list[str | None] = []
    original = UploadFile.close

    async def close(self: UploadFile) -> None:
        closed.append(self.filename)
        await original(self)

    monkeypatch.setattr(UploadFile, "close", close)
    reply = await client.post(
        path, data={"score": "9"}, files={"junk": ("junk.bin", b"x" * 2048, "application/octet-stream")}
    )
    assert reply.status_code == 403  # no CSRF field: refused, as any such form is
    assert closed == ["junk.bin"]
    assert await stored(hub) == 0
