"""Answers in: the survey page for a token, the answer it posts (or a channel's reply), alerts, unsubscribes.

An answer is stored and its write-backs queued in one transaction; a later comment amends the same response
within the amend window, and a concurrent double-click is resolved by the unique response per invitation.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from hub.config import Campaign, SurveySettings
from hub.engine.common import hash_token, invitation_record, question, response_record
from hub.engine.optouts import OptOuts
from hub.engine.writebacks import WriteBackQueue
from hub.errors import BadInput, HubError
from hub.http import with_retries
from hub.models import (
    SCALES,
    AlertMessage,
    CaseEvent,
    InvitationRecord,
    NpsCategory,
    Recipient,
    ResponseRecord,
    SurveyKind,
    nps_category,
)
from hub.people import upsert_person
from hub.store.tables import Event, Identity, Invitation, Person, Response, Token
from hub.texts import text

if TYPE_CHECKING:
    from hub.app import Hub

log = structlog.get_logger("hub.engine.answers")


@dataclass(frozen=True)
class _Answer:
    """What one answer brings: a rating and/or the follow-up's comment and topic, and the channel it came by."""

    rating: int | None
    comment: str | None
    topic: str | None
    channel: str | None


def _category(kind: SurveyKind, rating: int) -> NpsCategory | None:
    return nps_category(rating) if kind is SurveyKind.NPS else None


@dataclass
class SurveyPage:
    """What the survey page needs to render one invitation."""

    invitation_id: int
    token_hash: str
    survey: SurveySettings
    survey_kind: SurveyKind
    language: str
    question: str
    low_label: str
    high_label: str
    response: ResponseRecord | None
    amendable: bool


class Answers:
    """Shows survey pages, records answers (from the page or a channel's reply), alerts, and unsubscribes."""

    def __init__(self, hub: Hub, write_backs: WriteBackQueue) -> None:
        self.hub = hub
        self.write_backs = write_backs
        self.optouts = OptOuts(hub, write_backs)

    # --- 4. answer --------------------------------------------------------------------------------------------

    async def page_for_token(self, token: str, purpose: str = "survey") -> tuple[str, SurveyPage | None]:
        """Look a token up: ("ok", page), ("expired", page), ("closed", page) or ("unknown", None)."""
        token_hash = hash_token(token)
        async with self.hub.store.session() as s:
            row = await s.get(Token, token_hash)
            if row is None or row.purpose != purpose:
                return "unknown", None
            inv = await s.get(Invitation, row.invitation_id)
            assert inv is not None
            campaign = self.hub.config.campaigns.get(inv.campaign)
            if campaign is None:
                return "unknown", None
            survey = self.hub.config.surveys[campaign.survey]
            resp = await s.scalar(select(Response).where(Response.invitation_id == inv.id))
        now = self.hub.now()
        window = timedelta(hours=self.hub.config.hub.amend_window_hours)
        amendable = resp is None or now - resp.answered_at <= window
        page = SurveyPage(
            invitation_id=inv.id,
            token_hash=token_hash,
            survey=survey,
            survey_kind=survey.kind,
            language=inv.language,
            question=question(self.hub, survey, inv.language),
            low_label=text(inv.language, f"low.{survey.kind.value}"),
            high_label=text(inv.language, f"high.{survey.kind.value}"),
            response=response_record(resp) if resp is not None else None,
            amendable=amendable,
        )
        if row.expires_at <= now and resp is None:
            return "expired", page
        if not amendable:
            return "closed", page
        return "ok", page

    async def record_answer(
        self,
        invitation_id: int,
        rating: int | None,
        comment: str | None = None,
        topic: str | None = None,
        channel: str | None = None,
    ) -> ResponseRecord:
        """Store an answer (or amend it: a later comment updates the same response) and queue write-backs."""
        hub = self.hub
        async with hub.store.session() as s:
            inv = await s.get(Invitation, invitation_id)
            if inv is None or inv.person_id is None:
                raise BadInput("no such invitation", 404)
            event = await s.get(Event, inv.event_pk)
            campaign = hub.config.campaigns.get(inv.campaign)
            if campaign is None or event is None:
                raise BadInput("this survey is no longer available", 410)
            survey = hub.config.surveys[campaign.survey]
            existing = await s.scalar(select(Response).where(Response.invitation_id == inv.id))
        if rating is None and existing is None:
            raise BadInput("choose a score first")
        if rating is not None:
            low, high = SCALES[survey.kind]
            if not low <= rating <= high:
                raise BadInput(text(inv.language, "out_of_range", low=low, high=high))
        await self._resolve_targets(inv.person_id, campaign, event.connector)
        answer = _Answer(rating, comment, topic, channel)
        for attempt in range(2):
            try:
                stored = await self._store_answer(inv, event, campaign, survey, answer)
                break
            except IntegrityError:
                # a concurrent request (a double-click) stored the first answer a moment before this one:
                # the second pass finds it and amends it like any later answer
                if attempt:
                    raise
        record, inv_record, before = stored
        if before is not None and before == (record.rating, record.comment, record.topic):
            return record  # the same answer again: nothing to write back, nobody to tell twice
        first = before is None
        log.info("response.recorded", response=record.id, campaign=record.campaign, amended=not first)
        await hub.plugins.notify("hub_on_response_received", response=record, invitation=inv_record)
        previous = (None, None) if before is None else (_category(survey.kind, before[0]), before[1])
        if first or previous[0] != record.category:
            await self._alert(record, inv_record, event, campaign, comment_added=False)
        elif record.comment and previous[1] != record.comment:
            await self._alert(record, inv_record, event, campaign, comment_added=True)
        hub.wake("sync")
        return record

    async def _store_answer(
        self, inv: Invitation, event: Event, campaign: Campaign, survey: SurveySettings, answer: _Answer
    ) -> tuple[ResponseRecord, InvitationRecord, tuple[int, str | None, str | None] | None]:
        """Insert or amend the response in one transaction; also returns what it held before (None: new).

        The insert of a first answer raises IntegrityError when a concurrent request inserted it first.
        """
        hub = self.hub
        now = hub.now()
        async with hub.store.session() as s:
            resp = await s.scalar(select(Response).where(Response.invitation_id == inv.id))
            before = (resp.rating, resp.comment, resp.topic) if resp is not None else None
            if resp is None:
                assert answer.rating is not None
                resp = Response(
                    id=str(uuid.uuid4()),
                    invitation_id=inv.id,
                    person_id=inv.person_id,
                    campaign=inv.campaign,
                    survey_kind=survey.kind.value,
                    language=inv.language,
                    channel=answer.channel or inv.channel,
                    answered_at=now,
                    rating=answer.rating,
                    score=0.0,
                )
                s.add(resp)
            elif now - resp.answered_at > timedelta(hours=hub.config.hub.amend_window_hours):
                raise BadInput("this answer can no longer be changed", 409)
            if answer.rating is not None:
                resp.rating = answer.rating
            if answer.comment is not None:
                resp.comment = answer.comment.strip() or resp.comment
            if answer.topic is not None:
                resp.topic = answer.topic or resp.topic
            if before is not None and before == (resp.rating, resp.comment, resp.topic):
                return response_record(resp), invitation_record(inv, event), before
            resp.score = survey.score_of(resp.rating)
            category = _category(survey.kind, resp.rating)
            resp.category = category.value if category is not None else None
            resp.updated_at = now
            await s.execute(update(Invitation).where(Invitation.id == inv.id).values(status="answered"))
            inv.status = "answered"
            await s.flush()
            await self.write_backs.queue_answer(s, resp, inv, event, campaign)
            return response_record(resp), invitation_record(inv, event), before

    async def _resolve_targets(self, person_id: int, campaign: Campaign, source: str) -> None:
        """Find the person in write-back targets other than the triggering CRM (by email/phone)."""
        async with self.hub.store.session() as s:
            person = await s.get(Person, person_id)
            known = set(await s.scalars(select(Identity.connector).where(Identity.person_id == person_id)))
        for target in campaign.targets():
            connector = self.hub.connectors.get(target)
            if target in known or connector is None or person is None:
                continue
            try:
                record = await connector.find_person(person.email, person.phone)
            except HubError as exc:
                log.warning("person.lookup_failed", connector=target, error=str(exc))
                continue
            except Exception:  # a plugin's bug must not cost the customer's answer, which is stored next
                log.exception("person.lookup_failed", connector=target)
                continue
            if record is not None:
                async with self.hub.store.session() as s:
                    await upsert_person(s, target, record)

    # --- 5. react ---------------------------------------------------------------------------------------------

    async def _alert(
        self,
        response: ResponseRecord,
        invitation: InvitationRecord,
        event: Event,
        campaign: Campaign,
        comment_added: bool,
    ) -> None:
        """Tell whom the campaign's alert rules name: at once on the score, and again when a comment follows.

        Customers give the score first and the comment a moment later; the owner should not wait for a
        comment that may never come, nor miss one that does.
        """
        case_event = CaseEvent.model_validate(event.payload)
        async with self.hub.store.session() as s:
            person = await s.get(Person, response.person_id)
        who = (person.name or person.email or person.phone or "a customer") if person else "a customer"
        for rule in campaign.alerts:
            if rule.when != "any" and (response.category is None or response.category.value != rule.when):
                continue
            address = case_event.owner_email if rule.to == "owner" else rule.to
            channel = self.hub.channels.get(rule.channel)
            if not address or channel is None:
                log.warning("alert.no_recipient", campaign=invitation.campaign, rule=rule.when)
                continue
            label = response.category.value if response.category else "New"
            lines = [
                f"{who} added a comment to their answer {response.rating} ({label})."
                if comment_added
                else f"{who} answered {response.rating} ({label}) to the {invitation.campaign} survey.",
                f"Comment: {response.comment}" if response.comment else "No comment.",
                f"{case_event.record_type} {case_event.record_id} in {event.connector}.",
            ]
            message = AlertMessage(
                invitation_id=invitation.id,
                campaign=invitation.campaign,
                recipient=Recipient(name=case_event.owner_name, email=address, language="en"),
                subject=("Comment: " if comment_added else "")
                + text(
                    "en", "alert.subject", category=label.capitalize(), person=who, rating=response.rating
                ),
                text="\n".join(lines),
                link=case_event.record_url,
            )

            async def send(ch: Any = channel, msg: AlertMessage = message) -> Any:
                return await ch.send(msg)

            try:
                await with_retries(send, attempts=3)
            except HubError as exc:
                log.error("alert.failed", campaign=invitation.campaign, error=str(exc))
            except Exception:  # a channel's bug must not turn the customer's stored answer into an error page
                log.exception("alert.failed", campaign=invitation.campaign)

    # --- unsubscribe ------------------------------------------------------------------------------------------

    async def unsubscribe(self, token: str) -> bool:
        """Set the hub's opt-out for the person behind an unsubscribe token; honoured by every channel and
        reported to the person's CRMs like an opt-out keyword (``hub.engine.optouts``)."""
        async with self.hub.store.session() as s:
            row = await s.get(Token, hash_token(token))
            if row is None or row.purpose != "unsubscribe":
                return False
            inv = await s.get(Invitation, row.invitation_id)
            if inv is None or inv.person_id is None:
                return False
            person = await s.get(Person, inv.person_id)
            if person is not None:
                await self.optouts.change(s, person, True, None, "unsubscribed with the survey's link")
        return True
