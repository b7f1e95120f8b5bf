"""Replies through a channel (an SMS, a chat message): a short conversation per invitation.

A reply is matched to the sender's latest *open* invitation on that channel (sent and not expired, or
answered within the amend window); a reply that matches none is kept and shown to admins, never guessed.
With ``answer_by = "reply"`` the conversation goes: score -> the survey's follow-up question -> the reason,
which amends the same response (so the CRM gets score and reason as one answer); a reply that is no score
is asked again once, in the person's language, and kept after that. Where the conversation is lives on the
invitation (``Invitation.conversation``), so a restart does not lose it.

Opt-out keywords (the provider's and the Nordic, German, French and Dutch ones) are matched on the whole
message, by sender, whether or not an invitation is open: they set the hub's opt-out for every channel.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.config import Campaign
from hub.engine.answers import Answers
from hub.engine.optouts import OptOuts, people_at
from hub.errors import BadInput, HubError
from hub.http import with_retries
from hub.models import (
    SCALES,
    Delivery,
    InboundAnswer,
    Recipient,
    ReplyMessage,
    ResponseRecord,
    SurveyKind,
)
from hub.people import normalise_email
from hub.store.tables import InboundMessage, Invitation, Person, Response, WriteBack
from hub.texts import ask_again, followup_key, text

if TYPE_CHECKING:
    from hub.app import Hub

log = structlog.get_logger("hub.engine.conversations")

#: whole-message opt-out keywords, compared without case and accents: the provider's own list (Twilio's
#: STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT) and what people write in the hub's other languages
OPT_OUT = frozenset(
    {
        "stop",
        "stopall",
        "unsubscribe",
        "cancel",
        "end",
        "quit",
        "stopp",  # da, nb, sv, de
        "afmeld",  # da
        "afmeld mig",  # da
        "avmeld",  # nb
        "avslutt",  # nb
        "avsluta",  # sv
        "avbryt",  # sv, nb
        "abmelden",  # de
        "abbestellen",  # de
        "desabonner",  # fr (désabonner)
        "desinscrire",  # fr (désinscrire)
        "arret",  # fr (arrêt)
        "afmelden",  # nl
        "stoppen",  # nl, de
        "uitschrijven",  # nl
        "lopeta",  # fi
    }
)
#: whole-message keywords that end an opt-out (the provider's: START, UNSTOP, YES); only for someone opted out
OPT_IN = frozenset({"start", "unstop", "yes"})
#: what may follow a keyword or a score and still be nothing more
_TRAILING = " \t\r\n.!?,;:)-–—"

#: conversation states kept on the invitation
ASKED_AGAIN, AWAITING_COMMENT, COMMENTED = "asked_again", "awaiting_comment", "commented"

#: outcomes of replies the hub kept without using them: what /admin/replies and the API show
KEPT = ("unmatched", "not_a_score")

_SCORE = re.compile(r"(\d{1,2})(?:\s*/\s*(\d{1,2}))?")


async def kept_replies(s: AsyncSession, limit: int, offset: int = 0) -> Sequence[InboundMessage]:
    """The replies the hub kept without using them, newest first."""
    rows = await s.scalars(
        select(InboundMessage)
        .where(InboundMessage.outcome.in_(KEPT))
        .order_by(InboundMessage.received_at.desc(), InboundMessage.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return rows.all()


def keyword(body: str) -> str:
    """The message as a keyword: trimmed, trailing punctuation dropped, lower case, accents removed."""
    word = body.strip().rstrip(_TRAILING).casefold()
    decomposed = unicodedata.normalize("NFKD", word)
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


def parse_reply(body: str, scale: tuple[int, int] | None = None) -> tuple[int | None, str | None]:
    """What people really type: ``"9"``, ``" 9!"``, ``"10."``, ``"9/10"``, ``"9 quick and friendly"``.

    Returns (score, the rest as a comment); (None, the whole text) when it does not start with a score in
    ``scale``: "ni", "nine", "thanks", "9.5", "123", or "4/5" on a 0-10 scale.
    """
    stripped = body.strip()
    match = _SCORE.match(stripped)
    if match is None:
        return None, stripped or None
    rest = stripped[match.end() :]
    if rest and (rest[0].isalnum() or (rest[0] in ".," and rest[1:2].isdecimal())):
        return None, stripped  # "9a", "123", "9.5": not a score followed by words
    rating = int(match.group(1))
    if scale is not None:
        low, high = scale
        out_of = match.group(2)
        if not low <= rating <= high or (out_of is not None and int(out_of) != high):
            return None, stripped
    return rating, rest.lstrip(_TRAILING).strip() or None


@dataclass(frozen=True)
class _Open:
    """The invitation a reply belongs to, and where its conversation is."""

    invitation_id: int
    person_id: int
    name: str | None
    language: str
    campaign_name: str
    campaign: Campaign
    kind: SurveyKind
    answered: bool
    comment: str | None
    state: str | None


class Conversations:
    """Reads replies through a channel: opt-out keywords, scores, the follow-up and the comment."""

    def __init__(self, hub: Hub, answers: Answers, optouts: OptOuts) -> None:
        self.hub = hub
        self.answers = answers
        self.optouts = optouts

    async def record_inbound(self, channel: str, answer: InboundAnswer) -> ResponseRecord | None:
        """Handle one reply; returns the response it recorded or amended (None: kept, or a keyword)."""
        if await self._seen(channel, answer):
            log.info("inbound.repeated", channel=channel)
            return None
        word = keyword(answer.text)
        if word in OPT_OUT or word in OPT_IN:
            opting_out = word in OPT_OUT
            how = f"replied {answer.text.strip().rstrip(_TRAILING).upper()} by {channel}"
            if await self.optouts.by_address(answer.sender, opting_out, channel, how):
                await self._keep(channel, answer, "opted_out" if opting_out else "opted_in")
                return None
            if opting_out:
                await self._keep(
                    channel, answer, "opted_out", reason="already opted out, or an unknown sender"
                )
                return None
        found = await self._open_invitation(channel, answer.sender)
        if found is None:
            log.info("inbound.unmatched", channel=channel)
            await self._keep(channel, answer, "unmatched", reason="no open invitation to this sender here")
            return None
        try:
            return await self._converse(channel, answer, found)
        except BadInput as exc:
            log.info("inbound.refused", channel=channel, reason=str(exc))
            await self._keep(channel, answer, "not_a_score", found, reason=str(exc))
            return None

    async def _converse(self, channel: str, answer: InboundAnswer, found: _Open) -> ResponseRecord | None:
        reply_mode = found.campaign.answer_by == "reply"
        rating, comment = parse_reply(answer.text, SCALES[found.kind])
        said = answer.text.strip()
        if found.answered and said and not (rating is not None and comment is None):
            # the reason after the follow-up question, or more words after an answer: one response
            if found.state == AWAITING_COMMENT or not found.comment:
                comment = said
            else:
                comment = f"{found.comment}\n{said}"
            record = await self.answers.record_answer(found.invitation_id, None, comment, channel=channel)
            await self._keep(channel, answer, "comment", found)
            await self._set_state(found.invitation_id, COMMENTED)
            return record
        if rating is None:
            if reply_mode and found.state != ASKED_AGAIN and not found.answered:
                await self._set_state(found.invitation_id, ASKED_AGAIN)
                await self._keep(channel, answer, "asked_again", found)
                await self._say(channel, answer.sender, found, ask_again(found.language, found.kind))
            else:
                await self._keep(channel, answer, "not_a_score", found, reason="no score in the reply")
            return None
        record = await self.answers.record_answer(found.invitation_id, rating, comment, channel=channel)
        await self._keep(channel, answer, "answer", found)
        if comment is not None:
            await self._set_state(found.invitation_id, COMMENTED)
        elif reply_mode and found.state != AWAITING_COMMENT:
            await self._set_state(
                found.invitation_id, AWAITING_COMMENT, hold=record.id, campaign=found.campaign
            )
            question = text(found.language, followup_key(found.kind, record.category))
            await self._say(channel, answer.sender, found, question)
        return record

    async def _open_invitation(self, channel: str, sender: str) -> _Open | None:
        """The sender's latest open invitation sent through ``channel``."""
        hub = self.hub
        now = hub.now()
        window = timedelta(hours=hub.config.hub.amend_window_hours)
        async with hub.store.session() as s:
            people = {p.id: p for p in await people_at(s, sender)}
            if not people:
                return None
            candidates = await s.scalars(
                select(Invitation)
                .where(
                    Invitation.person_id.in_(people),
                    Invitation.channel == channel,
                    Invitation.status.in_(("sent", "answered")),
                )
                .order_by(Invitation.sent_at.desc(), Invitation.id.desc())
                .limit(10)
            )
            for inv in candidates:
                campaign = hub.config.campaigns.get(inv.campaign)
                resp = await s.scalar(select(Response).where(Response.invitation_id == inv.id))
                if campaign is None or inv.person_id is None:
                    continue
                if resp is None and inv.expires_at is not None and inv.expires_at <= now:
                    continue
                if resp is not None and now - resp.answered_at > window:
                    continue
                person: Person = people[inv.person_id]
                return _Open(
                    invitation_id=inv.id,
                    person_id=inv.person_id,
                    name=person.name,
                    language=inv.language,
                    campaign_name=inv.campaign,
                    campaign=campaign,
                    kind=hub.config.surveys[campaign.survey].kind,
                    answered=resp is not None,
                    comment=resp.comment if resp is not None else None,
                    state=inv.conversation,
                )
        return None

    async def _say(self, channel: str, sender: str, found: _Open, message: str) -> Delivery | None:
        """Text the person back through the channel they wrote on; a failure loses only this prompt."""
        instance = self.hub.channels.get(channel)
        if instance is None:
            return None
        email = normalise_email(sender)
        reply = ReplyMessage(
            invitation_id=found.invitation_id,
            campaign=found.campaign_name,
            recipient=Recipient(
                name=found.name,
                email=email,
                phone=None if email else sender,
                language=found.language,
            ),
            language=found.language,
            text=message,
        )
        try:
            return await with_retries(lambda: instance.send(reply), attempts=3)
        except HubError as exc:
            log.warning("inbound.reply_failed", channel=channel, error=str(exc))
        except Exception:  # a channel's bug must not lose the answer that was just stored
            log.exception("inbound.reply_failed", channel=channel)
        return None

    async def _set_state(
        self, invitation_id: int, state: str, hold: str | None = None, campaign: Campaign | None = None
    ) -> None:
        """Move the conversation on; with ``hold`` (a response id) its queued write-backs wait for the reason.

        Typing a reason takes longer than the prompt sync's debounce: without the wait a texted score would
        reach the CRM alone and again with its reason. The reason re-arms the items (due at once); without
        one they are written when the wait ends.
        """
        async with self.hub.store.session() as s:
            await s.execute(
                update(Invitation).where(Invitation.id == invitation_id).values(conversation=state)
            )
            if hold is not None and campaign is not None:
                until = self.hub.now() + timedelta(minutes=campaign.comment_wait_minutes)
                await s.execute(
                    update(WriteBack)
                    .where(WriteBack.response_id == hold, WriteBack.state == "queued")
                    .values(next_attempt_at=until)
                )

    async def _seen(self, channel: str, answer: InboundAnswer) -> bool:
        """Whether the provider delivered this reply before (it retries until it gets a 2xx)."""
        if not answer.message_id:
            return False
        async with self.hub.store.session() as s:
            return bool(
                await s.scalar(
                    select(
                        exists().where(
                            InboundMessage.channel == channel, InboundMessage.message_id == answer.message_id
                        )
                    )
                )
            )

    async def _keep(
        self,
        channel: str,
        answer: InboundAnswer,
        outcome: str,
        found: _Open | None = None,
        reason: str | None = None,
    ) -> None:
        try:
            async with self.hub.store.session() as s:
                s.add(
                    InboundMessage(
                        channel=channel,
                        sender=answer.sender,
                        text=answer.text,
                        received_at=answer.received_at,
                        message_id=answer.message_id,
                        outcome=outcome,
                        reason=reason,
                        invitation_id=found.invitation_id if found else None,
                        person_id=found.person_id if found else None,
                    )
                )
        except IntegrityError:  # the same reply, delivered twice at once: kept by the other request
            log.info("inbound.repeated", channel=channel)
