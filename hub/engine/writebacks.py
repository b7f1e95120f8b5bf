"""The write-back queue's producer: what an answer writes to each CRM, queued in the answer's transaction.

One row per (connector, key): queuing a key that exists re-arms it with a higher version, so a score followed
by a comment leaves one item, written once with the latest state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.config import Campaign
from hub.models import CaseEvent, CaseFeedback, NpsCategory, PersonOptOut, SurveyKind, TimelineEntry
from hub.store.queries import insert_for
from hub.store.tables import Event, Identity, Invitation, Response, WriteBack

if TYPE_CHECKING:
    from hub.app import Hub

log = structlog.get_logger("hub.engine.writebacks")


class WriteBackQueue:
    """Fills the write-back queue that ``hub.sync`` drains: one row per (connector, key), re-armed on change."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def queue_answer(
        self, s: AsyncSession, resp: Response, inv: Invitation, event: Event, campaign: Campaign
    ) -> None:
        """Queue what the campaign writes back for one answer, in each target CRM the person is known in."""
        case_event = CaseEvent.model_validate(event.payload)
        settings = campaign.write_back
        for target in campaign.targets():
            identity = await s.scalar(
                select(Identity).where(Identity.person_id == resp.person_id, Identity.connector == target)
            )
            if identity is None:
                log.info("write_back.no_person", connector=target, response=resp.id)
                continue
            category = NpsCategory(resp.category) if resp.category else None
            items: list[tuple[str, str, str, dict[str, Any] | None]] = []
            if settings.person_summary:
                items.append(("person_summary", f"summary:{resp.person_id}", identity.crm_id, None))
            if settings.timeline:
                entry = TimelineEntry(
                    response_id=resp.id,
                    campaign=resp.campaign,
                    survey_kind=SurveyKind(resp.survey_kind),
                    rating=resp.rating,
                    score=resp.score,
                    category=category,
                    comment=resp.comment,
                    topic=resp.topic,
                    answered_at=resp.answered_at,
                    channel=resp.channel,
                    case_id=event.record_id if target == event.connector else None,
                    language=resp.language,
                )
                items.append(
                    ("timeline_entry", f"timeline:{resp.id}", identity.crm_id, entry.model_dump(mode="json"))
                )
            if settings.case_feedback and target == event.connector:
                feedback = CaseFeedback(
                    response_id=resp.id,
                    rating=resp.rating,
                    score=resp.score,
                    category=category,
                    comment=resp.comment,
                    processed_at=resp.updated_at,
                    set_status=settings.case_status_after_feedback,
                    internal_comment=settings.internal_comment,
                )
                items.append(
                    (
                        "case_feedback",
                        f"case:{resp.id}",
                        case_event.record_id,
                        feedback.model_dump(mode="json"),
                    )
                )
            for kind, key, record_id, payload in items:
                await self.queue(s, target, kind, key, record_id, identity.crm_id, resp, payload)

    async def queue(
        self,
        s: AsyncSession,
        connector: str,
        kind: str,
        key: str,
        record_id: str,
        person_record_id: str | None,
        resp: Response,
        payload: dict[str, Any] | None,
    ) -> None:
        """Queue one write-back; an existing item with the same key is re-armed with the newer payload."""
        await self.upsert(
            s, connector, kind, key, record_id, person_record_id, resp.person_id, resp.id, payload
        )

    async def queue_opt_out(self, s: AsyncSession, person_id: int, change: PersonOptOut) -> int:
        """Queue the hub's opt-out (or its end) for every configured CRM the person is known in.

        One item per person and CRM (``optout:<person>``): a STOP then a START before the sync leaves one
        item holding the latest state, written once. Returns how many CRMs get it.
        """
        identities = await s.scalars(select(Identity).where(Identity.person_id == person_id))
        payload = change.model_dump(mode="json")
        queued = 0
        for identity in identities:
            if identity.connector not in self.hub.connectors:
                continue
            key = f"optout:{person_id}"
            await self.upsert(
                s,
                identity.connector,
                change.kind,
                key,
                identity.crm_id,
                identity.crm_id,
                person_id,
                None,
                payload,
            )
            queued += 1
        return queued

    async def upsert(
        self,
        s: AsyncSession,
        connector: str,
        kind: str,
        key: str,
        record_id: str,
        person_record_id: str | None,
        person_id: int | None,
        response_id: str | None,
        payload: dict[str, Any] | None,
    ) -> None:
        """Insert one item, or re-arm the item of that (connector, key) with the newer payload."""
        now = self.hub.now()
        stmt = insert_for(s, WriteBack).values(
            connector=connector,
            kind=kind,
            key=key,
            record_id=record_id,
            person_record_id=person_record_id,
            person_id=person_id,
            response_id=response_id,
            payload=payload,
            state="queued",
            version=1,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["connector", "key"],
            set_={
                "state": "queued",
                "version": WriteBack.version + 1,
                "attempts": 0,
                "next_attempt_at": now,
                "payload": stmt.excluded.payload,
                "record_id": stmt.excluded.record_id,
                "response_id": stmt.excluded.response_id,
                "last_error": None,
                "updated_at": now,
            },
        )
        await s.execute(stmt)
