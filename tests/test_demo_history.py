"""The demo's past answers: weeks of trend for the cockpit, nothing the CRM emulator could be written."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from hub.demo_history import WEEKS, seed_history
from hub.store.tables import Identity, Invitation, Response, WriteBack
from tests.helpers import survey_flow


async def test_the_history_spreads_answers_over_the_weeks_before_now(make_hub, crm_state) -> None:
    hub = await make_hub()
    stored = await seed_history(hub, "crm", "case_closed", ["mail"])
    async with hub.store.session() as s:
        answers = (await s.execute(select(Response.answered_at, Response.rating, Response.category))).all()
        invitations = await s.scalar(select(func.count()).select_from(Invitation))
        identities = await s.scalar(select(func.count()).select_from(Identity))
        queued = await s.scalar(select(func.count()).select_from(WriteBack))
    assert stored == len(answers) > 10 * WEEKS * 0.5
    assert invitations > len(answers)  # some people never answered: a response rate below 100%
    now = hub.now()
    weeks = {(now - at).days // 7 for at, _r, _c in answers}
    assert len(weeks) >= WEEKS - 1 and all(
        now - timedelta(weeks=WEEKS + 1) < at < now for at, _r, _c in answers
    )
    assert {category for _a, _r, category in answers} == {"promoter", "passive", "detractor"}
    assert identities == 0 and queued == 0  # nobody of the past is known in the CRM: nothing to write back

    # the story that follows stores its own rows beside them (ids not taken by the history)
    token = await survey_flow(hub, crm_state)
    assert token
