"""The text of each message, fitted into one SMS segment where the language allows.

A survey text says who asks (the company name), the question, and either how to answer by reply (reply mode:
``SurveyMessage.reply_instructions``) or the survey link (link mode). When that takes more than one segment,
the intro goes first, then the question is shortened, never the instructions or the link: without them the
text cannot be answered. A language whose letters are outside GSM-7 (an UCS-2 text holds 70 characters)
may still need two segments; ``describe`` says so, for ``cxhub check``.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub import AlertMessage, OutboundMessage, ReplyMessage, SurveyMessage
from hub_sms.segments import SINGLE, Segments, count, plain_punctuation, truncate_to_fit

#: a question shortened below this many characters says too little to be worth it: the text is sent whole
MIN_QUESTION = 24


@dataclass(frozen=True)
class Text:
    """A message's body and what it costs in segments; ``fitted`` says what was left out to fit."""

    body: str
    segments: Segments
    fitted: str = ""


def _join(*parts: str) -> str:
    return " ".join(p.strip() for p in parts if p and p.strip())


def survey_text(message: SurveyMessage) -> Text:
    """The invitation (or reminder): one segment if it can be, the answer's way always kept whole."""
    prefix = f"{plain_punctuation(message.branding.company_name).strip()}:"
    intro = plain_punctuation(message.intro)
    question = plain_punctuation(message.question)
    answer_by = plain_punctuation(message.reply_instructions) or message.survey_url
    whole = _join(prefix, intro, question, answer_by)
    if count(whole).count == 1:
        return Text(whole, count(whole))
    without_intro = _join(prefix, question, answer_by)
    segments = count(without_intro)
    if segments.count == 1:
        return Text(without_intro, segments, "intro left out")
    fixed = count(_join(prefix, answer_by)).units + 2  # the spaces either side of the question
    room = SINGLE[segments.encoding] - fixed
    shortened = truncate_to_fit(question, room, segments.encoding)
    if room >= MIN_QUESTION and len(shortened) >= MIN_QUESTION:
        body = _join(prefix, shortened, answer_by)
        return Text(body, count(body), "intro left out, question shortened")
    return Text(without_intro, segments, "intro left out")


def message_text(message: OutboundMessage) -> Text:
    """The body of any message the hub hands the channel."""
    if isinstance(message, SurveyMessage):
        return survey_text(message)
    if isinstance(message, AlertMessage):
        body = _join(plain_punctuation(message.text), message.link or "")
    elif isinstance(message, ReplyMessage):
        body = plain_punctuation(message.text).strip()
    else:  # pragma: no cover - the union is closed; a new kind must be added here
        raise TypeError(f"the SMS channel cannot send a {type(message).__name__}")
    return Text(body, count(body))


def describe(message: SurveyMessage) -> list[str]:
    """Warnings about a campaign's text, for ``cxhub check``: empty when it fits one segment."""
    text = survey_text(message)
    if text.segments.count == 1:
        return []
    mode = "reply" if message.reply_instructions else "link"
    return [
        f"the {message.language} SMS of campaign {message.campaign} ({mode} mode) takes "
        f"{text.segments.count} segments even with the intro left out ({text.segments.encoding}, "
        f"{text.segments.units} units, {SINGLE[text.segments.encoding]} fit in one): each segment is billed"
    ]
