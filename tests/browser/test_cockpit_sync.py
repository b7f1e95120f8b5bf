"""The sync cockpit in Chromium against a served hub and the CRM emulator over real HTTP: a dead letter replayed
from the page is written, a full re-sync started from the page writes everything again and the CRM holds no
record twice, and axe-core finds nothing on the pages at desktop and phone size."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect
from pydantic import SecretStr
from sqlalchemy import select

from hub.config import HubConfig
from hub.store.tables import WriteBack
from tests.browser.live import LiveHub
from tests.browser.test_survey_accessibility import WCAG
from tests.helpers import survey_flow

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
ANSWERS = 3


class AdminLiveHub(LiveHub):
    """The live hub with the cockpit's login on."""

    def _config(self) -> HubConfig:
        config = super()._config()
        config.hub.admin_password = SecretStr(PASSWORD)
        return config


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminLiveHub]:
    with AdminLiveHub(tmp_path_factory.mktemp("cockpit-sync")) as served:
        served.crm_state.people.update(
            {
                f"S{i}": {"id": f"S{i}", "email": f"s{i}@example.com", "first_name": "Sam", "language": "en"}
                for i in range(ANSWERS)
            }
        )
        for i in range(ANSWERS - 1):
            served.run(answer(served, f"S{i}", 9 - i))
        served.run(served.hub.sync.run("crm"))
        # the last answer's three items (one batch per kind) are refused by the CRM three times each (a run
        # stops at a refused batch, and takes the longest waiting kind first): with three attempts allowed
        # they become dead letters with the CRM's error
        served.run(answer(served, f"S{ANSWERS - 1}", 3))
        served.crm_state.write_failures = (9, 503, {})
        for _ in range(9):
            served.run(served.hub.sync.run("crm"))
        # a forged webhook: refused and kept for the cockpit
        httpx.post(f"{served.url}/hooks/crm", content=b"{}", headers={"x-fake-signature": "forged"})
        yield served


async def answer(live: LiveHub, person: str, rating: int) -> None:
    token = await survey_flow(live.hub, live.crm_state, case_id=f"K-{person}", person=person)
    _, page = await live.hub.engine.page_for_token(token)
    await live.hub.engine.record_answer(page.invitation_id, rating, comment=f"said {person}")


async def queue(live: LiveHub) -> list[WriteBack]:
    async with live.hub.store.session() as s:
        return list(await s.scalars(select(WriteBack).order_by(WriteBack.id)))


def sign_in(page: Page, to: str) -> None:
    page.goto(to)
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{to}")


def violations(page: Page, axe_script: Path) -> list[str]:
    """Every axe violation of WCAG 2.x A/AA and best practice, whatever its impact."""
    page.add_script_tag(path=str(axe_script))
    results: dict[str, Any] = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
        WCAG,
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in results["violations"]
    ]


@pytest.mark.parametrize("size", SIZES)
def test_the_pages_pass_axe(page: Page, live: AdminLiveHub, axe_script: Path, size: str) -> None:
    width, height = SIZES[size]
    page.set_viewport_size({"width": width, "height": height})
    sign_in(page, "/admin/sync")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sync")
    assert violations(page, axe_script) == []
    page.get_by_role("link", name="crm").click()
    expect(page.get_by_role("heading", name="Dead letters")).to_be_visible()
    expect(page.get_by_role("heading", name="Rejected webhooks")).to_be_visible()
    captions = page.locator("table caption").all_text_contents()
    assert len(captions) == 4, captions  # schedule, dead letters, runs, rejected webhooks
    assert violations(page, axe_script) == []
    page.get_by_role("link", name="Full re-sync…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Full re-sync of crm")
    assert violations(page, axe_script) == []


def test_a_replayed_dead_letter_is_written(page: Page, live: AdminLiveHub) -> None:
    dead = [row for row in live.run(queue(live)) if row.state == "dead"]
    assert dead and all(row.key not in live.crm_state.records for row in dead)
    sign_in(page, "/admin/sync/crm")
    first = dead[0]
    page.get_by_role("button", name=f"Replay {first.key}").click()
    expect(page.get_by_role("status")).to_contain_text("1 dead letters were queued again")
    page.get_by_role("button", name="Run the sync now").click()
    expect(page.get_by_role("status")).to_contain_text("The sync ran: 1 written")
    assert live.crm_state.records[first.key]["id"] == first.id
    if len(dead) > 1:
        page.get_by_role("button", name=f"Replay all {len(dead) - 1} dead letters").click()
        page.get_by_role("button", name="Run the sync now").click()
        expect(page.get_by_role("status")).to_contain_text(f"The sync ran: {len(dead) - 1} written")
    rows = live.run(queue(live))
    assert {row.state for row in rows} == {"done"}
    assert {row.key for row in rows} == set(live.crm_state.records)


def test_a_full_resync_from_the_cockpit_writes_everything_once_more(page: Page, live: AdminLiveHub) -> None:
    rows = live.run(queue(live))
    assert {row.state for row in rows} == {"done"}  # after the replay above
    records, creates, updates = dict(live.crm_state.records), live.crm_state.creates, live.crm_state.updates
    sign_in(page, "/admin/sync/crm")
    page.get_by_role("link", name="Full re-sync…").click()
    expect(page.get_by_text(f"written now: {len(rows)} items")).to_be_visible()
    page.get_by_role("button", name=f"Queue {len(rows)} items and write them now").click()
    expect(page.get_by_role("status")).to_contain_text(f"{len(rows)} items were queued again")
    expect(page.get_by_role("status")).to_contain_text(f"The sync ran: {len(rows)} written")
    # every item reached the CRM again, as an update of the record it holds: none was created twice
    assert live.crm_state.updates == updates + len(rows)
    assert live.crm_state.creates == creates and set(live.crm_state.records) == set(records)
    assert {row.state for row in live.run(queue(live))} == {"done"}
    expect(page.locator("table.runs tbody tr").first).to_contain_text("full")
