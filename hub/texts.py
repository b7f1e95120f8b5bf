"""Built-in survey texts per language, and the choice of language for one person.

A survey's own texts (``[surveys.<name>].question``) win over these. Languages missing here fall back to
English. Keys are short names; ``{company}`` is replaced by the configured company name.
"""

from __future__ import annotations

from hub.models import NpsCategory, SurveyKind

ENGLISH: dict[str, str] = {
    "subject": "How did we do, {company}?",
    "intro": "Thank you for contacting {company}. One quick question:",
    "question.nps": "How likely are you to recommend {company} to a friend or colleague?",
    "question.csat": "How satisfied are you with the help you received?",
    "question.ces": "How easy was it to get your issue resolved?",
    "question.smiley": "How was your experience with us?",
    "low.nps": "Not likely",
    "high.nps": "Very likely",
    "low.csat": "Very unsatisfied",
    "high.csat": "Very satisfied",
    "low.ces": "Very difficult",
    "high.ces": "Very easy",
    "low.smiley": "Bad",
    "high.smiley": "Good",
    "followup.promoter": "What is the main reason for your score?",
    "followup.passive": "What would make it a 10?",
    "followup.detractor": "What could we do better?",
    "followup.other": "Would you like to tell us more?",
    "topic": "What was it mostly about?",
    "submit": "Send",
    "thanks": "Thank you for your answer!",
    "thanks.more": "Your feedback helps us get better.",
    "unsubscribe": "Don't want these surveys? Unsubscribe",
    "unsubscribed": "You will not receive more surveys from us.",
    "expired": "This survey has expired. Thank you for your interest.",
    "closed": "This survey is closed. Thank you, we already have your answer.",
    "reminder.subject": "A quick reminder: how did we do, {company}?",
    "alert.subject": "{category} feedback from {person}: {rating}",
    "out_of_range": "Please choose a value from {low} to {high}.",
    "unknown": "This survey link is not valid. Please check that you opened the whole link.",
    "csrf": "This page has expired. Please reload it and try again.",
    "comment": "Your comment (optional)",
    "unsubscribe.confirm": "Stop receiving surveys from us?",
    "unsubscribe.button": "Unsubscribe",
    "skip": "Skip",
}

DANISH: dict[str, str] = {
    "subject": "Hvordan klarede vi os, {company}?",
    "intro": "Tak fordi du kontaktede {company}. Et hurtigt spørgsmål:",
    "question.nps": "Hvor sandsynligt er det, at du vil anbefale {company} til en ven eller kollega?",
    "low.nps": "Slet ikke sandsynligt",
    "high.nps": "Meget sandsynligt",
    "followup.promoter": "Hvad er den vigtigste grund til din score?",
    "followup.passive": "Hvad skulle der til for at give en 10'er?",
    "followup.detractor": "Hvad kunne vi gøre bedre?",
    "submit": "Send",
    "thanks": "Tak for dit svar!",
    "unsubscribe": "Ønsker du ikke disse undersøgelser? Afmeld",
    "expired": "Denne undersøgelse er udløbet. Tak for din interesse.",
    "closed": "Denne undersøgelse er lukket. Tak, vi har allerede dit svar.",
}

CATALOG: dict[str, dict[str, str]] = {"en": ENGLISH, "da": DANISH}


def base_language(code: str | None) -> str | None:
    """``"da-DK"`` / ``"da_DK"`` -> ``"da"``; None stays None."""
    if not code:
        return None
    return code.replace("_", "-").split("-")[0].lower() or None


def choose_language(person_language: str | None, default: str) -> str:
    """The person's CRM language when the hub has texts for it, else the campaign's default."""
    lang = base_language(person_language)
    if lang in CATALOG:
        return lang
    return base_language(default) or "en"


def text(language: str, key: str, **values: object) -> str:
    """One built-in text in ``language`` (falling back to English), with ``{placeholders}`` filled."""
    template = CATALOG.get(language, ENGLISH).get(key) or ENGLISH[key]
    return template.format(**values) if values else template


def followup_key(kind: SurveyKind, category: NpsCategory | None) -> str:
    if kind is SurveyKind.NPS and category is not None:
        return f"followup.{category.value}"
    return "followup.other"
